"""`hftl compare CONFIG --strategies ... [--models M1,M2] [--folds K] [--train-sizes 50,100]`: a study's grid, one report.

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
    p.add_argument("--folds", type=int, default=None, help="K-fold cross-validation: every arm runs once per fold")
    p.add_argument(
        "--train-sizes",
        default=None,
        help="the label-budget curve: comma-separated numbers of training examples (nested stratified subsets), e.g. 50,100,300",
    )
    p.add_argument(
        "--storage",
        default=None,
        help="an Optuna storage URL (sqlite:///grid.db, postgresql+psycopg2://user@host/db) that several processes or "
        "machines share: each runs cells no one has taken",
    )
    p.add_argument("--study-name", default=None, help="the shared grid's name in --storage (default: output_dir's name)")
    p.add_argument("--report-only", action="store_true", help="write the report from the runs that have finished; train nothing")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> None:
    from hftl.studies.compare import compare

    study = compare(
        args.config, args.strategies, seeds=args.seeds, overrides=args.overrides, models=args.models, adapt=args.adapt,
        folds=args.folds, train_sizes=args.train_sizes, storage=args.storage, study_name=args.study_name,
        report_only=args.report_only,
    )  # fmt: skip
    print_study(study)
