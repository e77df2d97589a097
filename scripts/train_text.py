"""Fine-tune a text classifier or tagger (NER) from a YAML config, one visible step at a time.

    python scripts/train_text.py configs/text/bert-full.yaml data.train=reviews.csv output_dir=runs/bert-full
    python scripts/train_text.py configs/text/minilm-vader-head-only.yaml output_dir=runs/vader epochs=1
    python scripts/train_text.py configs/text/bert-ner-full.yaml data.train=ner.jsonl model=bert-base-cased

The run `hftl train` performs for `task: text-classification` and `task: token-classification`,
written out as the library calls it is made of, plus what a text user wants to see before training:
how the tokenizer cuts the first example, and how many texts `data.max_length` truncates.
Overrides are the same `key=value` pairs `hftl train` takes.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from accelerate import PartialState
from accelerate.utils import set_seed

from hftl.config import Config, load_config
from hftl.data.modalities import get_modality
from hftl.data.sources import load_splits
from hftl.models.loading import setup_model
from hftl.run_folder.layout import prepare_run_dir
from hftl.run_folder.lock import run_lock
from hftl.runs.finetune import finish_run, resolve_builtins, setup_data
from hftl.training.trainer import TrainResult, fit, make_accelerator
from hftl.utils.errors import HftlError

TASKS = ("text-classification", "token-classification")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("config", help="YAML config, e.g. configs/text/bert-lora.yaml")
    parser.add_argument("overrides", nargs="*", help="key=value overrides, e.g. data.train=PATH train.epochs=3 strategy=lora")
    return parser.parse_args(argv)


def describe_tokenization(cfg: Config, modality, tokenizer, splits, data) -> str:
    """The first training example as word pieces, and the share of texts max_length cuts (counted on the
    training split as `setup_data` tokenized it)."""
    column = splits.input_column
    first = splits.train[0][column]
    if cfg.task == "token-classification":
        encoded = tokenizer(first, is_split_into_words=True)
    elif isinstance(first, list):  # a text pair
        encoded = tokenizer(first[0], first[1])
    else:
        encoded = tokenizer(first)
    pieces = tokenizer.convert_ids_to_tokens(encoded["input_ids"])
    lengths = modality.lengths(data.train.ds, data.train.column, tokenizer) if cfg.task == "text-classification" else None
    limit = modality.max_length(tokenizer)
    shown = " ".join(pieces[:40]) + (" ..." if len(pieces) > 40 else "")
    lines = [f"first example: {first!r}", f"  -> {len(pieces)} tokens: {shown}"]
    if lengths:
        cut = sum(n >= limit for n in lengths)
        lines.append(f"max_length={limit}: {cut} of {len(lengths)} training texts are truncated")
    return "\n".join(lines)


def train(cfg: Config) -> TrainResult:
    """Run one text fine-tuning as `cfg` says; returns the best epoch's metrics and history."""
    run_dir = Path(cfg.output_dir)

    # 1. `builtin:` sources (all-MiniLM-L6-v2 from PyPI, the VADER word set) become local paths.
    resolve_builtins(cfg)

    # 2. Data first: its labels (or tags) decide the size of the new head. Empty texts are skipped
    #    and counted (data.on_bad_file=error refuses them); tags must match their words one to one.
    set_seed(cfg.train.seed)
    modality = get_modality(cfg.task, cfg)
    splits = load_splits(cfg.data, modality, cfg.train.seed)

    # 3. The model with a new head, the checkpoint's tokenizer, the layer map (embeddings -> encoder
    #    layers -> pooler -> head), LoRA on query/value for lora, and the phase plan.
    set_seed(cfg.train.seed)
    model, tokenizer, layer_map, plan = setup_model(cfg, modality, splits.labels)

    # 4. The run folder: a finished run is never overwritten unless overwrite=true.
    with run_lock(run_dir):  # one writer: another process on this folder is refused while this one lives
        if not prepare_run_dir(cfg, run_dir):
            cfg.resume = False
        accelerator = make_accelerator(cfg, run_dir, multi_phase=cfg.strategy.head_warmup_epochs > 0)
        if accelerator.is_main_process:
            cfg.save(run_dir / "config.yaml")
        if splits.report.total():
            accelerator.print(splits.report.summary())

        # 5. Datasets and the collator: every split tokenized once, padded per batch to its longest text;
        #    for tagging, each word's label on its first sub-token (-100 elsewhere).
        data = setup_data(cfg, modality, tokenizer, splits)
        if accelerator.is_main_process:
            print(describe_tokenization(cfg, modality, tokenizer, splits, data))

        # 6. Train with validation each epoch (accuracy/F1, or entity F1 for tagging), best epoch kept.
        result = fit(cfg, model, layer_map, plan, data, run_dir, accelerator)

        # 7. Export model/ with the tokenizer (pipeline-ready), the card, then metrics.json last.
        finish_run(cfg, accelerator, splits, model, tokenizer, layer_map, plan, result)
        return result


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        cfg = load_config(args.config, args.overrides)
        if cfg.task not in TASKS:
            raise HftlError(
                f"{args.config} has task: {cfg.task}, but this script trains {' and '.join(TASKS)}. "
                f"Use the script for {cfg.task} in scripts/, or `hftl train {args.config}`"
            )
        result = train(cfg)
    except HftlError as e:
        print(f"train_text.py: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("train_text.py: interrupted; continue with the same command and resume=true", file=sys.stderr)
        return 130
    if PartialState().is_main_process:
        print(json.dumps({"output_dir": cfg.output_dir, "best_epoch": result.best_epoch, **result.best_metrics}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
