"""The Python API: `finetune`, and the steps of one run that `hftl train` and the scripts take in order.

Example:
    >>> from hftl import finetune
    >>> result = finetune("configs/vision/vit-head-only.yaml", data={"train": "digits/"}, epochs=2)  # doctest: +SKIP
    >>> result.metrics["accuracy"], result.output_dir                                            # doctest: +SKIP
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from accelerate import Accelerator
from accelerate.utils import set_seed

from hftl.adapt.methods import Adaptation, check_adaptation
from hftl.backends import backend_for, check_launch
from hftl.config import CLASSIFICATION_TASKS, PIPELINE_TASKS, Config, best_metric_name, load_config
from hftl.data.labels import REGRESSION
from hftl.data.losses import class_weight_vector, sample_weights, training_loss
from hftl.data.modalities import Modality, get_modality
from hftl.data.sources import LABELS, ExampleDataset, Splits, TrainData, column_values, load_splits
from hftl.data.target import load_target, load_target_test
from hftl.models.architecture_needs import check_architecture
from hftl.models.layer_map import LayerMap, describe, numel
from hftl.models.loading import setup_model
from hftl.models.strategies import Phase, Plan, get_strategy, trainable_as
from hftl.models.target_scaling import fold
from hftl.run_folder.layout import CONFIG_FILE, PLOTS_DIR, prepare_run_dir
from hftl.run_folder.lock import run_lock
from hftl.runs.export import export_model, write_example_tables, write_metrics, write_model_card
from hftl.runs.plots import write_prediction_plots, write_run_plots
from hftl.training.accelerator import describe_launch
from hftl.training.tracking import log_with
from hftl.training.trainer import EpochHook, TrainResult, fit, make_accelerator
from hftl.utils.errors import HftlError

__all__ = ["FinetuneResult", "finetune", "finish_run", "resolve_builtins", "run", "run_summary", "setup_data", "setup_model"]


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


def run(cfg: Config, on_epoch: EpochHook | None = None) -> FinetuneResult:
    """Train, export and describe one run of a resolved config; `on_epoch(epoch, validation metrics)` is called
    after each epoch's checkpoint (a search prunes there by raising)."""
    run_dir = Path(cfg.output_dir)
    resolve_builtins(cfg)
    log_with(cfg.train.report_to)  # a tracker that is not installed fails now, not after loading the data
    check_launch(cfg)
    m = cfg.model
    check_architecture(cfg.task, m.name_or_path, m.revision, m.trust_remote_code)  # before any data is read
    set_seed(cfg.train.seed)
    modality = get_modality(cfg.task, cfg)
    splits = load_splits(cfg.data, modality, cfg.train.seed)
    if modality.label_shapes:  # weights for labels the data lacks fail here, before the run folder is claimed
        class_weight_vector(splits.labels, cfg.train.class_weights)
    load_target_splits(cfg, modality, splits)
    start, pretrained = pretrain_if_asked(cfg, splits)
    set_seed(cfg.train.seed)  # the new head's init does not depend on how much data loading drew
    model, processor, layer_map, plan = setup_model(start, modality, splits.labels)
    check_adaptation(cfg, model, layer_map)
    # The run folder is claimed only once data and model load: a typo there leaves nothing behind.
    with run_lock(run_dir):  # one writer: a second process on this folder is refused while this one lives
        return _train_and_export(cfg, modality, splits, model, processor, layer_map, plan, on_epoch, pretrained)


def _train_and_export(
    cfg: Config,
    modality: Modality,
    splits: Splits,
    model: Any,
    processor: Any,
    layer_map: LayerMap,
    plan: Plan,
    on_epoch: EpochHook | None = None,
    pretrained: dict[str, Any] | None = None,
) -> FinetuneResult:
    run_dir = Path(cfg.output_dir)
    if not prepare_run_dir(cfg, run_dir):
        cfg.resume = False
    accelerator = make_accelerator(cfg, run_dir, cfg.strategy.head_warmup_epochs > 0)
    accelerator.print(f"launch: {describe_launch(accelerator, cfg)['text']}")
    if note := getattr(modality, "length_note", None):
        accelerator.print(note)
    if accelerator.is_main_process:
        cfg.save(run_dir / CONFIG_FILE)
    if splits.report.total():
        accelerator.print(splits.report.summary())
    if (counts := splits.labels.describe_counts()) is not None:
        accelerator.print(counts)
    data = setup_data(cfg, modality, processor, splits)
    # Without a method, a target still gets its shift measured, where the head reads one vector per example.
    measured = data.target is not None and cfg.task in CLASSIFICATION_TASKS
    adaptation = Adaptation(cfg, data, layer_map, run_dir, pretrained) if cfg.adapt.method != "none" or measured else None
    if adaptation is not None:
        plan = adaptation.attach(model, plan)
    result = fit(cfg, model, layer_map, plan, data, run_dir, accelerator, on_epoch, adaptation)
    summary = finish_run(cfg, accelerator, splits, model, processor, layer_map, plan, result)
    if cfg.push_to_hub and accelerator.is_main_process:
        _push(cfg, run_dir, accelerator)
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


def _push(cfg: Config, run_dir: Path, accelerator: Accelerator) -> None:
    from hftl.runs.hub import push_run

    try:
        url = push_run(run_dir, cfg.hub_repo_id, private=cfg.hub_private)
    except HftlError as e:
        raise HftlError(
            f"the run finished in {run_dir}, but the push failed: {e}. "
            f"Retry with: hftl push {run_dir} --repo-id {cfg.hub_repo_id}"
        ) from None
    accelerator.print(f"pushed to {cfg.hub_repo_id}: {url}")


def resolve_builtins(cfg: Config) -> None:
    """`builtin:` model and data sources become the local folders they stand for."""
    from hftl.builtin import resolve_builtin

    keys = ("train", "validation", "test", "target", "target_test")
    for section, key in (("model", "name_or_path"), *(("data", k) for k in keys)):
        obj = getattr(cfg, section)
        value = getattr(obj, key)
        resolved = resolve_builtin(value)
        if resolved != value:
            setattr(obj, key, resolved)


def pretrain_if_asked(cfg: Config, splits: Splits) -> tuple[Config, dict[str, Any] | None]:
    """adapt.method=pretrain: the config to load the model from (the checkpoint after masked language modelling on
    the target's texts) and the pretraining's record; otherwise `cfg` itself and None."""
    if cfg.adapt.method != "pretrain":
        return cfg, None
    from transformers import AutoConfig

    from hftl.adapt.pretrain import check_masked_lm, pretrain_on_target

    m = cfg.model
    check_masked_lm(cfg, AutoConfig.from_pretrained(m.name_or_path, revision=m.revision, trust_remote_code=m.trust_remote_code))
    texts = [" ".join(x) if isinstance(x, list) else str(x) for x in column_values(splits.target, splits.input_column)]
    folder, record = pretrain_on_target(cfg, texts)
    start = copy.deepcopy(cfg)
    start.model.name_or_path, start.model.revision = str(folder), None
    return start, {"pretrained_checkpoint": str(folder), **record}


def load_target_splits(cfg: Config, modality: Modality, splits: Splits) -> None:
    """data.target (inputs only) and data.target_test (labelled in the source's label space) into `splits`."""
    if cfg.data.target:
        splits.target = load_target(cfg.data, modality, splits.input_column, splits.report, splits.train)
        splits.sources["target"] = cfg.data.target
    if cfg.data.target_test:
        columns = (splits.input_column, splits.label_column)
        splits.target_test = load_target_test(cfg.data, modality, columns, splits.labels, splits.report)
        splits.sources["target_test"] = cfg.data.target_test


def setup_data(cfg: Config, modality: Modality, processor: Any, splits: Splits) -> TrainData:
    """Torch datasets (augmentation on train only), the batch collator and the task's evaluator."""
    load = modality.loader(processor)
    augment = modality.augmenter(processor) if cfg.data.augment else None
    seed = cfg.train.seed
    train, col = modality.encode(splits.train, splits.input_column, processor)
    validation, _ = modality.encode(splits.validation, splits.input_column, processor)
    test = modality.encode(splits.test, splits.input_column, processor)[0] if splits.test is not None else None
    target = modality.encode(splits.target, splits.input_column, processor)[0] if splits.target is not None else None
    target_test = splits.target_test
    target_test = modality.encode(target_test, splits.input_column, processor)[0] if target_test is not None else None
    return TrainData(
        train=ExampleDataset(train, col, load, augment, seed),
        validation=ExampleDataset(validation, col, load),
        test=ExampleDataset(test, col, load) if test is not None else None,
        target=ExampleDataset(target, col, load, augment, seed + 1) if target is not None else None,
        target_test=ExampleDataset(target_test, col, load) if target_test is not None else None,
        collate=modality.collator(processor),
        evaluator=modality.evaluator(processor, splits.labels),
        processor=processor,
        train_lengths=modality.lengths(train, col, processor) if cfg.data.group_by_length else None,
        **_label_options(cfg, modality, splits),
    )


def _label_options(cfg: Config, modality: Modality, splits: Splits) -> dict[str, Any]:
    """The loss of the label shape (class weights, label smoothing) and the balanced sampler's weights."""
    if not modality.label_shapes:
        return {}
    t = cfg.train
    weights = sample_weights(splits.labels, column_values(splits.train, LABELS)) if cfg.data.sampler == "balanced" else None
    return {"loss": training_loss(splits.labels, t.class_weights, t.label_smoothing), "sample_weights": weights}


def finish_run(
    cfg: Config,
    accelerator: Accelerator,
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
    backend = backend_for(accelerator)
    accelerator.wait_for_everyone()
    summary = run_summary(cfg, splits, model, layer_map, plan, result)
    summary["launch"] = describe_launch(accelerator, cfg)

    def rebuild() -> Any:  # the run's model afresh, for engines whose trained model is not plain
        set_seed(cfg.train.seed)
        return setup_model(cfg, get_modality(cfg.task, cfg), splits.labels)[0]

    plain = backend.exportable_model(model, rebuild)  # a collective under FSDP and DeepSpeed
    if accelerator.is_main_process:

        def finalize(exported: Any) -> None:  # the trained model, before it is saved
            exported = backend.unwrap(exported)
            exported.config.update(result.model_config)
            if splits.labels.problem == REGRESSION:
                fold(exported, layer_map.classifier, splits.labels)

        with backend.unprobed():  # save_pretrained unwraps through Accelerate too
            export_model(plain, processor, run_dir, get_strategy(cfg.strategy.name), finalize=finalize)
        write_model_card(run_dir, cfg, summary)
        write_run_plots(summary, best_metric_name(cfg), run_dir / PLOTS_DIR)
        if result.predictions is not None:
            write_prediction_plots(splits.labels, *result.predictions, run_dir / PLOTS_DIR)
        write_example_tables(run_dir, result.example_tables)
        write_metrics(run_dir, summary)
        pipeline_task = PIPELINE_TASKS.get(cfg.task, cfg.task)
        accelerator.print(f"finished: {run_dir} (model/ loads with transformers.pipeline({pipeline_task!r}))")
    accelerator.wait_for_everyone()
    return summary


def run_summary(cfg: Config, splits: Splits, model: Any, layer_map: LayerMap, plan: Plan, result: TrainResult) -> dict[str, Any]:
    """What metrics.json holds: the outcome, the history, what trained, and the data."""
    params = dict(model.named_parameters())
    # Count the merged model's parameters for LoRA too: adapters count as trainable extras.
    trainable = sum(numel(params[n]) for n in plan.trainable_any if n in params)
    total = sum(numel(p) for n, p in params.items() if ".original_module." not in n)
    with trainable_as(model, plan.phases[-1].trainable):  # per-part counts of the final phase, for the card
        parts = describe(model, layer_map)
    frozen = [part for part, tr, _ in parts if tr == 0]
    strategy = get_strategy(cfg.strategy.name)
    about: dict[str, Any] = {
        "name": cfg.strategy.name,
        "blocks": len(layer_map.blocks),
        "frozen_parts": frozen,
        "frozen_description": ("frozen: " + ", ".join(frozen)) if frozen else "nothing frozen",
        "parts": parts,
        "phases": [{"name": p.name, "epochs": p.epochs, "trains": _phase_trains(p, layer_map)} for p in plan.phases],
        **(strategy.summary(model) if strategy.summary else {}),
    }
    return {
        "task": cfg.task,
        "base_model": cfg.model.name_or_path,
        "validation": result.best_metrics,
        "test": result.test_metrics,
        **({"target_test": result.target_test_metrics} if result.target_test_metrics is not None else {}),
        **({"adapt": result.adapt} if result.adapt is not None else {}),
        "best_epoch": result.best_epoch,
        "stopped_early": result.stopped_early,
        "history": result.history,
        "log_history": result.log_history,
        "confusion_matrix": result.confusion_matrix,
        "per_class": result.per_class,
        **result.model_config,
        "train_seconds": result.train_seconds,
        "samples_per_second": result.samples_per_second,
        "peak_memory_mb": result.peak_memory_mb,
        "feature_cache": result.feature_cache,
        "global_step": result.global_step,
        "nonfinite_steps_skipped": result.nonfinite_skipped,
        "learning_rates_found": result.auto_rates,
        "trainable_parameters": trainable,
        "total_parameters": total,
        "strategy": about,
        "data": {
            "sources": splits.sources,
            "train_examples": len(splits.train),
            "validation_examples": len(splits.validation),
            "test_examples": len(splits.test) if splits.test is not None else 0,
            "target_examples": len(splits.target) if splits.target is not None else 0,
            "target_test_examples": len(splits.target_test) if splits.target_test is not None else 0,
            "labels": splits.label_names,
            "label_space": splits.labels.to_dict() if splits.labels is not None else None,
            "skipped_total": splits.report.total(),
            "skipped": splits.report.to_dict(),
        },
    }


def _phase_trains(phase: Phase, layer_map: LayerMap) -> str:
    parts = sorted({layer_map.part_of(n) for n in phase.trainable}, key=layer_map.parts.index)
    blocks = [p for p in parts if p.startswith("block.")]
    other = [p for p in parts if not p.startswith("block.")]
    text = other[:]
    if blocks:
        text.insert(1 if "embeddings" in other else 0, blocks[0] if len(blocks) == 1 else f"{blocks[0]}..{blocks[-1]}")
    return ", ".join(text)
