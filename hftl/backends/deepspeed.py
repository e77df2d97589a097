"""DeepSpeed ZeRO (stages 1-3): the engine steps, clips and casts; hftl's config fills its settings.

What ZeRO does differently, and how hftl meets it (the ZeRO-specific helpers live in `zero.py`):
the DeepSpeed config is filled from hftl's and refused where it disagrees; under bf16/fp16 the inputs
are cast to the model's dtype; checkpoints and `model/` take the trained weights from the fp32 masters
(frozen ones stay the pretrained ones); each process writes its own optimizer shard.

Example:
    >>> DeepSpeedBackend.check_launch(cfg)   # doctest: +SKIP  (under `accelerate launch` with a DeepSpeed config)
"""

from __future__ import annotations

import contextlib
import functools
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch
from accelerate import InitProcessGroupKwargs
from accelerate.utils import broadcast_object_list
from torch import nn

from hftl.backends import zero
from hftl.backends.base import SHARDED_REFUSAL, Backend
from hftl.config import Config


class DeepSpeedBackend(Backend):
    name = "deepspeed"
    variable = "ACCELERATE_USE_DEEPSPEED"
    feature_cache_refusal = SHARDED_REFUSAL
    range_test_refusal = "the range test does not run on sharded parameters"

    @classmethod
    def check_launch(cls, cfg: Config | None) -> None:
        """DeepSpeed must import, and the launch's DeepSpeed config must agree with `cfg` (see `zero.configure`)."""
        zero.require_deepspeed()
        if cfg is not None:
            zero.launch_config(cfg)

    @classmethod
    def accelerator_kwargs(cls) -> dict[str, Any]:
        # cpu=True would silently drop DeepSpeed; on CPUs Accelerate finds no process-group backend by itself.
        handlers = [] if torch.cuda.is_available() else [InitProcessGroupKwargs(backend="gloo")]
        return {"cpu": False, "kwargs_handlers": handlers}

    def configure(self, cfg: Config) -> None:
        """hftl's batch size, accumulation and clipping become DeepSpeed's (refused if they differ)."""
        zero.configure(self.accelerator.state.deepspeed_plugin.deepspeed_config, cfg, self.accelerator.num_processes)

    def describe(self, model: nn.Module) -> str | None:
        return zero.describe(model)

    def collate(self, collate: Callable[[list[dict]], dict]) -> Callable[[list[dict]], dict]:
        dtype = zero.compute_dtype(self.accelerator)
        return collate if dtype is None else functools.partial(zero.cast_inputs, collate, dtype)

    def torch_optimizer(self, optimizer: Any) -> torch.optim.Optimizer:
        return optimizer.optimizer.optimizer  # the torch optimizer inside ZeRO's, whose learning rates the step reads

    def unprobed(self) -> Any:
        return contextlib.nullcontext()  # DeepSpeed is this run's engine: it is imported anyway

    def model_state(self, model: nn.Module) -> dict[str, torch.Tensor]:
        """The trained parameters (fp32 masters) and buffers; frozen parameters are the pretrained ones."""
        return zero.full_fp32_state(self.unwrap(model), keep=self.accelerator.is_main_process)

    def load_model_state(self, model: nn.Module, tensors: dict[str, torch.Tensor]) -> None:
        zero.load_full_fp32_state(self.unwrap(model), tensors)

    def optimizer_state(self, model: nn.Module, optimizer: Any) -> dict[str, Any]:
        """Only how the state is split: each process writes its own shard (`optimizer_shards`)."""
        return zero.optimizer_meta(self.accelerator)

    def load_optimizer_state(self, model: nn.Module, optimizer: Any, state: dict, checkpoint: Path | None = None) -> None:
        self.refuse_foreign(state)
        zero.load_shard(self.accelerator, optimizer, state, checkpoint)

    def optimizer_shards(self, checkpoints: Path, optimizer: Any) -> Path | None:
        """Every process writes its shard into one `.tmp-*` folder (named by the main process), which the
        main process then completes and renames into the checkpoint."""
        accelerator = self.accelerator
        tmp = checkpoints / broadcast_object_list([f".tmp-{uuid.uuid4().hex}"])[0]
        if accelerator.is_main_process:
            tmp.mkdir(parents=True)
        accelerator.wait_for_everyone()
        zero.save_shard(tmp, accelerator.process_index, optimizer)
        accelerator.wait_for_everyone()
        return tmp

    def exportable_model(self, model: nn.Module, rebuild: Callable[[], nn.Module]) -> nn.Module | None:
        full = self.model_state(model)  # a collective: every process gathers the masters
        if not self.accelerator.is_main_process:
            return None
        with _without_zero3_init():  # frozen parameters: the pretrained ones, not DeepSpeed's 16-bit casts
            return self._rebuilt_with(rebuild, full, partial=True)


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
