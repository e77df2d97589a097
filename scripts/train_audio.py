"""Fine-tune a speech model (audio classification or CTC speech recognition) from a YAML config, one visible step at a time.

    python scripts/train_audio.py configs/audio/wav2vec2-full.yaml data.train=keywords/ output_dir=runs/kws
    python scripts/train_audio.py configs/audio/wav2vec2-ctc-full.yaml data.train=speech.csv output_dir=runs/asr

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
from hftl.runs.finetune import finish_run, setup_data
from hftl.training.trainer import TrainResult, fit, make_accelerator
from hftl.utils.errors import HftlError

TASKS = ("audio-classification", "speech-recognition")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("config", help="YAML config, e.g. configs/audio/wav2vec2-lora.yaml")
    parser.add_argument("overrides", nargs="*", help="key=value overrides, e.g. data.train=PATH train.epochs=3 strategy=lora")
    return parser.parse_args(argv)


def train(cfg: Config) -> TrainResult:
    """Run one speech fine-tuning as `cfg` says; returns the best epoch's metrics and history."""
    run_dir = Path(cfg.output_dir)

    # 1. Data first: its labels decide the size of the new head (for speech recognition, the character
    #    vocabulary of the training transcripts becomes the tokenizer). Clips are decoded with
    #    soundfile and resampled to the feature extractor's rate; unreadable, empty or silent clips and
    #    empty transcripts are skipped and counted (or refused with data.on_bad_file=error).
    set_seed(cfg.train.seed)
    modality = get_modality(cfg.task, cfg)
    splits = load_splits(cfg.data, modality, cfg.train.seed)

    # 2. The model: pretrained encoder with a new head (classifier, or CTC head over the vocabulary),
    #    its layer map, LoRA adapters for lora, and the plan: which parameters train in which epochs.
    #    The convolutional feature encoder stays frozen in every phase unless the strategy is scratch
    #    or strategy.freeze_feature_encoder=false.
    set_seed(cfg.train.seed)
    model, processor, layer_map, plan = setup_model(cfg, modality, splits.labels)

    # 3. The run folder, claimed only once data and model loaded (resume=true continues an unfinished
    #    run, overwrite=true replaces a finished one). Accelerate owns devices and precision; a hybrid
    #    run toggles requires_grad between phases, which DDP must be told about.
    with run_lock(run_dir):  # one writer: another process on this folder is refused while this one lives
        if not prepare_run_dir(cfg, run_dir):
            cfg.resume = False
        accelerator = make_accelerator(cfg, run_dir, multi_phase=cfg.strategy.head_warmup_epochs > 0)
        if accelerator.is_main_process:
            cfg.save(run_dir / "config.yaml")
        if splits.report.total():
            accelerator.print(splits.report.summary())

        # 4. Torch datasets (train-time shift/crop, gain and noise when data.augment), batches padded per
        #    batch by the checkpoint's feature extractor with attention masks, and the task's evaluator:
        #    accuracy/F1, or greedy CTC decoding scored by word and character error rate.
        data = setup_data(cfg, modality, processor, splits)

        # 5. Train: prints what trains per part, then epochs with validation, keeps the best epoch by
        #    train.metric_for_best (f1, or wer for speech recognition), writes resumable checkpoints.
        result = fit(cfg, model, layer_map, plan, data, run_dir, accelerator)

        # 6. Export: model/ with the feature extractor (and tokenizer) for transformers.pipeline, LoRA
        #    merged with adapter/ beside it, the model card, and metrics.json last.
        finish_run(cfg, accelerator, splits, model, processor, layer_map, plan, result)
        return result


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        cfg = load_config(args.config, args.overrides)
        if cfg.task not in TASKS:
            raise HftlError(
                f"{args.config} has task: {cfg.task}, but this script trains {' or '.join(TASKS)} only. "
                f"Use the script for {cfg.task} in scripts/, or `hftl train {args.config}`"
            )
        result = train(cfg)
    except HftlError as e:
        print(f"train_audio.py: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("train_audio.py: interrupted; continue with the same command and resume=true", file=sys.stderr)
        return 130
    if PartialState().is_main_process:  # one summary, also under `accelerate launch`
        print(json.dumps({"output_dir": cfg.output_dir, "best_epoch": result.best_epoch, **result.best_metrics}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
