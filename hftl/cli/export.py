"""`hftl export RUN --format onnx [--quantize int8] [--output DIR]`: a finished run as an ONNX graph, proven
equal to its PyTorch model on the run's validation set before it is kept.

Example:
    $ hftl export runs/bert-full --format onnx
    $ hftl export runs/vit-lora --format onnx --quantize int8 --output runs/vit-lora/onnx-int8
    $ hftl predict runs/bert-full --onnx "a wonderful film"
"""

from __future__ import annotations

import argparse
from typing import Any

HELP = "a finished run as an ONNX graph for onnxruntime, checked against PyTorch"


def add_parser(sub: Any) -> None:
    p = sub.add_parser("export", help=HELP, description=HELP)
    p.add_argument("run_dir")
    p.add_argument("--format", default="onnx", choices=["onnx"], help="the artefact's format (default onnx)")
    p.add_argument("--quantize", default=None, choices=["int8"], help="int8: dynamic quantization; its metric change is reported")
    p.add_argument("--output", default=None, help="the folder to write (default RUN/onnx)")
    p.add_argument("--batch-size", type=int, default=None, help="batch size of the check on the validation set")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> None:
    from hftl.runs.onnx_export import export_onnx

    report = export_onnx(args.run_dir, args.output, args.quantize, args.batch_size)
    fp32 = report["fp32"]
    metric = report["metric"]
    print(
        f"ONNX graph equal to PyTorch on {report['validation_examples']} validation examples: logits differ by "
        f"{fp32['max_abs_logit_diff']:.2g} at most, labels agree on {fp32['label_agreement']:.1%}, "
        f"{metric} {fp32['metrics_onnx'][metric]:.4f}"
    )
    if "int8" in report:
        int8 = report["int8"]
        change = f"{int8['metrics_onnx'][metric]:.4f} ({int8['metric_change']:+.4f})"
        print(f"int8: {metric} {change}, labels agree on {int8['label_agreement']:.1%}")
    print(f"written: {report['output']}")
