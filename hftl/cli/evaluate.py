"""`hftl evaluate RUN --data SOURCE`: metrics of a finished run on other labelled data.

Example:
    $ hftl evaluate runs/vit-lora --data digits-test/
"""

from __future__ import annotations

import argparse
import json
from typing import Any

from hftl.cli.common import is_main_process

HELP = "metrics of a finished run on other labelled data"


def add_parser(sub: Any) -> None:
    p = sub.add_parser("evaluate", help=HELP, description=HELP)
    p.add_argument("run_dir")
    p.add_argument("--data", required=True, help="imagefolder, csv/jsonl/parquet file or Hub dataset id")
    p.add_argument("--batch-size", type=int, default=None)
    p.add_argument("--data-config", default=None, help="Hub dataset: the config (subset), e.g. sst2 of glue")
    p.add_argument("--revision", default=None, help="Hub dataset: branch, tag or commit")
    p.add_argument("--split", default=None, help="split or slice (default: test, else validation), e.g. validation[:50%%]")
    p.add_argument("--onnx", action="store_true", help="run the exported ONNX graph (RUN/onnx, see hftl export) on onnxruntime")
    p.add_argument("--onnx-path", default=None, help="another exported graph: its folder or .onnx file (implies --onnx)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> None:
    from hftl.runs.inference import evaluate_run

    onnx = args.onnx_path or (args.run_dir if args.onnx else None)
    metrics = evaluate_run(args.run_dir, args.data, args.batch_size, args.data_config, args.revision, args.split, onnx)
    if is_main_process():
        print(json.dumps(metrics, indent=2))
