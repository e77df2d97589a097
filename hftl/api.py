"""The Python API: `finetune`, `evaluate_run`, `predict`, and the setup steps the scripts reuse.

Example:
    >>> from hftl import finetune
    >>> result = finetune("configs/vision/vit-head-only.yaml", data={"train": "digits/"}, epochs=2)  # doctest: +SKIP
    >>> result.metrics["accuracy"], result.output_dir                                            # doctest: +SKIP
"""

from __future__ import annotations

import contextlib
import json
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from accelerate.utils import set_seed

from hftl.config import PIPELINE_TASKS, Config, best_metric_name, config_diff, load_config
from hftl.data import ExampleDataset, Splits, load_splits
from hftl.errors import ConfigError, DataError, HftlError
from hftl.export import METRICS_FILE, export_model, write_metrics, write_model_card
from hftl.layers import LayerMap, build_layer_map, describe, numel
from hftl.modalities import Modality, get_modality
from hftl.models import load_model
from hftl.sharding import check_launch, deepspeed_unprobed, is_deepspeed, is_sharded, model_state, unwrap_model
from hftl.strategies import Plan, apply_lora, build_plan, default_lora_targets
from hftl.tracking import log_with
from hftl.trainer import TrainData, TrainResult, evaluate_loop, fit, make_accelerator


@dataclass
class FinetuneResult:
    """What `finetune` returns: the run folder and its headline numbers."""

    output_dir: Path
    metrics: dict[str, float]
    test_metrics: dict[str, float] | None
    best_epoch: int
    history: list[dict[str, Any]]
    trainable_parameters: int
    total_parameters: int
    train_seconds: float


def finetune(config: str | Path | dict | Config, **overrides: Any) -> FinetuneResult:
    """Fine-tune as the config says (with overrides such as `strategy="lora"`, `epochs=2`).

    Nested dicts are accepted for sections (`data={"train": "digits/"}`), dotted keys as strings
    (`**{"train.batch_size": 8}`).
    """
    flat: dict[str, Any] = {}
    for key, value in overrides.items():
        if isinstance(value, dict):
            flat.update({f"{key}.{k}": v for k, v in value.items()})
        else:
            flat[key] = value
    cfg = load_config(config, flat)
    return run(cfg)


def run(cfg: Config) -> FinetuneResult:
    """Train, export and describe one run of a resolved config."""
    run_dir = Path(cfg.output_dir)
    resolve_builtins(cfg)
    log_with(cfg.train.report_to)  # a tracker that is not installed fails now, not after loading the data
    check_launch(cfg)
    set_seed(cfg.train.seed)
    modality = get_modality(cfg.task, cfg)
    splits = load_splits(cfg.data, modality, cfg.train.seed)
    set_seed(cfg.train.seed)  # the new head's init does not depend on how much data loading drew
    model, processor, layer_map, plan = setup_model(cfg, modality, splits.label_names)
    # The run folder is claimed only once data and model load: a typo there leaves nothing behind.
    if not prepare_run_dir(cfg, run_dir):
        cfg.resume = False
    accelerator = make_accelerator(cfg, run_dir, cfg.strategy.head_warmup_epochs > 0)
    if accelerator.is_main_process:
        cfg.save(run_dir / "config.yaml")
    if splits.report.total():
        accelerator.print(splits.report.summary())
    data = setup_data(cfg, modality, processor, splits)
    result = fit(cfg, model, layer_map, plan, data, run_dir, accelerator)
    summary = finish_run(cfg, accelerator, splits, model, processor, layer_map, plan, result)
    if cfg.push_to_hub and accelerator.is_main_process:
        from hftl.hub import push_run

        try:
            url = push_run(run_dir, cfg.hub_repo_id, private=cfg.hub_private)
        except HftlError as e:
            raise HftlError(
                f"the run finished in {run_dir}, but the push failed: {e}. "
                f"Retry with: hftl push {run_dir} --repo-id {cfg.hub_repo_id}"
            ) from None
        accelerator.print(f"pushed to {cfg.hub_repo_id}: {url}")
    return FinetuneResult(
        output_dir=run_dir,
        metrics=result.best_metrics,
        test_metrics=result.test_metrics,
        best_epoch=result.best_epoch,
        history=result.history,
        trainable_parameters=summary["trainable_parameters"],
        total_parameters=summary["total_parameters"],
        train_seconds=result.train_seconds,
    )


def resolve_builtins(cfg: Config) -> None:
    """`builtin:` model and data sources become the local folders they stand for."""
    from hftl.pretrained import resolve_builtin

    for section, key in (("model", "name_or_path"), ("data", "train"), ("data", "validation"), ("data", "test")):
        obj = getattr(cfg, section)
        value = getattr(obj, key)
        resolved = resolve_builtin(value)
        if resolved != value:
            setattr(obj, key, resolved)


def finish_run(
    cfg: Config,
    accelerator: Any,
    splits: Splits,
    model: Any,
    processor: Any,
    layer_map: LayerMap,
    plan: Plan,
    result: TrainResult,
) -> dict[str, Any]:
    """Export from the main process only: model/ (LoRA merged, adapter/ beside it), the card, then
    metrics.json last, because its presence marks the run as finished. Returns the summary."""
    run_dir = Path(cfg.output_dir)
    accelerator.wait_for_everyone()
    summary = run_summary(cfg, splits, model, layer_map, plan, result)
    gather = is_sharded(accelerator) or is_deepspeed(accelerator)
    full = model_state(accelerator, model) if gather else None  # a collective: every process gathers
    if accelerator.is_main_process:
        partial = is_deepspeed(accelerator)  # frozen parameters: the pretrained ones, not DeepSpeed's 16-bit casts
        plain = unwrap_model(accelerator, model) if full is None else unsharded(cfg, splits.label_names, full, partial)
        with deepspeed_unprobed(is_deepspeed(accelerator)):  # save_pretrained unwraps through Accelerate too
            export_model(plain, processor, run_dir)
        write_model_card(run_dir, cfg, summary)
        from hftl.report import write_run_plots

        write_run_plots(summary, best_metric_name(cfg), run_dir / "plots")
        write_metrics(run_dir, summary)
        pipeline_task = PIPELINE_TASKS.get(cfg.task, cfg.task)
        accelerator.print(f"finished: {run_dir} (model/ loads with transformers.pipeline({pipeline_task!r}))")
    accelerator.wait_for_everyone()
    return summary


def prepare_run_dir(cfg: Config, run_dir: Path) -> bool:
    """Refuse to clobber a run; returns True when an unfinished run will be resumed."""
    finished = (run_dir / METRICS_FILE).exists()
    is_run = (run_dir / "config.yaml").exists()
    has_other = run_dir.is_dir() and any(run_dir.iterdir()) and not is_run
    if has_other:
        raise HftlError(f"output_dir {run_dir} is not empty and holds no hftl run; choose a new or empty folder")
    if cfg.overwrite and is_run:
        shutil.rmtree(run_dir)
    elif finished:
        raise HftlError(
            f"output_dir {run_dir} already holds a finished run ({run_dir / METRICS_FILE}). "
            "Choose another output_dir, or pass overwrite=true to replace it"
        )
    elif is_run and not cfg.resume:
        raise HftlError(
            f"output_dir {run_dir} holds an unfinished run. Pass resume=true to continue it from its last checkpoint, "
            "or overwrite=true to start again"
        )
    run_dir.mkdir(parents=True, exist_ok=True)
    if cfg.resume and is_run:
        _check_same_config(cfg, run_dir / "config.yaml")
        return True
    if cfg.resume:
        print(f"resume=true but {run_dir} holds no run yet: starting from the beginning")
    return False


def _check_same_config(cfg: Config, saved_path: Path) -> None:
    diffs = config_diff(load_config(yaml.safe_load(saved_path.read_text())), cfg)
    if diffs:
        raise ConfigError(
            f"resume=true, but the config differs from the run in {saved_path.parent}: {', '.join(diffs)}. "
            "Resume with the same settings, or start a new output_dir"
        )


def setup_model(cfg: Config, modality: Modality, label_names: list[str]) -> tuple[Any, Any, LayerMap, Plan]:
    """Model with a new head, its layer map, LoRA wrapping if asked, and the phase plan."""
    model, processor = load_model(cfg, modality, label_names)
    layer_map = build_layer_map(model, cfg.model.blocks)
    if cfg.strategy.name == "lora":
        model = apply_lora(model, layer_map, cfg.strategy.lora)
    return model, processor, layer_map, build_plan(model, layer_map, cfg)


def unsharded(cfg: Config, label_names: list[str], tensors: dict[str, Any], partial: bool = False) -> Any:
    """A plain fp32 copy of an FSDP- or DeepSpeed-trained model: its parameters are shards (or 16-bit casts),
    and save_pretrained and the LoRA merge need whole ones. Built as the run built its model (same seed),
    then given the gathered weights; `partial` (DeepSpeed): only the trained ones, the rest stays pretrained."""
    import torch

    with torch.random.fork_rng(), _without_zero3_init():
        set_seed(cfg.train.seed)
        model, *_ = setup_model(cfg, get_modality(cfg.task, cfg), label_names)
    result = model.load_state_dict(tensors, strict=False)
    if result.unexpected_keys or (result.missing_keys and not partial):
        wrong = result.unexpected_keys or result.missing_keys
        raise HftlError(f"the trained weights do not fit the rebuilt model ({wrong[:3]}); was the config changed?")
    return model


@contextlib.contextmanager
def _without_zero3_init() -> Iterator[None]:
    """Build a plain model even under a ZeRO-3 launch, where Accelerate has told transformers to partition new ones."""
    from accelerate.state import AcceleratorState

    plugin = AcceleratorState().deepspeed_plugin if AcceleratorState._shared_state else None
    if plugin is None or getattr(plugin, "dschf", None) is None:
        yield
        return
    from transformers.integrations.deepspeed import set_hf_deepspeed_config, unset_hf_deepspeed_config

    unset_hf_deepspeed_config()
    try:
        yield
    finally:
        set_hf_deepspeed_config(plugin.dschf)


def setup_data(cfg: Config, modality: Modality, processor: Any, splits: Splits) -> TrainData:
    """Torch datasets (augmentation on train only), the batch collator and the task's evaluator."""
    load = modality.loader(processor)
    augment = modality.augmenter(processor) if cfg.data.augment else None
    seed = cfg.train.seed
    train, col = modality.encode(splits.train, splits.input_column, processor)
    validation, _ = modality.encode(splits.validation, splits.input_column, processor)
    test = modality.encode(splits.test, splits.input_column, processor)[0] if splits.test is not None else None
    return TrainData(
        train=ExampleDataset(train, col, load, augment, seed),
        validation=ExampleDataset(validation, col, load),
        test=ExampleDataset(test, col, load) if test is not None else None,
        collate=modality.collator(processor),
        evaluator=modality.evaluator(processor, splits.label_names),
        processor=processor,
        train_lengths=modality.lengths(train, col, processor) if cfg.data.group_by_length else None,
    )


def run_summary(cfg: Config, splits: Splits, model: Any, layer_map: LayerMap, plan: Plan, result: TrainResult) -> dict[str, Any]:
    params = dict(model.named_parameters())
    # Count the merged model's parameters for LoRA too: adapters count as trainable extras.
    trainable = sum(numel(params[n]) for n in plan.trainable_any if n in params)
    total = sum(numel(p) for n, p in params.items() if ".original_module." not in n)
    for phase in plan.phases:  # per-part counts of the final phase, for the card
        for n, p in params.items():
            p.requires_grad_(n in phase.trainable)
    parts = describe(model, layer_map)
    frozen = [part for part, tr, _ in parts if tr == 0]
    strategy: dict[str, Any] = {
        "name": cfg.strategy.name,
        "blocks": len(layer_map.blocks),
        "frozen_parts": frozen,
        "frozen_description": ("frozen: " + ", ".join(frozen)) if frozen else "nothing frozen",
        "parts": parts,
        "phases": [{"name": p.name, "epochs": p.epochs, "trains": _phase_trains(p, layer_map)} for p in plan.phases],
    }
    if cfg.strategy.name == "lora":
        strategy["lora_targets"] = sorted(model.peft_config["default"].target_modules)
    return {
        "task": cfg.task,
        "base_model": cfg.model.name_or_path,
        "validation": result.best_metrics,
        "test": result.test_metrics,
        "best_epoch": result.best_epoch,
        "stopped_early": result.stopped_early,
        "history": result.history,
        "log_history": result.log_history,
        "confusion_matrix": result.confusion_matrix,
        "train_seconds": result.train_seconds,
        "samples_per_second": result.samples_per_second,
        "peak_memory_mb": result.peak_memory_mb,
        "feature_cache": result.feature_cache,
        "global_step": result.global_step,
        "trainable_parameters": trainable,
        "total_parameters": total,
        "strategy": strategy,
        "data": {
            "sources": splits.sources,
            "train_examples": len(splits.train),
            "validation_examples": len(splits.validation),
            "test_examples": len(splits.test) if splits.test is not None else 0,
            "labels": splits.label_names,
            "skipped_total": splits.report.total(),
            "skipped": splits.report.to_dict(),
        },
    }


def _phase_trains(phase: Any, layer_map: LayerMap) -> str:
    parts = sorted({layer_map.part_of(n) for n in phase.trainable}, key=layer_map.parts.index)
    blocks = [p for p in parts if p.startswith("block.")]
    other = [p for p in parts if not p.startswith("block.")]
    text = other[:]
    if blocks:
        text.insert(1 if "embeddings" in other else 0, blocks[0] if len(blocks) == 1 else f"{blocks[0]}..{blocks[-1]}")
    return ", ".join(text)


def load_run(run_dir: str | Path) -> tuple[Config, Path]:
    """The resolved config and `model/` folder of a finished run, or a clear error."""
    run_dir = Path(run_dir)
    model_dir = run_dir / "model"
    if not (run_dir / "config.yaml").is_file() or not model_dir.is_dir():
        raise HftlError(f"{run_dir} is not a finished hftl run (expected config.yaml and model/); train one with `hftl train`")
    return load_config(yaml.safe_load((run_dir / "config.yaml").read_text())), model_dir


def evaluate_run(run_dir: str | Path, data: str, batch_size: int | None = None) -> dict[str, float]:
    """Metrics of a finished run's `model/` on other labelled data (labels must be the model's)."""
    from accelerate import Accelerator
    from torch.utils.data import DataLoader

    from hftl.data import ROW, DataReport, load_source

    cfg, model_dir = load_run(run_dir)
    modality = get_modality(cfg.task, cfg)
    model = modality.model_class().from_pretrained(str(model_dir))
    processor = modality.load_processor(str(model_dir), None, False)
    label_names = json.loads((Path(run_dir) / METRICS_FILE).read_text())["data"]["labels"]
    report = DataReport()
    loaded = load_source(data, modality, "--data", report)
    ds = loaded if not isinstance(loaded, dict) else loaded.get("test") or loaded.get("validation") or next(iter(loaded.values()))
    column = cfg.data.input_column or modality.detect_input_column(ds, data)
    label_column = cfg.data.label_column or modality.detect_label_column(ds, data)
    if label_column not in ds.column_names:
        raise DataError(
            f"{data} has no label column {label_column!r}; its columns are {ds.column_names}. "
            "Rename the column to match the run's data.label_column"
        )
    ds = ds.add_column(ROW, list(range(1, len(ds) + 1)))
    ds = modality.check_inputs(modality.prepare_inputs(ds, column, data), column, "evaluation", cfg.data.on_bad_file, report)
    if len(ds) == 0:
        raise DataError(f"{data} holds no usable examples")
    ds = modality.encode_labels(ds, label_column, label_names, "evaluation", data).remove_columns(ROW)
    if report.total():
        print(report.summary())
    import torch

    accelerator = Accelerator(cpu=not torch.cuda.is_available())  # several processes on CPUs too (gloo)
    ds, column = modality.encode(ds, column, processor)
    loader = DataLoader(
        ExampleDataset(ds, column, modality.loader(processor)),
        batch_size=batch_size or cfg.train.eval_batch_size or cfg.train.batch_size,
        collate_fn=modality.collator(processor),
    )
    model, loader = accelerator.prepare(model, loader)
    metrics, _, _ = evaluate_loop(accelerator, model, loader, modality.evaluator(processor, label_names), desc="evaluate")
    metrics["examples"] = len(ds)
    return metrics


def predict(run_dir: str | Path, inputs: list[str], top_k: int = 1) -> list[list[dict[str, Any]]]:
    """Label names and scores for each input (file path or text), through `transformers.pipeline`."""
    from transformers import pipeline

    cfg, model_dir = load_run(run_dir)
    modality = get_modality(cfg.task, cfg)
    loaded = [modality.load_predict_input(item) for item in inputs]
    return modality.predict(pipeline(modality.pipeline_task, model=str(model_dir)), loaded, top_k)


def read_metrics(run_dir: str | Path) -> dict[str, Any]:
    return json.loads((Path(run_dir) / METRICS_FILE).read_text())


def default_targets_for(model: Any) -> list[str]:
    """LoRA's default target modules for a model (for docs and inspection)."""
    return default_lora_targets(model, build_layer_map(model))
