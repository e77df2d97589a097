"""`hftl compare CONFIG --strategies ... [--models M1,M2]`: strategies (x models) on one split and budget, one report.

Example:
    $ hftl compare configs/text/bert-full.yaml --strategies scratch,head_only,lora,full data.train=reviews.csv
"""

from __future__ import annotations

import argparse
from typing import Any

from hftl.cli.common import print_study

HELP = "several strategies on the same data, split and budget; one report"


def add_parser(sub: Any) -> None:
    p = sub.add_parser("compare", help=HELP, description=HELP)
    p.add_argument("config", help="YAML config of the study (its strategy is replaced per run)")
    p.add_argument(
        "overrides", nargs="*", help="key=value for every run, or STRATEGY:key=value for one (lora:train.learning_rate=1e-3)"
    )
    p.add_argument("--strategies", default="scratch,head_only,freeze,lora,full", help="comma-separated (also: hybrid)")
    p.add_argument("--seeds", type=int, default=1, help="repeat with this many seeds (mean ± std in the report)")
    p.add_argument(
        "--models", default=None, help="a model study: comma-separated checkpoints (paths, Hub ids, builtin:NAME), x strategies"
    )
    p.add_argument(
        "--adapt",
        default=None,
        help="an adaptation study: comma-separated adapt.method values (none,adabn,coral,dann,self_training,pretrain), "
        "x strategies; needs data.target, and data.target_test for the headline",
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> None:
    from hftl.studies.compare import compare

    study = compare(
        args.config, args.strategies, seeds=args.seeds, overrides=args.overrides, models=args.models, adapt=args.adapt
    )
    print_study(study)
