"""`hftl predict RUN INPUT...` (labels and scores printed) and `hftl predict RUN --data SOURCE --output FILE`.

Example:
    $ hftl predict runs/vit-lora cat.png dog.jpg
    $ hftl predict runs/bert-full "a wonderful film" "dull and far too long"
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from hftl.cli.common import is_main_process
from hftl.utils.errors import HftlError

HELP = "predictions for input files or texts"


def add_parser(sub: Any) -> None:
    p = sub.add_parser("predict", help=HELP, description=HELP)
    p.add_argument("run_dir")
    p.add_argument("inputs", nargs="*", help="image or audio files, or texts (quote each text)")
    p.add_argument("--data", default=None, help="a whole data set instead: folder, csv/jsonl/parquet file or Hub id")
    p.add_argument("--output", default="predictions.csv", help="with --data: .csv, .jsonl or .parquet (default predictions.csv)")
    p.add_argument("--batch-size", type=int, default=None, help="with --data: inputs per pipeline call (default 32)")
    p.add_argument("--data-config", default=None, help="with --data: a Hub dataset's config (subset)")
    p.add_argument("--revision", default=None, help="with --data: a Hub dataset's branch, tag or commit")
    p.add_argument("--split", default=None, help="with --data: split or slice (default: test, else validation)")
    p.add_argument(
        "--top-k", type=int, default=None, help="best k labels (default: 1; multi-label: every label); not for regression"
    )
    p.add_argument("--json", action="store_true", help="print JSON")
    p.add_argument("--onnx", action="store_true", help="run the exported ONNX graph (RUN/onnx, see hftl export) on onnxruntime")
    p.add_argument("--onnx-path", default=None, help="another exported graph: its folder or .onnx file (implies --onnx)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> None:
    from hftl.runs.inference import predict

    if args.data is not None:
        _predict_file(args)
        return
    if not args.inputs:
        raise HftlError("hftl predict needs inputs (files or texts) or --data SOURCE --output FILE")
    onnx = args.onnx_path or (args.run_dir if args.onnx else None)
    outputs = predict(args.run_dir, args.inputs, top_k=args.top_k, onnx=onnx)
    if args.json:
        print(json.dumps([{"input": i, "predictions": o} for i, o in zip(args.inputs, outputs)], indent=2))
        return
    for item, preds in zip(args.inputs, outputs):
        print(f"{item}: " + (", ".join(format_prediction(p) for p in preds) or "(nothing found)"))


def _predict_file(args: argparse.Namespace) -> None:
    from hftl.data.dataset_repos import RepoOptions
    from hftl.runs.batch_predict import predict_file

    if args.inputs:
        raise HftlError("pass inputs or --data, not both")
    if args.onnx or args.onnx_path:
        raise HftlError("--onnx predicts given inputs; with --data, leave it out (the file is written with PyTorch)")
    out = predict_file(
        args.run_dir, args.data, Path(args.output), args.batch_size or 32, args.top_k,
        RepoOptions(args.data_config, args.revision), args.split,
    )  # fmt: skip
    if is_main_process():
        print(f"predictions: {out}")


def format_prediction(p: dict) -> str:
    """One pipeline output as text: a label, an entity, or a transcript.

    Example:
        >>> format_prediction({"label": "positive", "score": 0.9731})
        'positive (0.973)'
    """
    if "entity_group" in p:
        return f"{p['word']} [{p['entity_group']}] ({p['score']:.3f})"
    if "text" in p:
        return repr(p["text"])
    if "value" in p:  # regression
        return f"{p['label']} = {p['value']:.4g}"
    mark = {True: " [yes]", False: " [no]"}.get(p.get("predicted"), "")  # multi-label: over the run's threshold
    return f"{p['label']} ({p['score']:.3f}){mark}"
