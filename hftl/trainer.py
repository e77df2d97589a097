"""The training loop on Accelerate: phases, evaluation, best model, early stopping, checkpoints.

The loop stays visible (prepare, accumulate, backward, clip, step, gather_for_metrics). Everything
about *what* trains comes from the `Plan`; everything about *what the data is* from the modality.

Example:
    >>> result = fit(cfg, model, layer_map, plan, data, run_dir)   # doctest: +SKIP
    >>> result.best_metrics["accuracy"]                             # doctest: +SKIP
"""

from __future__ import annotations

import functools
import math
import os
import resource
import signal
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from accelerate import Accelerator, DistributedDataParallelKwargs, InitProcessGroupKwargs
from accelerate.utils import ProjectConfiguration, broadcast_object_list
from safetensors.torch import load_file, save_file
from torch import nn
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from hftl import zero
from hftl.checkpoint import (
    atomic_write_text,
    gather_rng_states,
    latest_checkpoint,
    load_checkpoint,
    save_checkpoint,
    set_rng_state,
)
from hftl.config import LOWER_IS_BETTER, Config, best_metric_name
from hftl.data import EpochSampler, ExampleDataset, loader_workers
from hftl.errors import ConfigError, HftlError
from hftl.feature_cache import FeatureCache
from hftl.layers import LayerMap, format_trainable
from hftl.metrics import IGNORE, Evaluator
from hftl.sharding import (
    check_launch,
    check_supported,
    deepspeed_launch,
    is_deepspeed,
    is_sharded,
    load_model_state,
    load_optimizer_state,
    model_state,
    optimizer_state,
    torch_optimizer,
    unwrap_model,
    wrap_blocks,
)
from hftl.strategies import Plan, apply_phase, lr_lambda, param_groups, set_train_mode
from hftl.tracking import finish_trackers, log_with, start_trackers

BEST_WEIGHTS = "best.safetensors"


@dataclass
class TrainData:
    train: ExampleDataset
    validation: ExampleDataset
    collate: Callable[[list[dict]], dict]
    test: ExampleDataset | None = None
    evaluator: Evaluator = field(default_factory=Evaluator)
    train_lengths: list[int] | None = None  # per example, for data.group_by_length
    processor: Any = None  # part of the feature cache's key


@dataclass
class TrainResult:
    best_metrics: dict[str, float]
    best_epoch: int
    history: list[dict[str, Any]]
    global_step: int
    train_seconds: float
    samples_per_second: float
    peak_memory_mb: float
    test_metrics: dict[str, float] | None = None
    confusion_matrix: list[list[int]] | None = None
    stopped_early: bool = False
    log_history: list[dict[str, float]] = field(default_factory=list)
    feature_cache: dict[str, Any] | None = None


@dataclass
class _State:
    """What a checkpoint must carry besides tensors to continue exactly where the run stopped."""

    epoch: int = 0
    batch_in_epoch: int = 0
    global_step: int = 0
    samples_seen: int = 0
    train_seconds: float = 0.0
    phase: str = ""
    best_metric: float | None = None
    best_epoch: int = -1
    best_metrics: dict[str, float] = field(default_factory=dict)
    epochs_without_improvement: int = 0
    history: list[dict[str, Any]] = field(default_factory=list)
    log_history: list[dict[str, float]] = field(default_factory=list)
    num_processes: int = 0  # processes that wrote the checkpoint; 0 in checkpoints from before it was stored


def make_accelerator(cfg: Config, run_dir: Path, multi_phase: bool) -> Accelerator:
    """An Accelerator for the run: precision, accumulation, trackers writing to `run_dir/logs`."""
    t = cfg.train
    _allow_new_settings(t.mixed_precision, t.torch_compile)
    # Phases toggle requires_grad after DDP is built; frozen-for-now parameters then get no grads.
    kwargs = [DistributedDataParallelKwargs(find_unused_parameters=True)] if multi_phase else []
    trackers = log_with(t.report_to)
    check_launch(cfg)
    deepspeed = deepspeed_launch()
    if deepspeed and not torch.cuda.is_available():  # DeepSpeed on CPUs: Accelerate finds no backend by itself
        kwargs.append(InitProcessGroupKwargs(backend="gloo"))
    try:
        accelerator = Accelerator(
            # Without a GPU, launchers (torchrun, accelerate launch) give several processes but
            # Accelerate stays single-process unless told to use the CPU backend (gloo). Not under
            # DeepSpeed: cpu=True silently drops it (gloo comes from the kwargs handler above).
            cpu=not torch.cuda.is_available() and not deepspeed,
            mixed_precision=t.mixed_precision,
            dynamo_backend="inductor" if t.torch_compile else None,
            gradient_accumulation_steps=t.gradient_accumulation_steps,
            log_with=trackers,
            project_config=ProjectConfiguration(project_dir=str(run_dir), logging_dir=str(run_dir / "logs")),
            kwargs_handlers=kwargs,
        )
    except (ValueError, ImportError) as e:
        raise ConfigError(
            f"Accelerate refused train.mixed_precision={t.mixed_precision!r}: {str(e).splitlines()[0]}. "
            "fp16 needs a GPU or a recent CPU build of torch (use bf16 or no on a CPU)."
        ) from None
    check_supported(accelerator)
    if is_deepspeed(accelerator):  # hftl's batch size, accumulation, clipping become DeepSpeed's (refused if they differ)
        zero.configure(accelerator.state.deepspeed_plugin.deepspeed_config, cfg, accelerator.num_processes)
    launched = os.environ.get("ACCELERATE_MIXED_PRECISION", t.mixed_precision)
    if launched != t.mixed_precision:  # Accelerate takes the explicit argument over the launcher's setting
        accelerator.print(f"train.mixed_precision={t.mixed_precision} overrides the launcher's {launched} (hftl's config wins)")
    return accelerator


def _allow_new_settings(mixed_precision: str, compile_model: bool) -> None:
    """Let one process (a notebook, `hftl compare`) run bf16 after fp32, or compiled after not: Accelerate
    keeps these in a process-wide singleton that keeps the first run's values. Only a single process
    resets it; launched processes were started with their settings."""
    from accelerate.state import AcceleratorState, PartialState

    state = AcceleratorState._shared_state
    if not state or PartialState().num_processes != 1:
        return
    dynamo = state.get("dynamo_plugin")
    compiled = dynamo is not None and str(getattr(dynamo, "backend", "NO")) != "NO"
    if state.get("_mixed_precision") not in (None, mixed_precision) or compiled != compile_model:
        AcceleratorState._reset_state()


def _is_cnn(model: nn.Module) -> bool:
    return any(isinstance(m, nn.Conv2d) for m in model.modules()) and not any(
        "attention" in type(m).__name__.lower() for m in model.modules()
    )


class PeakMemory:
    """Peak memory of one run: CUDA max allocated, else the process's resident set sampled in a thread.

    ru_maxrss cannot be reset, so several runs in one process (`hftl compare`, notebooks) would all
    report the largest so far; sampling /proc/self/statm gives each run its own peak.
    """

    def __init__(self, interval: float = 0.05) -> None:
        self.interval, self.peak, self._stop = interval, 0, threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _rss(self) -> int:
        try:
            with open("/proc/self/statm") as f:
                return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
        except (OSError, ValueError, IndexError):
            return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # no /proc: the process peak (KiB on Linux)

    def _sample(self) -> None:
        while not self._stop.wait(self.interval):
            self.peak = max(self.peak, self._rss())

    def __enter__(self) -> PeakMemory:
        if torch.cuda.is_available():
            torch.cuda.reset_peak_memory_stats()
        self.peak = self._rss()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self._rss())

    def mb(self) -> float:
        if torch.cuda.is_available():
            return torch.cuda.max_memory_allocated() / 2**20
        return self.peak / 2**20


def _fault(name: str, step: int) -> None:
    """Fault injection for the crash/resume tests: SIGKILL this process at a chosen point."""
    if os.environ.get(name) == str(step):
        os.kill(os.getpid(), signal.SIGKILL)


def evaluate_loop(
    accelerator: Accelerator,
    model: nn.Module,
    loader: DataLoader,
    evaluator: Evaluator | None = None,
    desc: str = "eval",
    feed: Callable[[dict], None] | None = None,
) -> tuple[dict[str, float], list[Any], list[Any]]:
    """Loss and the task's metrics over `loader`, gathered across processes without duplicates.

    Sequence predictions (tags, CTC frames) are padded with IGNORE to a common length before the
    gather, since processes' batches differ in length; the evaluator strips the padding.
    `feed` hands a batch's cached features to the feature cache's stand-ins.
    """
    evaluator = evaluator or Evaluator()
    raw = unwrap_model(accelerator, model)
    model.eval()
    preds, refs, losses, count = [], [], 0.0, 0
    with torch.no_grad():
        for batch in tqdm(loader, desc=desc, leave=False, disable=not accelerator.is_local_main_process):
            if feed is not None:
                feed(batch)
            out = model(**batch)
            p, r = evaluator.predictions(out.logits, batch, raw), batch["labels"]
            if p.dim() > 1:
                p = accelerator.pad_across_processes(p.contiguous(), dim=1, pad_index=IGNORE)
                r = accelerator.pad_across_processes(r.contiguous(), dim=1, pad_index=IGNORE)
            p, r = accelerator.gather_for_metrics((p, r))
            per_example = evaluator.example_losses(out.logits.detach(), batch["labels"])
            if per_example is None:  # sequence tasks: the batch mean, once per example
                per_example = out.loss.detach().float().repeat(len(batch["labels"]))
            loss = accelerator.gather_for_metrics(per_example)
            preds += p.tolist()
            refs += r.tolist()
            losses += loss.sum().item()
            count += loss.numel()
    metrics = evaluator.compute(preds, refs)
    metrics["loss"] = losses / max(count, 1)
    return metrics, preds, refs


def fit(
    cfg: Config,
    model: nn.Module,
    layer_map: LayerMap,
    plan: Plan,
    data: TrainData,
    run_dir: Path,
    accelerator: Accelerator | None = None,
) -> TrainResult:
    """Train `model` following `plan`; resume from `run_dir/checkpoints` when `cfg.resume`."""
    t = cfg.train
    metric_name = best_metric_name(cfg)
    accelerator = accelerator or make_accelerator(cfg, run_dir, len(plan.phases) > 1)
    ckpt_dir = run_dir / "checkpoints"
    # The same module object DDP wraps and `unwrap_model` returns, so the stand-ins it installs are seen.
    cache = FeatureCache(
        cfg,
        model,
        layer_map,
        data,
        accelerator,
        engine_refusal="the model is sharded with FSDP or DeepSpeed, which the stand-ins are not tested with"
        if (is_sharded(accelerator) or is_deepspeed(accelerator))
        else None,
    )
    collate = cache.collate(data.collate)
    if is_deepspeed(accelerator) and (dtype := zero.compute_dtype(accelerator)) is not None:
        collate = functools.partial(zero.cast_inputs, collate, dtype)

    workers, pin = loader_workers(cfg, accelerator), accelerator.device.type == "cuda"
    train_loader = DataLoader(
        data.train,
        batch_size=t.batch_size,
        sampler=EpochSampler(len(data.train), t.seed, lengths=data.train_lengths, batch_size=t.batch_size),
        collate_fn=collate,
        num_workers=workers,
        pin_memory=pin,
        generator=torch.Generator().manual_seed(t.seed),  # keeps the global RNG untouched by iteration
    )
    eval_loaders = [
        DataLoader(ds, batch_size=t.eval_batch_size or t.batch_size, collate_fn=collate, num_workers=workers, pin_memory=pin)
        for ds in (data.validation, data.test)
        if ds is not None
    ]
    if pin and _is_cnn(model):  # cuDNN's fastest convolutions want NHWC; inputs follow the weights' format
        model.to(memory_format=torch.channels_last)
    groups = param_groups(model, layer_map, plan, t)
    if not groups:
        raise HftlError("nothing to train: the strategy leaves no trainable parameter in this model")
    # Fused AdamW (the Trainer's default): one kernel over all parameters instead of a Python loop per
    # tensor, 5x faster a step on a CPU for a small model's 80 tensors. Not under FSDP (DTensor parameters).
    optimizer = torch.optim.AdamW(groups, lr=t.learning_rate, fused=not is_sharded(accelerator))
    # DDP registers only parameters that require grad when it wraps the model: enable every parameter
    # any phase trains, then narrow to the current phase per epoch.
    for name, param in model.named_parameters():
        param.requires_grad_(name in plan.trainable_any)
    wrap_blocks(accelerator, model, layer_map.blocks)
    model, optimizer, train_loader, *eval_loaders = accelerator.prepare(model, optimizer, train_loader, *eval_loaders)
    raw = unwrap_model(accelerator, model)
    if is_deepspeed(accelerator):
        accelerator.print(zero.describe(model))

    steps_per_epoch = math.ceil(len(train_loader) / t.gradient_accumulation_steps)
    total_steps = min(t.epochs * steps_per_epoch, t.max_steps or math.inf)
    # Under DeepSpeed the step reads the learning rates of the torch optimizer inside ZeRO's: schedule those.
    schedule = lr_lambda(plan, steps_per_epoch, total_steps, t)
    scheduler = torch.optim.lr_scheduler.LambdaLR(torch_optimizer(accelerator, optimizer), schedule)
    checkpointed = plan.trainable_any | {name for name, _ in raw.named_buffers()}

    state = _State()
    resume_rng = None
    latest = latest_checkpoint(ckpt_dir) if cfg.resume else None
    if latest is not None:
        loaded = load_checkpoint(latest, accelerator.process_index, accelerator.num_processes)
        missing = [k for k in loaded["tensors"] if k not in raw.state_dict()]
        if missing:
            raise HftlError(
                f"checkpoint {latest} does not fit this model (unknown tensors {missing[:3]}); was the config changed?"
            )
        load_model_state(accelerator, model, loaded["tensors"])
        load_optimizer_state(accelerator, model, optimizer.optimizer, loaded["optimizer"], latest)
        scheduler.load_state_dict(loaded["scheduler"])
        state = _State(**loaded["state"])
        resume_rng = loaded["rng"]
        accelerator.print(f"resuming from {latest} (epoch {state.epoch + 1}, step {state.global_step}, phase {state.phase})")
        moved = _rescale_position(state, accelerator.num_processes, scheduler, steps_per_epoch, t.gradient_accumulation_steps)
        if moved or not loaded["rng_exact"]:
            accelerator.print(
                (moved or "the checkpoint holds no RNG state for each of these processes")
                + ": dropout draws will differ from an uninterrupted run"
            )
    state.num_processes = accelerator.num_processes

    start_trackers(accelerator, cfg, run_dir, resumed=latest is not None)
    accelerator.print(format_trainable_for(raw, layer_map, plan.phase_at(state.epoch)))

    def save(final_epoch_state: _State) -> None:
        accelerator.wait_for_everyone()
        rngs = gather_rng_states()  # every rank's, so each resumes its own stream
        # Collectives under FSDP (each process holds a shard): every process gathers, the main one writes.
        tensors = {k: v for k, v in model_state(accelerator, model).items() if k in checkpointed}
        optimizer_tensors = optimizer_state(accelerator, model, optimizer.optimizer)
        tmp = None
        if is_deepspeed(accelerator):  # each process writes its optimizer shard into the folder main then renames
            tmp = ckpt_dir / broadcast_object_list([f".tmp-{uuid.uuid4().hex}"])[0]
            if accelerator.is_main_process:
                tmp.mkdir(parents=True)
            accelerator.wait_for_everyone()
            zero.save_shard(tmp, accelerator.process_index, optimizer.optimizer)
            accelerator.wait_for_everyone()
        if accelerator.is_main_process:
            if os.environ.get("HFTL_FAULT_KILL_IN_CHECKPOINT") == str(final_epoch_state.global_step):
                partial = ckpt_dir / ".tmp-crash"
                partial.mkdir(parents=True, exist_ok=True)
                save_file({k: v.contiguous() for k, v in list(tensors.items())[:1]}, str(partial / "weights.safetensors"))
                _fault("HFTL_FAULT_KILL_IN_CHECKPOINT", final_epoch_state.global_step)
            save_checkpoint(
                ckpt_dir,
                final_epoch_state.global_step,
                tensors,
                optimizer_tensors,
                scheduler.state_dict(),
                final_epoch_state.__dict__,
                rngs,
                t.save_total_limit,
                tmp,
            )
        accelerator.wait_for_everyone()

    memory = PeakMemory().__enter__()  # stopped after the loop; a daemon thread if the run dies
    progress = tqdm(
        total=total_steps,
        initial=state.global_step,
        desc="train",
        disable=not accelerator.is_local_main_process,
        dynamic_ncols=True,
    )
    stopped_early = False
    running_loss, running_count = 0.0, 0
    cached_phase = None
    while state.epoch < t.epochs and state.global_step < total_steps and not stopped_early:
        epoch_started = time.perf_counter()
        phase = plan.phase_at(state.epoch)
        if phase.name != state.phase and state.phase:
            accelerator.print(f"phase {phase.name} from epoch {state.epoch + 1}:\n" + format_trainable_for(raw, layer_map, phase))
        state.phase = phase.name
        if phase.name != cached_phase:  # fill or reuse the cache of what this phase keeps frozen
            cache.activate(phase)
            cached_phase = phase.name
            state.train_seconds += time.perf_counter() - epoch_started
            for dl, ds in ((train_loader, data.train), *zip(eval_loaders, (data.validation, data.test))):
                dl.num_workers = 0 if ds.cached is not None else workers  # workers only cost time on cached reads
        apply_phase(raw, phase)
        clipped = [p for p in raw.parameters() if p.requires_grad]  # once per epoch, not per step
        set_train_mode(raw, layer_map, phase, cfg.strategy.batch_norm)
        train_loader.set_epoch(state.epoch)
        data.train.set_epoch(state.epoch)
        loader = accelerator.skip_first_batches(train_loader, state.batch_in_epoch) if state.batch_in_epoch else train_loader
        if resume_rng is not None:  # restore RNG last, after everything that may have drawn from it
            set_rng_state(resume_rng)
            resume_rng = None
        started = time.perf_counter()
        for batch in loader:
            cache.feed_batch(batch)
            with accelerator.accumulate(model):
                loss = model(**batch).loss
                accelerator.backward(loss)  # under DeepSpeed also the clipping and the optimizer step
                if accelerator.sync_gradients and t.max_grad_norm:
                    accelerator.clip_grad_norm_(clipped, t.max_grad_norm)
                optimizer.step()
                if accelerator.sync_gradients and not accelerator.optimizer_step_was_skipped:
                    scheduler.step()
                optimizer.zero_grad(set_to_none=True)
            state.batch_in_epoch += 1
            state.samples_seen += len(batch["labels"]) * accelerator.num_processes
            running_loss += loss.detach().float()  # summed on the device: an .item() per step would sync
            running_count += 1
            if not accelerator.sync_gradients:
                continue
            state.global_step += 1
            progress.update(1)
            if state.global_step % t.logging_steps == 0 or state.global_step == total_steps:
                entry = {
                    "step": state.global_step,
                    "epoch": state.epoch + state.batch_in_epoch / len(train_loader),
                    "loss": running_loss.item() / running_count,
                    "lr": scheduler.get_last_lr()[-1],
                }
                state.log_history.append(entry)
                accelerator.log({"train/loss": entry["loss"], "train/lr": entry["lr"]}, step=state.global_step)
                progress.set_postfix(loss=f"{entry['loss']:.4f}", lr=f"{entry['lr']:.2e}")
                running_loss, running_count = 0.0, 0
            if t.save_steps and state.global_step % t.save_steps == 0 and state.batch_in_epoch < len(train_loader):
                state.train_seconds += time.perf_counter() - started
                started = time.perf_counter()
                save(state)
            _fault("HFTL_FAULT_KILL_AFTER_STEP", state.global_step)
            if state.global_step >= total_steps:
                break
        state.train_seconds += time.perf_counter() - started

        epoch_seconds = time.perf_counter() - epoch_started  # the cache fill counts in its epoch
        metrics, _, _ = evaluate_loop(
            accelerator, model, eval_loaders[0], data.evaluator, desc="validation", feed=cache.feed_batch
        )
        record = {
            "epoch": state.epoch + 1,
            "step": state.global_step,
            "phase": phase.name,
            "epoch_seconds": epoch_seconds,
            **{f"eval_{k}": v for k, v in metrics.items()},
        }
        state.history.append(record)
        accelerator.log({f"eval/{k}": v for k, v in metrics.items()}, step=state.global_step)
        # Compare as "higher is better": error rates and loss are negated.
        score = metrics[metric_name] * (-1 if metric_name in LOWER_IS_BETTER else 1)
        if state.best_metric is None or score > state.best_metric:
            state.best_metric, state.best_epoch, state.best_metrics = score, state.epoch + 1, metrics
            state.epochs_without_improvement = 0
            _save_best(accelerator, model, checkpointed, ckpt_dir)
        else:
            state.epochs_without_improvement += 1
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
        save(state)
        _fault("HFTL_FAULT_KILL_AFTER_EPOCH", state.epoch)
    progress.close()
    memory.__exit__()

    best_file = ckpt_dir / BEST_WEIGHTS
    if t.load_best_at_end and best_file.exists():  # end on the best epoch's weights, not merely the last
        load_model_state(accelerator, model, load_file(str(best_file)))
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
        feature_cache=cache.status.to_dict(),
    )
    _, preds, refs = evaluate_loop(
        accelerator, model, eval_loaders[0], data.evaluator, desc="validation (best)", feed=cache.feed_batch
    )
    from hftl.metrics import confusion

    if data.evaluator.classification:
        result.confusion_matrix = confusion(preds, refs, len(raw.config.id2label))
    if len(eval_loaders) > 1:
        result.test_metrics, _, _ = evaluate_loop(
            accelerator, model, eval_loaders[1], data.evaluator, desc="test", feed=cache.feed_batch
        )
        accelerator.print("test " + " ".join(f"{k}={v:.4f}" for k, v in result.test_metrics.items()))
    cache.close()  # the real frozen part again, for export
    finish_trackers(accelerator, cfg, result)
    return result


def _rescale_position(state: _State, processes: int, scheduler: Any, steps_per_epoch: int, accumulation: int) -> str | None:
    """Carry a checkpoint's place in the epoch over to another process count, through samples consumed.

    `batch_in_epoch` counts each process's batches, and the processes take the epoch's batches in
    turn, so `batch_in_epoch x processes` batches of the epoch are done whatever the count. The step
    (and the LR schedule with it) moves to where a run on `processes` processes would be at that point,
    so the run ends at the step count and the LR an uninterrupted run on `processes` would.
    Returns a line for the user, or None when the count is unchanged.
    """
    saved = state.num_processes or processes  # older checkpoints: assume unchanged, as they were read before
    if saved == processes:
        return None
    done = state.batch_in_epoch * saved  # batch_size-sized batches of this epoch already trained on
    state.batch_in_epoch = done // processes  # rounding down trains on at most processes - 1 batches twice
    state.global_step = state.epoch * steps_per_epoch + state.batch_in_epoch // accumulation
    scheduler.last_epoch = state.global_step - 1
    scheduler.step()  # sets the learning rates for the new position
    return (
        f"checkpoint written by {saved} process(es), resumed on {processes}: epoch {state.epoch + 1} continues after "
        f"{done} of its batches, at step {state.global_step}"
    )


def _save_best(accelerator: Accelerator, model: nn.Module, names: set[str], ckpt_dir: Path) -> None:
    tensors = model_state(accelerator, model)  # every process: a collective under FSDP
    if not accelerator.is_main_process:
        return
    ckpt_dir.mkdir(parents=True, exist_ok=True)
    tmp = ckpt_dir / f".{BEST_WEIGHTS}.tmp"
    save_file({k: v.detach().contiguous().cpu() for k, v in tensors.items() if k in names}, str(tmp))
    os.replace(tmp, ckpt_dir / BEST_WEIGHTS)


def format_trainable_for(raw: nn.Module, layer_map: LayerMap, phase: Any) -> str:
    """What trains in `phase`, part by part (requires_grad set to the phase for the count)."""
    before = {n: p.requires_grad for n, p in raw.named_parameters()}
    apply_phase(raw, phase)
    text = f"what trains ({phase.name}):\n" + format_trainable(raw, layer_map)
    for n, p in raw.named_parameters():
        p.requires_grad_(before[n])
    return text


__all__ = ["TrainData", "TrainResult", "fit", "evaluate_loop", "make_accelerator", "atomic_write_text"]
