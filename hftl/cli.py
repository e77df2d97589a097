"""The `hftl` command: train, evaluate, predict.

Example:
    $ hftl train configs/vision/vit-lora.yaml data.train=digits/ output_dir=runs/vit-lora
    $ hftl predict runs/vit-lora cat.png dog.jpg
    $ hftl predict runs/bert-full "a wonderful film" "dull and far too long"
"""

from __future__ import annotations

import argparse
import json
import os
import sys

from hftl.errors import HftlError


def _train(args: argparse.Namespace) -> None:
    from hftl.config import load_config

    cfg = load_config(args.config, args.overrides)  # before the heavy imports: config errors answer at once
    from hftl.api import run

    result = run(cfg)
    print(json.dumps({"output_dir": str(result.output_dir), "best_epoch": result.best_epoch, **result.metrics}, indent=2))


def _evaluate(args: argparse.Namespace) -> None:
    from hftl.api import evaluate_run

    metrics = evaluate_run(args.run_dir, args.data, args.batch_size)
    print(json.dumps(metrics, indent=2))


def _predict(args: argparse.Namespace) -> None:
    from hftl.api import predict

    outputs = predict(args.run_dir, args.inputs, top_k=args.top_k)
    if args.json:
        print(json.dumps([{"input": i, "predictions": o} for i, o in zip(args.inputs, outputs)], indent=2))
        return
    for item, preds in zip(args.inputs, outputs):
        print(f"{item}: " + (", ".join(format_prediction(p) for p in preds) or "(nothing found)"))


def format_prediction(p: dict) -> str:
    """One pipeline output as text: a label, an entity, or a transcript."""
    if "entity_group" in p:
        return f"{p['word']} [{p['entity_group']}] ({p['score']:.3f})"
    if "text" in p:
        return repr(p["text"])
    return f"{p['label']} ({p['score']:.3f})"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="hftl", description="Transfer learning on the Hugging Face stack.")
    parser.add_argument("--debug", action="store_true", help="show full tracebacks for errors")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("train", help="fine-tune a checkpoint as a YAML config says")
    p.add_argument("config", help="YAML config, e.g. configs/vision/vit-full.yaml")
    p.add_argument("overrides", nargs="*", help="dotted key=value overrides, e.g. train.epochs=3 strategy.name=lora")
    p.set_defaults(func=_train)

    p = sub.add_parser("evaluate", help="metrics of a finished run on other labelled data")
    p.add_argument("run_dir")
    p.add_argument("--data", required=True, help="imagefolder, csv/jsonl/parquet file or Hub dataset id")
    p.add_argument("--batch-size", type=int, default=None)
    p.set_defaults(func=_evaluate)

    p = sub.add_parser("predict", help="predictions for input files or texts")
    p.add_argument("run_dir")
    p.add_argument("inputs", nargs="+", help="image or audio files, or texts (quote each text)")
    p.add_argument("--top-k", type=int, default=1)
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=_predict)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        args.func(args)
    except HftlError as e:
        if args.debug or os.environ.get("HFTL_DEBUG"):
            raise
        print(f"hftl: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("hftl: interrupted; resume with resume=true", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
