"""`hftl search CONFIG --trials N`: hyperparameter search on Optuna (TPE, pruning); best.yaml for hftl train.

Example:
    $ hftl search configs/text/minilm-vader-head-only.yaml --trials 20 output_dir=runs/search
"""

from __future__ import annotations

import argparse
from typing import Any

from hftl.utils.errors import HftlError

HELP = "hyperparameter search on Optuna (TPE, pruning); best.yaml for hftl train"


def add_parser(sub: Any) -> None:
    p = sub.add_parser("search", help=HELP, description=HELP)
    p.add_argument("config", help="YAML config to search around (its strategy picks the default space)")
    p.add_argument("overrides", nargs="*", help="key=value, e.g. data.train=PATH output_dir=runs/search epochs=3")
    p.add_argument("--trials", type=int, required=True, help="finished trials the study should hold (all processes together)")
    p.add_argument("--space", default=None, help="YAML of config key -> {type: float|int|categorical, low, high, log, choices}")
    p.add_argument("--storage", default=None, help="Optuna storage URL shared by processes (default sqlite in output_dir)")
    p.add_argument("--study-name", default=None, help="the study's name in the storage (default: output_dir's name)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> None:
    from hftl.studies.search import search

    result = search(args.config, args.trials, space=args.space, storage=args.storage, study_name=args.study_name,
                    overrides=args.overrides)  # fmt: skip
    print(f"\nreport: {result.report_md}  (self-contained: {result.report_html}); trials: {result.output_dir / 'search.json'}")
    if result.best_yaml is None:
        raise HftlError("no trial finished; see the trials above (search.json has each one's state)")
