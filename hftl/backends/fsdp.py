"""FSDP2: each process holds a shard of every parameter and of the optimizer state.

Checkpoints, the best epoch's weights and `model/` need whole tensors: every process takes part in
gathering them (a collective), and only the main process writes. The optimizer state is gathered
keyed by parameter name. FSDP1 is refused with what to use instead; so is FSDP on CPUs, where
Accelerate would silently train unsharded.

Example:
    >>> FSDPBackend.check_launch(cfg)          # doctest: +SKIP  (refused on a machine without GPU)
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from accelerate.utils import DistributedType
from torch import nn

from hftl.backends.base import SHARDED_REFUSAL, Backend
from hftl.config import Config
from hftl.utils.errors import ConfigError

CPU_PROCESSES = "torchrun --nproc_per_node N -m hftl.cli train ... (or accelerate launch --multi_gpu --num_processes N)"


class FSDPBackend(Backend):
    name = "fsdp"
    variable = "ACCELERATE_USE_FSDP"
    feature_cache_refusal = SHARDED_REFUSAL
    range_test_refusal = "the range test does not run on sharded parameters"
    fused_optimizer = False  # DTensor parameters

    @classmethod
    def check_launch(cls, cfg: Config | None) -> None:
        if not torch.cuda.is_available():
            raise ConfigError(
                "this launch asked for FSDP, but Accelerate runs FSDP on GPUs only and this machine has none (it would "
                f"train unsharded). On CPUs, drop the FSDP config and use {CPU_PROCESSES}"
            )

    def configure(self, cfg: Config) -> None:
        if self.accelerator.distributed_type == DistributedType.FSDP and not self.accelerator.is_fsdp2:
            raise ConfigError(
                "FSDP1 is not supported by hftl (frozen and trainable parameters share its flat parameters): "
                "set fsdp_version: 2 in the accelerate config, as configs/accelerate/fsdp.yaml does"
            )

    def prepare_model(self, model: nn.Module, blocks: list[str]) -> None:
        """Shard each backbone block (the layer map's) as one unit, unless the accelerate config names classes.

        Accelerate's default, the model's `_no_split_modules`, can name the embeddings module too (BERT's
        BertEmbeddings), whose word embeddings Accelerate 1.15 then shards a second time, and fails.
        """
        plugin = self.accelerator.state.fsdp_plugin
        if blocks and plugin.transformer_cls_names_to_wrap is None:
            base = model.get_base_model() if hasattr(model, "get_base_model") else model  # LoRA: the peft-wrapped task model
            plugin.transformer_cls_names_to_wrap = sorted({type(base.get_submodule(name)).__name__ for name in blocks})

    def model_state(self, model: nn.Module) -> dict[str, torch.Tensor]:
        return self.accelerator.get_state_dict(model)  # whole on the main process only

    def load_model_state(self, model: nn.Module, tensors: dict[str, torch.Tensor]) -> None:
        from torch.distributed.checkpoint.state_dict import StateDictOptions, set_model_state_dict

        set_model_state_dict(model, tensors, options=StateDictOptions(full_state_dict=True, strict=False))

    def optimizer_state(self, model: nn.Module, optimizer: Any) -> dict[str, Any]:
        from torch.distributed.checkpoint.state_dict import StateDictOptions, get_optimizer_state_dict

        return get_optimizer_state_dict(model, optimizer, options=StateDictOptions(full_state_dict=True, cpu_offload=True))

    def load_optimizer_state(self, model: nn.Module, optimizer: Any, state: dict, checkpoint: Path | None = None) -> None:
        from torch.distributed.checkpoint.state_dict import StateDictOptions, set_optimizer_state_dict

        self.refuse_foreign(state)
        set_optimizer_state_dict(model, optimizer, state, options=StateDictOptions(full_state_dict=True))

    def exportable_model(self, model: nn.Module, rebuild: Callable[[], nn.Module]) -> nn.Module | None:
        full = self.model_state(model)  # a collective: every process gathers
        return self._rebuilt_with(rebuild, full, partial=False) if self.accelerator.is_main_process else None
