"""Fine-tune an image classifier from a YAML config, one visible step at a time.

    python scripts/train_image.py configs/vision/vit-lora.yaml data.train=digits/ output_dir=runs/vit-lora
    python scripts/train_image.py configs/vision/digits-lite0-head-only.yaml output_dir=runs/digits epochs=1

This is the run `hftl train` performs, written out as the library calls it is made of, in order, so
you can read it top to bottom and change one step (another model, an extra log line, a different
collator) without touching the others. Overrides are the same `key=value` pairs `hftl train` takes.
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

TASK = "image-classification"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("config", help="YAML config, e.g. configs/vision/vit-lora.yaml")
    parser.add_argument("overrides", nargs="*", help="key=value overrides, e.g. data.train=PATH train.epochs=3 strategy=lora")
    return parser.parse_args(argv)


def train(cfg: Config) -> TrainResult:
    """Run one image-classification fine-tuning as `cfg` says; returns the best epoch's metrics and history."""
    run_dir = Path(cfg.output_dir)

    # 1. `builtin:` sources (the offline EfficientNet-Lite0, the digits set) become local folders.
    resolve_builtins(cfg)

    # 2. Data first: its labels decide the size of the new head. Unreadable images are skipped and
    #    counted (or refused with data.on_bad_file=error); without data.validation a stratified
    #    validation split is held out of train.
    set_seed(cfg.train.seed)
    modality = get_modality(cfg.task, cfg)
    splits = load_splits(cfg.data, modality, cfg.train.seed)

    # 3. The model: pretrained backbone with a new head sized to the labels (random weights for
    #    scratch), its layer map (embeddings -> blocks -> head), LoRA adapters for lora, and the plan:
    #    which parameters train in which epochs. Re-seed so the head's init does not depend on how
    #    much randomness data loading drew.
    set_seed(cfg.train.seed)
    model, processor, layer_map, plan = setup_model(cfg, modality, splits.labels)

    # 4. The run folder, claimed only once data and model loaded: a finished run is never
    #    overwritten unless overwrite=true; resume=true continues an unfinished one (and checks the
    #    config did not change).
    with run_lock(run_dir):  # one writer: another process on this folder is refused while this one lives
        if not prepare_run_dir(cfg, run_dir):
            cfg.resume = False
        # Accelerate owns devices, processes and mixed precision. A hybrid run toggles requires_grad
        # between phases, which DDP must be told about, hence the multi-phase flag.
        accelerator = make_accelerator(cfg, run_dir, multi_phase=cfg.strategy.head_warmup_epochs > 0)
        if accelerator.is_main_process:
            cfg.save(run_dir / "config.yaml")
        if splits.report.total():
            accelerator.print(splits.report.summary())

        # 5. Torch datasets over the splits (augmentation on train only) and the batch collator, which
        #    runs the checkpoint's own image processor.
        data = setup_data(cfg, modality, processor, splits)

        # 6. Train: prints what trains per part, then epochs with validation, keeps the best epoch by
        #    train.metric_for_best, writes resumable checkpoints to run_dir/checkpoints.
        result = fit(cfg, model, layer_map, plan, data, run_dir, accelerator)

        # 7. Export from the main process only: model/ (LoRA merged, adapter/ beside it), the model card,
        #    and metrics.json last, because its presence marks the run as finished.
        finish_run(cfg, accelerator, splits, model, processor, layer_map, plan, result)
        return result


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        cfg = load_config(args.config, args.overrides)
        if cfg.task != TASK:
            raise HftlError(
                f"{args.config} has task: {cfg.task}, but this script trains {TASK} only. "
                f"Use the script for {cfg.task} in scripts/, or `hftl train {args.config}`"
            )
        result = train(cfg)
    except HftlError as e:
        print(f"train_image.py: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("train_image.py: interrupted; continue with the same command and resume=true", file=sys.stderr)
        return 130
    if PartialState().is_main_process:  # one summary, also under `accelerate launch`
        print(json.dumps({"output_dir": cfg.output_dir, "best_epoch": result.best_epoch, **result.best_metrics}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
