"""The engine interface, and its plain implementation: one process, or DDP over several.

A backend answers everything that differs between training engines, so the loop, the checkpointer,
the export and the feature cache never ask which engine they run on: the Accelerator's settings for a
launch, set-up checks, the model and optimizer state checkpoints hold, the optimizer's per-process
shards, the model `save_pretrained` may write, and whether the feature cache may stand in for frozen
parts. FSDP and DeepSpeed override what they do differently (`fsdp.py`, `deepspeed.py`).

Example:
    >>> backend = backend_for(accelerator)                   # doctest: +SKIP
    >>> tensors = backend.model_state(model)                 # doctest: +SKIP  (every process calls it)
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
from accelerate import Accelerator
from accelerate.utils import other as accelerate_other
from torch import nn

from hftl.config import Config
from hftl.utils.errors import HftlError


def launched(variable: str) -> bool:
    """Whether `accelerate launch` set `variable` (ACCELERATE_USE_DEEPSPEED, ACCELERATE_USE_FSDP) for these processes."""
    return os.environ.get(variable, "false").lower() == "true"


@contextmanager
def deepspeed_unprobed(deepspeed_run: bool = False) -> Iterator[None]:
    """Within it, unwrapping a model (Accelerate's, and transformers' in `save_pretrained`) does not import
    DeepSpeed to test for its engine class, unless the run uses DeepSpeed or something imported it already.

    Accelerate imports DeepSpeed whenever it is installed. That import takes 1.4 s and sets
    PYTORCH_NVML_BASED_CUDA_CHECK=1 for the whole process; from then on, on a machine without a GPU, every
    `torch.cuda.is_available()` tries to load NVML (0.14 ms), and the torch optimizer asks once a step: a
    tenth of a cached head-only step. A model that no DeepSpeed plugin prepared is never a DeepSpeed
    engine, so skipping the test changes nothing else.

    Example:
        >>> with deepspeed_unprobed():             # doctest: +SKIP
        ...     model.save_pretrained("out")
    """
    probe = getattr(accelerate_other, "is_deepspeed_available", None)
    if probe is None or deepspeed_run or "deepspeed" in sys.modules:
        yield
        return
    accelerate_other.is_deepspeed_available = lambda: False
    try:
        yield
    finally:
        accelerate_other.is_deepspeed_available = probe


def written_by(optimizer_state: dict[str, Any]) -> str:
    """The backend that wrote a checkpoint's optimizer state: its shape tells (see each `optimizer_state`)."""
    if "deepspeed_zero_stage" in optimizer_state:
        return "deepspeed"
    by_name = any(isinstance(p, str) for group in optimizer_state["param_groups"] for p in group["params"])
    return "fsdp" if by_name else "plain"


# Under FSDP and DeepSpeed the frozen weights are gathered or cast, which the cache's stand-ins are not tested with.
SHARDED_REFUSAL = "the model is sharded with FSDP or DeepSpeed, which the stand-ins are not tested with"


class Backend:
    """Plain training: one process, or DDP (every process holds the whole model and optimizer)."""

    name = "plain"
    variable: str | None = None  # the environment variable `accelerate launch` sets to ask for this engine
    feature_cache_refusal: str | None = None  # why the feature cache may not run under this engine, or None
    fused_optimizer = True  # fused AdamW: one kernel over all parameters (not on FSDP's DTensors)
    # Why the range tests of train.learning_rate / head_learning_rate: auto cannot run under this engine (they
    # train the parameters outside the engine for a moment), or None.
    range_test_refusal: str | None = None

    def __init__(self, accelerator: Accelerator) -> None:
        self.accelerator = accelerator

    # -- the launch, before the Accelerator exists ----------------------------------------------
    @classmethod
    def is_launched(cls) -> bool:
        return cls.variable is not None and launched(cls.variable)

    @classmethod
    def check_launch(cls, cfg: Config | None) -> None:
        """Refuse, before any work, a launch of this engine that hftl would not run as asked."""

    @classmethod
    def accelerator_kwargs(cls) -> dict[str, Any]:
        """What `Accelerator(...)` needs for this engine besides the run's own settings."""
        # Without a GPU, launchers (torchrun, accelerate launch) give several processes but Accelerate
        # stays single-process unless told to use the CPU backend (gloo).
        return {"cpu": not torch.cuda.is_available(), "kwargs_handlers": []}

    # -- set-up ----------------------------------------------------------------------------------
    def configure(self, cfg: Config) -> None:
        """Check the Accelerator built for the run, and fill the engine's settings from `cfg`."""

    def prepare_model(self, model: nn.Module, blocks: list[str]) -> None:
        """Ready the model for `accelerator.prepare` (FSDP: which modules are sharded as one unit)."""

    def describe(self, model: nn.Module) -> str | None:
        """A line on how the engine trains, printed after `prepare`; None when there is nothing to add."""
        return None

    def collate(self, collate: Callable[[list[dict]], dict]) -> Callable[[list[dict]], dict]:
        """The batch collator, adapted to the engine (DeepSpeed: inputs in the model's dtype)."""
        return collate

    def torch_optimizer(self, optimizer: Any) -> torch.optim.Optimizer:
        """The torch optimizer whose param_groups' learning rates a step reads (`optimizer`: Accelerate's wrapper)."""
        return optimizer.optimizer

    def unwrap(self, model: nn.Module) -> nn.Module:
        """`accelerator.unwrap_model(model)`, without importing DeepSpeed into a run that does not use it."""
        with self.unprobed():
            return self.accelerator.unwrap_model(model)

    def unprobed(self) -> Any:
        """A context in which `save_pretrained` does not import DeepSpeed (`deepspeed_unprobed`)."""
        return deepspeed_unprobed(False)

    # -- state -----------------------------------------------------------------------------------
    def model_state(self, model: nn.Module) -> dict[str, torch.Tensor]:
        """The full model state dict; under FSDP and DeepSpeed a collective every process calls."""
        return self.unwrap(model).state_dict()  # what get_state_dict does here, without its DeepSpeed import

    def load_model_state(self, model: nn.Module, tensors: dict[str, torch.Tensor]) -> None:
        """Load full tensors (a subset of the model's); every process calls it."""
        self.unwrap(model).load_state_dict(tensors, strict=False)

    def optimizer_state(self, model: nn.Module, optimizer: Any) -> dict[str, Any]:
        """What `optimizer.pt` holds (`optimizer`: the torch optimizer inside Accelerate's wrapper)."""
        return optimizer.state_dict()

    def load_optimizer_state(self, model: nn.Module, optimizer: Any, state: dict, checkpoint: Path | None = None) -> None:
        """Load an optimizer state this engine wrote; one another engine wrote is refused with how to resume it."""
        self.refuse_foreign(state)
        optimizer.load_state_dict(state)

    def refuse_foreign(self, state: dict[str, Any]) -> None:
        """Refuse an optimizer state written under another engine, saying how it was written."""
        written = written_by(state)
        if written == self.name:
            return
        if written == "deepspeed":
            stage, processes = state["deepspeed_zero_stage"], state["processes"]
            how = (
                f"under DeepSpeed ZeRO-{stage} on {processes} process(es); resume it with accelerate launch --config_file "
                f"configs/accelerate/deepspeed_zero{stage}.yaml --num_processes {processes} -m hftl.cli train ... resume=true"
            )
        elif self.name == "deepspeed":
            how = "without DeepSpeed; resume it without the DeepSpeed config (plain, DDP or FSDP, as it was written)"
        else:
            written_how = "with FSDP" if written == "fsdp" else "without FSDP"
            how = f"{written_how}; resume it the same way (with or without the FSDP config)"
        raise HftlError(f"this checkpoint was written {how}")

    def optimizer_shards(self, checkpoints: Path, optimizer: Any) -> Path | None:
        """Write the optimizer's per-process shards into a new `.tmp-*` folder the checkpoint is then built in;
        None when the optimizer state is whole (written by the main process with the rest)."""
        return None

    # -- export ----------------------------------------------------------------------------------
    def exportable_model(self, model: nn.Module, rebuild: Callable[[], nn.Module]) -> nn.Module | None:
        """A plain model holding the trained weights, for `save_pretrained` and the LoRA merge, on the main
        process (None elsewhere). A collective under FSDP and DeepSpeed: every process calls it.

        `rebuild` builds the run's model afresh (same seed and code path), for engines whose model is not
        plain (sharded parameters, 16-bit casts).
        """
        return self.unwrap(model) if self.accelerator.is_main_process else None

    def _rebuilt_with(self, rebuild: Callable[[], nn.Module], tensors: dict[str, torch.Tensor], partial: bool) -> nn.Module:
        """The rebuilt model holding `tensors`; `partial`: only the trained ones, the rest stays pretrained."""
        with torch.random.fork_rng():
            model = rebuild()
        result = model.load_state_dict(tensors, strict=False)
        if result.unexpected_keys or (result.missing_keys and not partial):
            wrong = result.unexpected_keys or result.missing_keys
            raise HftlError(f"the trained weights do not fit the rebuilt model ({wrong[:3]}); was the config changed?")
        return model
