"""`hftl train CONFIG [key=value ...]`: fine-tune a checkpoint as a YAML config says.

Example:
    $ hftl train configs/vision/vit-lora.yaml data.train=digits/ output_dir=runs/vit-lora
"""

from __future__ import annotations

import argparse
import json
from typing import Any

from hftl.cli.common import is_main_process

HELP = "fine-tune a checkpoint as a YAML config says"


def add_parser(sub: Any) -> None:
    p = sub.add_parser("train", help=HELP, description=HELP)
    p.add_argument("config", help="YAML config, e.g. configs/vision/vit-full.yaml")
    p.add_argument("overrides", nargs="*", help="dotted key=value overrides, e.g. train.epochs=3 strategy.name=lora")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> None:
    from hftl.config import load_config

    cfg = load_config(args.config, args.overrides)  # before the heavy imports: config errors answer at once
    from hftl.runs.finetune import run as run_config

    result = run_config(cfg)
    if is_main_process():  # one summary under torchrun / accelerate launch
        print(json.dumps({"output_dir": str(result.output_dir), "best_epoch": result.best_epoch, **result.metrics}, indent=2))
