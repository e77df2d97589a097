"""The run's Accelerator: precision, accumulation, trackers, and what the launched engine needs.

Example:
    >>> accelerator = make_accelerator(cfg, Path(cfg.output_dir), multi_phase=False)   # doctest: +SKIP
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from accelerate import Accelerator, DistributedDataParallelKwargs
from accelerate.utils import ProjectConfiguration

from hftl.backends import backend_for, check_launch, launched_backend
from hftl.config import Config
from hftl.training.tracking import log_with
from hftl.utils.errors import ConfigError


def make_accelerator(cfg: Config, run_dir: Path, multi_phase: bool) -> Accelerator:
    """An Accelerator for the run: precision, accumulation, trackers writing to `run_dir/logs`.

    The launch is checked first (`check_launch`), and the engine's own settings filled from `cfg` after
    (`Backend.configure`: DeepSpeed's batch size, accumulation and clipping become hftl's).
    """
    t = cfg.train
    _allow_new_settings(t.mixed_precision, t.torch_compile)
    trackers = log_with(t.report_to)
    check_launch(cfg)
    engine = launched_backend().accelerator_kwargs()
    # Phases toggle requires_grad after DDP is built; frozen-for-now parameters then get no grads.
    ddp = [DistributedDataParallelKwargs(find_unused_parameters=True)] if multi_phase else []
    try:
        accelerator = Accelerator(
            cpu=engine["cpu"],
            mixed_precision=t.mixed_precision,
            dynamo_backend="inductor" if t.torch_compile else None,
            gradient_accumulation_steps=t.gradient_accumulation_steps,
            log_with=trackers,
            project_config=ProjectConfiguration(project_dir=str(run_dir), logging_dir=str(run_dir / "logs")),
            kwargs_handlers=ddp + engine["kwargs_handlers"],
        )
    except (ValueError, ImportError) as e:
        raise ConfigError(
            f"Accelerate refused train.mixed_precision={t.mixed_precision!r}: {str(e).splitlines()[0]}. "
            "fp16 needs a GPU or a recent CPU build of torch (use bf16 or no on a CPU)."
        ) from None
    backend_for(accelerator).configure(cfg)
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


def describe_launch(accelerator: Accelerator, cfg: Config) -> dict[str, Any]:
    """The launch as `hftl train` prints it and metrics.json records it: processes, backend, effective batch.

    Example:
        >>> describe_launch(accelerator, cfg)["text"]   # doctest: +SKIP
        '2 processes (gloo) x 16 x accumulation 1 = 32 per step'
    """
    n, t = accelerator.num_processes, cfg.train
    backend = getattr(accelerator.state, "backend", None) or accelerator.device.type
    per_step = n * t.batch_size * t.gradient_accumulation_steps
    text = f"{n} process{'es' if n > 1 else ''} ({backend}) x {t.batch_size} x accumulation {t.gradient_accumulation_steps}"
    return {
        "processes": n,
        "backend": backend,
        "device": accelerator.device.type,
        "batch_size_per_process": t.batch_size,
        "gradient_accumulation_steps": t.gradient_accumulation_steps,
        "examples_per_step": per_step,
        "text": f"{text} = {per_step} per step",
    }
