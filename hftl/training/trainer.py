"""The training loop on Accelerate, as a recipe: set up, restore, train epoch by epoch, finish.

The loop stays visible (prepare, accumulate, backward, clip, step, gather_for_metrics). What trains
comes from the `Plan`, what the data is from the modality, how the engine holds and saves state from
the backend, and where the run stands from the `TrainState` its checkpoints carry. The order below is
what makes a killed and resumed run bitwise equal to an uninterrupted one: the feature cache and the
phase first, then the samplers' epoch, the skip into the epoch, and the RNG state last.

Example:
    >>> result = fit(cfg, model, layer_map, plan, data, run_dir)   # doctest: +SKIP
    >>> result.best_metrics["accuracy"]                             # doctest: +SKIP
"""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any

import torch
from accelerate import Accelerator
from torch import nn
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from hftl.backends import backend_for
from hftl.config import LOWER_IS_BETTER, Config, best_metric_name
from hftl.data.metrics import confusion
from hftl.data.sampling import EpochSampler
from hftl.data.sources import TrainData, loader_workers
from hftl.models.layer_map import LayerMap
from hftl.models.optimization import lr_lambda, param_groups
from hftl.models.strategies import Phase, Plan, describe_phase, set_train_mode, set_trainable
from hftl.training.accelerator import make_accelerator
from hftl.training.auto_rates import nominal, resolve_auto_rates
from hftl.training.checkpoint_files import PREFIX, set_rng_state
from hftl.training.checkpointer import Checkpointer
from hftl.training.divergence import finite_step, never_finite
from hftl.training.evaluation import evaluate_loop
from hftl.training.feature_cache import FeatureCache
from hftl.training.peak_memory import PeakMemory
from hftl.training.preemption import StopSignals, ignore_stop_signals
from hftl.training.tracking import finish_trackers, start_trackers
from hftl.training.train_state import TrainResult, TrainState
from hftl.training.training_run import EpochHook, TrainingRun
from hftl.utils.errors import DivergedError, HftlError
from hftl.utils.faults import AFTER_EPOCH, AFTER_STEP, SIGTERM_AFTER_STEP, fault, poison

__all__ = ["EpochHook", "TrainData", "TrainResult", "evaluate_loop", "fit", "make_accelerator"]


def fit(
    cfg: Config,
    model: nn.Module,
    layer_map: LayerMap,
    plan: Plan,
    data: TrainData,
    run_dir: Path,
    accelerator: Accelerator | None = None,
    on_epoch: EpochHook | None = None,
    adaptation: Any = None,
) -> TrainResult:
    """Train `model` following `plan`; resume from `run_dir/checkpoints` when `cfg.resume`. `adaptation` (an
    `adapt.methods.Adaptation`) adds what adapt.method does to the steps, the start and the end."""
    accelerator = accelerator or make_accelerator(cfg, run_dir, len(plan.phases) > 1)
    run = _setup(cfg, model, layer_map, plan, data, run_dir, accelerator, adaptation)
    run.on_epoch = on_epoch
    state, rng = TrainState(), None  # rng: the checkpoint's RNG state, set as the first epoch starts
    if cfg.resume:
        state, rng = run.checkpoints.restore(run.steps_per_epoch, cfg.train.gradient_accumulation_steps)
    state.num_processes = accelerator.num_processes
    if adaptation is not None and state.global_step == 0 and not state.adapt:  # a fresh run: before range tests, cache
        state.adapt = adaptation.begin(run)
    start_trackers(accelerator, cfg, run_dir, resumed=rng is not None)
    if layer_map.note:
        accelerator.print(f"note: {layer_map.note}")
    accelerator.print(describe_phase(run.raw, layer_map, plan.phase_at(state.epoch)))
    started = time.perf_counter()
    resolve_auto_rates(run, state, run_dir / "plots")  # a resumed run keeps the rates it found
    state.train_seconds += time.perf_counter() - started  # what the choice cost is part of training
    with PeakMemory() as memory, StopSignals(accelerator) as run.stop:
        stopped_early = _train(run, state, rng)
    return _finish(run, state, memory, stopped_early)


def _setup(
    cfg: Config,
    model: nn.Module,
    layer_map: LayerMap,
    plan: Plan,
    data: TrainData,
    run_dir: Path,
    accelerator: Accelerator,
    adaptation: Any = None,
) -> TrainingRun:
    """Loaders, optimizer and schedule, prepared by Accelerate; the feature cache and the checkpointer."""
    t, backend = nominal(cfg.train), backend_for(accelerator)  # learning_rate: auto resolves after
    refusal = backend.feature_cache_refusal or (adaptation.cache_refusal if adaptation is not None else None)
    # The same module object DDP wraps and `unwrap` returns, so the stand-ins it installs are seen.
    cache = FeatureCache(cfg, model, layer_map, data, accelerator, engine_refusal=refusal)
    collate = backend.collate(cache.collate(data.collate))
    workers, pin = loader_workers(cfg, accelerator), accelerator.device.type == "cuda"
    train_loader = DataLoader(
        data.train,
        batch_size=t.batch_size,
        sampler=EpochSampler(
            len(data.train), t.seed, lengths=data.train_lengths, batch_size=t.batch_size, weights=data.sample_weights
        ),
        collate_fn=collate,
        num_workers=workers,
        pin_memory=pin,
        generator=torch.Generator().manual_seed(t.seed),  # keeps the global RNG untouched by iteration
        worker_init_fn=ignore_stop_signals if workers else None,
    )
    eval_loaders = [
        DataLoader(ds, batch_size=t.eval_batch_size or t.batch_size, collate_fn=collate, num_workers=workers, pin_memory=pin)
        for ds in (data.validation, data.test, data.target_test)
        if ds is not None
    ]
    if pin and _is_cnn(model):  # cuDNN's fastest convolutions want NHWC; inputs follow the weights' format
        model.to(memory_format=torch.channels_last)
    groups = param_groups(model, layer_map, plan, t)
    if not groups:
        raise HftlError("nothing to train: the strategy leaves no trainable parameter in this model")
    # Fused AdamW (the Trainer's default): one kernel over all parameters instead of a Python loop per
    # tensor, 5x faster a step on a CPU for a small model's 80 tensors.
    optimizer = torch.optim.AdamW(groups, lr=t.learning_rate, fused=backend.fused_optimizer)
    # DDP registers only parameters that require grad when it wraps the model: enable every parameter
    # any phase trains, then narrow to the current phase per epoch.
    set_trainable(model, plan.trainable_any)
    backend.prepare_model(model, layer_map.blocks)
    model, optimizer, train_loader, *eval_loaders = accelerator.prepare(model, optimizer, train_loader, *eval_loaders)
    target_test_loader = eval_loaders.pop() if data.target_test is not None else None
    raw = backend.unwrap(model)
    if (about := backend.describe(model)) is not None:
        accelerator.print(about)
    steps_per_epoch = math.ceil(len(train_loader) / t.gradient_accumulation_steps)
    total_steps = min(t.epochs * steps_per_epoch, t.max_steps or math.inf)
    schedule = lr_lambda(plan, steps_per_epoch, total_steps, t)
    scheduler = torch.optim.lr_scheduler.LambdaLR(backend.torch_optimizer(optimizer), schedule)
    names = plan.trainable_any | {name for name, _ in raw.named_buffers()}
    checkpoints = Checkpointer(backend, run_dir / "checkpoints", model, optimizer, scheduler, names, t.save_total_limit)
    run = TrainingRun(
        cfg, accelerator, backend, model, raw, layer_map, plan, data, cache, train_loader, eval_loaders, workers,
        optimizer, scheduler, checkpoints, steps_per_epoch, total_steps,
    )  # fmt: skip
    run.adaptation, run.target_test_loader = adaptation, target_test_loader
    if adaptation is not None:
        adaptation.setup(accelerator)
    return run


def _train(run: TrainingRun, state: TrainState, rng: dict[str, Any] | None) -> bool:
    """Epochs until the budget is spent or early stopping; returns whether it stopped early."""
    t = run.cfg.train
    progress = tqdm(
        total=run.total_steps,
        initial=state.global_step,
        desc="train",
        disable=not run.accelerator.is_local_main_process,
        dynamic_ncols=True,
    )
    loss, stopped_early = _RunningLoss(), False
    while state.epoch < t.epochs and state.global_step < run.total_steps and not stopped_early:
        epoch_started = time.perf_counter()
        phase = run.plan.phase_at(state.epoch)
        if phase.name != run.cached_phase:  # fill or reuse the cache of what this phase keeps frozen
            run.activate_cache(phase)
            state.train_seconds += time.perf_counter() - epoch_started
        if run.adaptation is not None:  # self-training's round of pseudo-labels
            run.adaptation.start_epoch(run, state.epoch)
        loader, clipped = _start_epoch(run, state, phase)
        if rng is not None:  # restore RNG last, after everything that may have drawn from it
            set_rng_state(rng)
            rng = None
        _train_epoch(run, state, loader, clipped, progress, loss)
        stopped_early = _end_epoch(run, state, phase, epoch_seconds=time.perf_counter() - epoch_started)
        if run.stop.requested():  # the epoch's checkpoint is written
            raise run.stop.interrupted(state.global_step, str(run.checkpoints.folder / f"{PREFIX}{state.global_step:07d}"))
    progress.close()
    return stopped_early


def _start_epoch(run: TrainingRun, state: TrainState, phase: Phase) -> tuple[Any, list[nn.Parameter]]:
    """Enter `phase` for this epoch: what trains, train/eval modes, the samplers' epoch, the skip into a resumed epoch."""
    if phase.name != state.phase and state.phase:
        what = describe_phase(run.raw, run.layer_map, phase)
        run.accelerator.print(f"phase {phase.name} from epoch {state.epoch + 1}:\n{what}")
    state.phase = phase.name
    set_trainable(run.raw, phase.trainable)
    clipped = [p for p in run.raw.parameters() if p.requires_grad]  # once per epoch, not per step
    set_train_mode(run.raw, run.layer_map, phase, run.cfg.strategy.batch_norm)
    run.train_loader.set_epoch(state.epoch)
    run.data.train.set_epoch(state.epoch)
    skip = state.batch_in_epoch
    loader = run.accelerator.skip_first_batches(run.train_loader, skip) if skip else run.train_loader
    return loader, clipped


class _RunningLoss:
    """Training loss summed on the device between log lines: an `.item()` per step would sync."""

    def __init__(self) -> None:
        self.total, self.count = 0.0, 0

    def add(self, loss: torch.Tensor) -> None:
        self.total += loss.detach().float()
        self.count += 1

    def take(self) -> float:
        mean = self.total.item() / self.count
        self.total, self.count = 0.0, 0
        return mean


def _train_epoch(run: TrainingRun, state: TrainState, loader: Any, clipped: list, progress: Any, running: _RunningLoss) -> None:
    """One pass over the (rest of the) epoch's batches: accumulate, step, log, save every save_steps."""
    t, accelerator, model = run.cfg.train, run.accelerator, run.model
    started = time.perf_counter()
    for batch in loader:
        run.cache.feed_batch(batch)
        with accelerator.accumulate(model):
            loss = poison(run.step_loss(model, batch, state), state.global_step + 1)
            accelerator.backward(loss)  # under DeepSpeed also the clipping and the optimizer step
            _update(run, state, loss, clipped)
        state.batch_in_epoch += 1
        state.samples_seen += len(batch["labels"]) * accelerator.num_processes
        running.add(loss)
        if not accelerator.sync_gradients:
            continue
        state.global_step += 1
        progress.update(1)
        if state.global_step % t.logging_steps == 0 or state.global_step == run.total_steps:
            _log_step(run, state, running.take(), progress)
        fault(SIGTERM_AFTER_STEP, state.global_step)
        mid_epoch = state.batch_in_epoch < len(run.train_loader)  # at an epoch's end, _end_epoch checkpoints
        stop = mid_epoch and run.stop.requested()
        if stop or (t.save_steps and state.global_step % t.save_steps == 0 and mid_epoch):
            state.train_seconds += time.perf_counter() - started
            started = time.perf_counter()
            run.checkpoints.save(state)
        if stop:
            raise run.stop.interrupted(state.global_step, str(run.checkpoints.folder / f"{PREFIX}{state.global_step:07d}"))
        fault(AFTER_STEP, state.global_step)
        if state.global_step >= run.total_steps:
            break
    state.train_seconds += time.perf_counter() - started


def _update(run: TrainingRun, state: TrainState, loss: torch.Tensor, clipped: list[nn.Parameter]) -> None:
    """Clip, check, step. Once gradients are synced the loss and the gradient norm must be finite
    (train.on_nonfinite: stop raises, skip drops the update and counts it)."""
    accelerator, optimizer, update = run.accelerator, run.optimizer, True
    if accelerator.sync_gradients:
        # Without clipping the norm is still computed (an infinite limit scales by exactly 1): the finite check reads it.
        norm = accelerator.clip_grad_norm_(clipped, run.cfg.train.max_grad_norm or math.inf)
        update = finite_step(loss, norm, state.global_step + 1, run.cfg, scaled=accelerator.scaler is not None)
    if update:
        optimizer.step()
        if accelerator.sync_gradients and not accelerator.optimizer_step_was_skipped:
            run.scheduler.step()
    else:
        state.nonfinite_skipped += 1
        if accelerator.scaler is not None:  # its unscale of this step must be closed, as its own skip does
            accelerator.scaler.update()
    optimizer.zero_grad(set_to_none=True)


def _log_step(run: TrainingRun, state: TrainState, loss: float, progress: Any) -> None:
    entry = {
        "step": state.global_step,
        "epoch": state.epoch + state.batch_in_epoch / len(run.train_loader),
        "loss": loss,
        "lr": run.scheduler.get_last_lr()[-1],
    }
    if run.adaptation is not None and run.adaptation.method == "dann":
        entry["dann_lambda"] = run.adaptation.lambd  # the reversal's weight, rising on its schedule
    state.log_history.append(entry)
    run.accelerator.log({f"train/{k}": v for k, v in entry.items() if k not in ("step", "epoch")}, step=state.global_step)
    progress.set_postfix(loss=f"{entry['loss']:.4f}", lr=f"{entry['lr']:.2e}")


def _end_epoch(run: TrainingRun, state: TrainState, phase: Phase, epoch_seconds: float) -> bool:
    """Validate, keep the best epoch, checkpoint; returns whether early stopping ends the run here."""
    t, accelerator, metric_name = run.cfg.train, run.accelerator, best_metric_name(run.cfg)
    metrics, preds, refs = _evaluate(run, 0, "validation")
    record = {"epoch": state.epoch + 1, "step": state.global_step, "phase": phase.name, "epoch_seconds": epoch_seconds}
    state.history.append({**record, **{f"eval_{k}": v for k, v in metrics.items()}})
    accelerator.log({f"eval/{k}": v for k, v in metrics.items()}, step=state.global_step)
    # Compared as "higher is better": error rates and loss are negated.
    if state.improved(metrics[metric_name] * (-1 if metric_name in LOWER_IS_BETTER else 1), metrics.get("loss")):
        state.best_metrics = metrics
        run.checkpoints.save_best()
    run.kept = {e: kept for e, kept in run.kept.items() if e == state.best_epoch} | {state.epoch + 1: (preds, refs)}
    accelerator.print(
        f"epoch {state.epoch + 1}/{t.epochs} [{phase.name}] "
        + " ".join(f"{k}={v:.4f}" for k, v in metrics.items())
        + (" *best*" if state.best_epoch == state.epoch + 1 else "")
    )
    stopped_early = bool(t.early_stopping_patience and state.epochs_without_improvement >= t.early_stopping_patience)
    if stopped_early:
        accelerator.print(f"early stopping: no better {metric_name} for {t.early_stopping_patience} epoch(s)")
    state.epoch += 1
    state.batch_in_epoch = 0
    run.checkpoints.save(state)
    fault(AFTER_EPOCH, state.epoch)
    if run.on_epoch is not None:
        run.on_epoch(state.epoch, metrics)
    return stopped_early


def _evaluate(run: TrainingRun, loader: int, desc: str) -> tuple[dict[str, float], list[Any], list[Any]]:
    """`evaluate_loop` over eval loader `loader` (0: validation, 1: test), cached features fed to the stand-ins."""
    return evaluate_loop(
        run.accelerator,
        run.model,
        run.eval_loaders[loader],
        run.data.evaluator,
        desc=desc,
        feed=run.cache.feed_batch,
        calibrate=loader == 0,
    )


def _finish(run: TrainingRun, state: TrainState, memory: PeakMemory, stopped_early: bool) -> TrainResult:
    """End on the best epoch's weights (train.load_best_at_end), evaluate them, close the cache and trackers."""
    metric = best_metric_name(run.cfg)
    last = state.history[-1] if state.history else {}
    last_finite = all(math.isfinite(last.get(f"eval_{k}", math.nan)) for k in (metric, "loss"))
    if state.best_epoch < 1 or not (run.cfg.train.load_best_at_end or last_finite):
        raise DivergedError(never_finite(state.history, metric))
    if run.cfg.train.load_best_at_end:
        run.checkpoints.load_best()
    adapted = _adapt_weights(run, state)
    result = TrainResult(
        best_metrics=state.best_metrics,
        best_epoch=state.best_epoch,
        history=state.history,
        global_step=state.global_step,
        train_seconds=state.train_seconds,
        samples_per_second=state.samples_seen / max(state.train_seconds, 1e-9),
        peak_memory_mb=memory.mb(),
        stopped_early=stopped_early,
        log_history=state.log_history,
        feature_cache=run.cache.status.to_dict(),
        nonfinite_skipped=state.nonfinite_skipped,
        auto_rates=state.auto_rates,
    )
    evaluator = run.data.evaluator
    ends_on = state.best_epoch if run.cfg.train.load_best_at_end else state.epoch
    if ends_on in run.kept and adapted is None:  # this process validated these very weights: refit the calibration
        preds, refs = run.kept[ends_on]
        evaluator.calibrate(preds, refs)
    else:  # resumed after that epoch, or AdaBN changed the statistics since
        metrics, preds, refs = _evaluate(run, 0, "validation (best)")
        if adapted is not None:
            result.best_metrics = metrics
    if evaluator.classification:
        result.confusion_matrix = confusion(preds, refs, len(run.raw.config.id2label))
    result.per_class = {"validation": evaluator.details(preds, refs)}
    result.predictions = (preds, refs)
    result.example_tables["validation"] = evaluator.example_table(preds, refs)
    if len(run.eval_loaders) > 1:
        result.test_metrics, test_preds, test_refs = _evaluate(run, 1, "test")
        result.per_class["test"] = evaluator.details(test_preds, test_refs)
        result.example_tables["test"] = evaluator.example_table(test_preds, test_refs)
        run.accelerator.print("test " + " ".join(f"{k}={v:.4f}" for k, v in result.test_metrics.items()))
    result.model_config = evaluator.config_updates()
    run.cache.close()  # the real frozen part again, for export
    if run.adaptation is not None:
        result.adapt = {**state.adapt, **(adapted or run.adaptation.finish(run))}
    if run.target_test_loader is not None:
        result.target_test_metrics, target_preds, target_refs = evaluate_loop(
            run.accelerator, run.model, run.target_test_loader, evaluator, desc="target test"
        )
        result.per_class["target_test"] = evaluator.details(target_preds, target_refs)
        result.example_tables["target_test"] = evaluator.example_table(target_preds, target_refs)
        run.accelerator.print("target_test " + " ".join(f"{k}={v:.4f}" for k, v in result.target_test_metrics.items()))
    finish_trackers(run.accelerator, run.cfg, result)
    return result


def _adapt_weights(run: TrainingRun, state: TrainState) -> dict[str, Any] | None:
    """AdaBN: the target's BatchNorm statistics go into the best weights before their final evaluations (uncached:
    the cached features were computed with the source's). Returns the method's record, or None when nothing changed."""
    if run.adaptation is None or run.adaptation.method != "adabn":
        return None
    run.cache.close()
    return {"validation_with_source_statistics": dict(state.best_metrics), **run.adaptation.finish(run)}


def _is_cnn(model: nn.Module) -> bool:
    return any(isinstance(m, nn.Conv2d) for m in model.modules()) and not any(
        "attention" in type(m).__name__.lower() for m in model.modules()
    )
