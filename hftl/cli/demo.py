"""`hftl demo [--task text|image|speech]`: the main job, an offline strategy study on a real checkpoint and data set.

Example:
    $ hftl demo
    $ hftl demo --task image --epochs 1
    $ hftl demo --task speech
"""

from __future__ import annotations

import argparse
from typing import Any

from hftl.cli.common import print_study

HELP = "an offline strategy study on a real checkpoint and data set"


def add_parser(sub: Any) -> None:
    p = sub.add_parser("demo", help=HELP, description=HELP)
    p.add_argument("overrides", nargs="*", help="key=value or STRATEGY:key=value, as for compare")
    p.add_argument(
        "--task",
        default="text",
        choices=["text", "image", "speech", "audio"],
        help="text: MiniLM on VADER words (default); image: Lite0 on digits; speech (or audio): Whisper base on spoken "
        "digits and a held-out accent",
    )
    p.add_argument("--strategies", default="scratch,head_only,freeze,lora,full")
    p.add_argument("--epochs", type=int, default=None, help="epochs per run (default 2)")
    p.add_argument("--max-train-samples", type=int, default=None, help="train on a subset: shorter")
    p.add_argument("--seeds", type=int, default=1)
    p.add_argument("--output-dir", default=None, help="study folder (default runs/demo-<task>)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> None:
    from hftl.studies.demo import check_installed

    check_installed(args.task)  # before the heavy imports
    from hftl.studies.demo import run_demo

    study = run_demo(
        args.task, args.strategies, epochs=args.epochs, max_train_samples=args.max_train_samples,
        seeds=args.seeds, output_dir=args.output_dir, overrides=args.overrides,
    )  # fmt: skip
    print_study(study)
