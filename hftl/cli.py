"""The `hftl` command (also `python -m hftl`): train, evaluate, predict, compare, probe, search, demo, push, cache.

Example:
    $ hftl train configs/vision/vit-lora.yaml data.train=digits/ output_dir=runs/vit-lora
    $ hftl predict runs/vit-lora cat.png dog.jpg
    $ hftl predict runs/bert-full "a wonderful film" "dull and far too long"
    $ hftl compare configs/text/bert-full.yaml --strategies scratch,head_only,lora,full data.train=reviews.csv
    $ hftl demo
    $ hftl push runs/vit-lora --repo-id me/vit-lora-digits --private
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

from hftl.errors import HftlError


def _is_main_process() -> bool:
    from accelerate import PartialState

    return PartialState().is_main_process


def _train(args: argparse.Namespace) -> None:
    from hftl.config import load_config

    cfg = load_config(args.config, args.overrides)  # before the heavy imports: config errors answer at once
    from hftl.api import run

    result = run(cfg)
    if _is_main_process():  # one summary under torchrun / accelerate launch
        print(json.dumps({"output_dir": str(result.output_dir), "best_epoch": result.best_epoch, **result.metrics}, indent=2))


def _evaluate(args: argparse.Namespace) -> None:
    from hftl.inference import evaluate_run

    metrics = evaluate_run(args.run_dir, args.data, args.batch_size, args.data_config, args.revision, args.split)
    if _is_main_process():
        print(json.dumps(metrics, indent=2))


def _predict(args: argparse.Namespace) -> None:
    from hftl.inference import predict

    if args.data is not None:
        _predict_file(args)
        return
    if not args.inputs:
        raise HftlError("hftl predict needs inputs (files or texts) or --data SOURCE --output FILE")
    outputs = predict(args.run_dir, args.inputs, top_k=args.top_k)
    if args.json:
        print(json.dumps([{"input": i, "predictions": o} for i, o in zip(args.inputs, outputs)], indent=2))
        return
    for item, preds in zip(args.inputs, outputs):
        print(f"{item}: " + (", ".join(format_prediction(p) for p in preds) or "(nothing found)"))


def _predict_file(args: argparse.Namespace) -> None:
    from hftl.batch_predict import predict_file
    from hftl.dataset_repos import RepoOptions

    if args.inputs:
        raise HftlError("pass inputs or --data, not both")
    out = predict_file(
        args.run_dir, args.data, Path(args.output), args.batch_size or 32, args.top_k,
        RepoOptions(args.data_config, args.revision), args.split,
    )  # fmt: skip
    if _is_main_process():
        print(f"predictions: {out}")


def format_prediction(p: dict) -> str:
    """One pipeline output as text: a label, an entity, or a transcript."""
    if "entity_group" in p:
        return f"{p['word']} [{p['entity_group']}] ({p['score']:.3f})"
    if "text" in p:
        return repr(p["text"])
    if "value" in p:  # regression
        return f"{p['label']} = {p['value']:.4g}"
    mark = {True: " [yes]", False: " [no]"}.get(p.get("predicted"), "")  # multi-label: over the run's threshold
    return f"{p['label']} ({p['score']:.3f}){mark}"


def _print_study(study) -> None:
    from hftl.report import format_table

    print("\n" + format_table(study))
    print(f"\nreport: {study.report_md}  (self-contained: {study.report_html})")
    failed = [r for r in study.runs if r.error]
    if failed:
        raise HftlError(f"{len(failed)} run(s) failed: " + "; ".join(f"{r.arm}: {r.error[:200]}" for r in failed))


def _compare(args: argparse.Namespace) -> None:
    from hftl.study import compare

    _print_study(compare(args.config, args.strategies, seeds=args.seeds, overrides=args.overrides, models=args.models))


def _probe(args: argparse.Namespace) -> None:
    from hftl.probe_report import ranking_table
    from hftl.transferability import probe

    result = probe(args.config, args.models, overrides=args.overrides, study=args.study, rank_by=args.rank_by)
    header, rows = ranking_table(result)
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(header)]
    print("\n" + "  ".join(h.ljust(w) for h, w in zip(header, widths)))
    print("\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths)) for r in rows))
    for rank_key, tau in result.kendall_tau.items():
        print(f"Kendall tau ({rank_key} vs fine-tuned): {tau:+.2f}")
    print(f"\nreport: {result.report_md}  (self-contained: {result.report_html}); scores: {result.output_dir / 'probe.json'}")


def _search(args: argparse.Namespace) -> None:
    from hftl.tuning import search

    result = search(args.config, args.trials, space=args.space, storage=args.storage, study_name=args.study_name,
                    overrides=args.overrides)  # fmt: skip
    print(f"\nreport: {result.report_md}  (self-contained: {result.report_html}); trials: {result.output_dir / 'search.json'}")
    if result.best_yaml is None:
        raise HftlError("no trial finished; see the trials above (search.json has each one's state)")


def _demo(args: argparse.Namespace) -> None:
    from hftl.demo import check_installed

    check_installed(args.task)  # before the heavy imports
    from hftl.demo import run_demo

    study = run_demo(
        args.task, args.strategies, epochs=args.epochs, max_train_samples=args.max_train_samples,
        seeds=args.seeds, output_dir=args.output_dir, overrides=args.overrides,
    )  # fmt: skip
    _print_study(study)


def _push(args: argparse.Namespace) -> None:
    from hftl.hub import push_run

    url = push_run(args.run_dir, args.repo_id, private=args.private, adapter_only=args.adapter_only, endpoint=args.endpoint)
    print(f"pushed {args.run_dir} to {args.repo_id}: {url}")


def _cache(args: argparse.Namespace) -> None:
    from hftl.cache_folder import entries, format_entries, prune
    from hftl.feature_cache import default_cache_dir

    root = Path(args.dir).expanduser() if args.dir else default_cache_dir()
    if args.action == "list":
        print(format_entries(entries(root), root))
        return
    # clear: everything, or down to --max-gb; by hand, so entries in use a moment ago go too.
    cap = int(args.max_gb * 2**30) if args.max_gb is not None else 0
    removed = prune(root, cap, min_idle_seconds=0.0)
    freed = sum(e.size_bytes for e in removed)
    left = entries(root)
    print(f"removed {len(removed)} entries ({freed / 2**30:.2f} GB); {len(left)} left in {root}")


def _add_study_commands(sub: Any) -> None:
    """compare, probe and search: the commands that run or read several models and runs."""
    p = sub.add_parser("compare", help="several strategies on the same data, split and budget; one report")
    p.add_argument("config", help="YAML config of the study (its strategy is replaced per run)")
    p.add_argument(
        "overrides", nargs="*", help="key=value for every run, or STRATEGY:key=value for one (lora:train.learning_rate=1e-3)"
    )
    p.add_argument("--strategies", default="scratch,head_only,freeze,lora,full", help="comma-separated (also: hybrid)")
    p.add_argument("--seeds", type=int, default=1, help="repeat with this many seeds (mean ± std in the report)")
    p.add_argument(
        "--models", default=None, help="a model study: comma-separated checkpoints (paths, Hub ids, builtin:NAME), x strategies"
    )
    p.set_defaults(func=_compare)

    p = sub.add_parser("probe", help="which model and which block transfer: frozen features scored, no fine-tuning")
    p.add_argument("config", help="YAML config with the data (its model is replaced by each of --models)")
    p.add_argument("overrides", nargs="*", help="key=value, e.g. data.train=PATH output_dir=runs/probe")
    p.add_argument("--models", required=True, help="comma-separated checkpoints (paths, Hub ids, builtin:NAME)")
    p.add_argument("--study", default=None, help="a `hftl compare --models` folder: Kendall tau against its fine-tuned ranking")
    p.add_argument("--rank-by", default="logme", choices=["logme", "linear"], help="the score models are ranked by")
    p.set_defaults(func=_probe)

    p = sub.add_parser("search", help="hyperparameter search on Optuna (TPE, pruning); best.yaml for hftl train")
    p.add_argument("config", help="YAML config to search around (its strategy picks the default space)")
    p.add_argument("overrides", nargs="*", help="key=value, e.g. data.train=PATH output_dir=runs/search epochs=3")
    p.add_argument("--trials", type=int, required=True, help="finished trials the study should hold (all processes together)")
    p.add_argument("--space", default=None, help="YAML of config key -> {type: float|int|categorical, low, high, log, choices}")
    p.add_argument("--storage", default=None, help="Optuna storage URL shared by processes (default sqlite in output_dir)")
    p.add_argument("--study-name", default=None, help="the study's name in the storage (default: output_dir's name)")
    p.set_defaults(func=_search)


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
    p.add_argument("--data-config", default=None, help="Hub dataset: the config (subset), e.g. sst2 of glue")
    p.add_argument("--revision", default=None, help="Hub dataset: branch, tag or commit")
    p.add_argument("--split", default=None, help="split or slice (default: test, else validation), e.g. validation[:50%%]")
    p.set_defaults(func=_evaluate)

    p = sub.add_parser("predict", help="predictions for input files or texts")
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
    p.set_defaults(func=_predict)

    p = sub.add_parser("push", help="upload a finished run (model, card, metrics) to the Hugging Face Hub")
    p.add_argument("run_dir")
    p.add_argument("--repo-id", required=True, help="OWNER/NAME; created if missing")
    p.add_argument("--private", action="store_true", help="create the repo private")
    p.add_argument("--adapter-only", action="store_true", help="LoRA runs: push adapter/ (load with peft on the base)")
    p.add_argument("--endpoint", default=None, help="Hub URL (default: HF_ENDPOINT or huggingface.co)")
    p.set_defaults(func=_push)

    _add_study_commands(sub)

    p = sub.add_parser("cache", help="list or clear the feature cache (frozen-prefix features reused across runs)")
    p.add_argument("action", choices=["list", "clear"])
    p.add_argument("--dir", default=None, help="cache folder (default: $HFTL_FEATURE_CACHE or ~/.cache/hftl/features)")
    p.add_argument("--max-gb", type=float, default=None, help="clear: only least recently used entries, down to this size")
    p.set_defaults(func=_cache)

    p = sub.add_parser("demo", help="an offline strategy study on a real checkpoint and data set")
    p.add_argument("overrides", nargs="*", help="key=value or STRATEGY:key=value, as for compare")
    p.add_argument("--task", default="text", choices=["text", "image", "audio"], help="text: MiniLM on VADER words (default)")
    p.add_argument("--strategies", default="scratch,head_only,freeze,lora,full")
    p.add_argument("--epochs", type=int, default=None, help="epochs per run (default 2)")
    p.add_argument("--max-train-samples", type=int, default=None, help="train on a subset: shorter")
    p.add_argument("--seeds", type=int, default=1)
    p.add_argument("--output-dir", default=None, help="study folder (default runs/demo-<task>)")
    p.set_defaults(func=_demo)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    # `key=value` overrides may come after options (`--strategies a,b epochs=2`): argparse leaves those over.
    if extra and hasattr(args, "overrides") and all("=" in e and not e.startswith("-") for e in extra):
        args.overrides = [*args.overrides, *extra]
    elif extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    try:
        args.func(args)
    except HftlError as e:
        if args.debug or os.environ.get("HFTL_DEBUG"):
            raise
        print(f"hftl: error: {e}", file=sys.stderr)
        return getattr(e, "exit_code", 2)  # 128 + the signal for a run stopped by SIGTERM / SIGINT
    except KeyboardInterrupt:
        print("hftl: interrupted; resume with resume=true", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
