"""Sharded training: what hftl runs under FSDP2 and DeepSpeed ZeRO, and the full state dicts its checkpoints and export need.

Under FSDP each process holds a shard of every parameter and of the optimizer state. Checkpoints,
the best epoch's weights and `model/` need whole tensors: every process takes part in gathering them
(a collective), and only the main process writes. Without FSDP these are the plain state dicts.
Under DeepSpeed the whole tensors are the trained parameters' fp32 masters (hftl/zero.py), and each
process writes its own shard of the optimizer state. FSDP1 is refused with what to use instead.

Example:
    >>> check_launch(cfg)                          # doctest: +SKIP
    >>> tensors = model_state(accelerator, model)  # doctest: +SKIP  (every process calls it)
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
from accelerate import Accelerator
from accelerate.utils import DistributedType
from accelerate.utils import other as accelerate_other
from torch import nn

from hftl import zero
from hftl.config import Config
from hftl.errors import ConfigError, HftlError

CPU_PROCESSES = "torchrun --nproc_per_node N -m hftl.cli train ... (or accelerate launch --multi_gpu --num_processes N)"


def _asked(variable: str) -> bool:
    return os.environ.get(variable, "false").lower() == "true"


def deepspeed_launch() -> bool:
    """Whether `accelerate launch` asked these processes for DeepSpeed."""
    return _asked("ACCELERATE_USE_DEEPSPEED")


def check_launch(cfg: Config | None = None) -> None:
    """Refuse, before any work, a launch hftl would not run as asked: FSDP without a GPU, DeepSpeed
    not installed, or a DeepSpeed config that disagrees with `cfg` (see `zero.configure`).

    Reads what `accelerate launch` tells the processes; on CPUs Accelerate would silently run FSDP
    as plain data parallel.
    """
    if deepspeed_launch():
        zero.require_deepspeed()
        if cfg is not None:
            zero.launch_config(cfg)
    if _asked("ACCELERATE_USE_FSDP") and not torch.cuda.is_available():
        raise ConfigError(
            "this launch asked for FSDP, but Accelerate runs FSDP on GPUs only and this machine has none (it would "
            f"train unsharded). On CPUs, drop the FSDP config and use {CPU_PROCESSES}"
        )


def check_supported(accelerator: Accelerator) -> None:
    """Refuse an Accelerator hftl cannot train with (FSDP1)."""
    if accelerator.distributed_type == DistributedType.FSDP and not accelerator.is_fsdp2:
        raise ConfigError(
            "FSDP1 is not supported by hftl (frozen and trainable parameters share its flat parameters): "
            "set fsdp_version: 2 in the accelerate config, as configs/accelerate/fsdp.yaml does"
        )


def wrap_blocks(accelerator: Accelerator, model: nn.Module, blocks: list[str]) -> None:
    """Under FSDP, shard each backbone block (the layer map's) as one unit, unless the accelerate config names classes.

    Accelerate's default, the model's `_no_split_modules`, can name the embeddings module too (BERT's
    BertEmbeddings), whose word embeddings Accelerate 1.15 then shards a second time, and fails.
    """
    if not is_sharded(accelerator) or not blocks:
        return  # (no fsdp_plugin on the state without FSDP)
    plugin = accelerator.state.fsdp_plugin
    if plugin.transformer_cls_names_to_wrap is None:
        base = model.get_base_model() if hasattr(model, "get_base_model") else model  # LoRA: the peft-wrapped task model
        plugin.transformer_cls_names_to_wrap = sorted({type(base.get_submodule(name)).__name__ for name in blocks})


def is_sharded(accelerator: Accelerator) -> bool:
    return accelerator.distributed_type == DistributedType.FSDP


def is_deepspeed(accelerator: Accelerator) -> bool:
    return accelerator.distributed_type == DistributedType.DEEPSPEED


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


def unwrap_model(accelerator: Accelerator, model: nn.Module) -> nn.Module:
    """`accelerator.unwrap_model(model)`, without importing DeepSpeed into a run that does not use it
    (`deepspeed_unprobed`).

    Example:
        >>> raw = unwrap_model(accelerator, model)   # doctest: +SKIP
    """
    with deepspeed_unprobed(is_deepspeed(accelerator)):
        return accelerator.unwrap_model(model)


def torch_optimizer(accelerator: Accelerator, optimizer: Any) -> torch.optim.Optimizer:
    """The torch optimizer whose param_groups' learning rates the step reads: under DeepSpeed the one inside ZeRO's."""
    return optimizer.optimizer.optimizer if is_deepspeed(accelerator) else optimizer.optimizer


def model_state(accelerator: Accelerator, model: nn.Module) -> dict[str, torch.Tensor]:
    """Full model state dict; under FSDP and DeepSpeed a collective every process must call, whole on the main one only.

    Under DeepSpeed: the trained parameters (fp32 masters) and buffers only, frozen parameters are the pretrained ones.
    """
    if is_deepspeed(accelerator):
        return zero.full_fp32_state(unwrap_model(accelerator, model), keep=accelerator.is_main_process)
    if not is_sharded(accelerator):  # what get_state_dict does here, without its DeepSpeed import
        return unwrap_model(accelerator, model).state_dict()
    return accelerator.get_state_dict(model)


def optimizer_state(accelerator: Accelerator, model: nn.Module, optimizer: torch.optim.Optimizer) -> dict[str, Any]:
    """Full optimizer state dict; under FSDP gathered (a collective) and keyed by parameter name.

    Under DeepSpeed only how the state is split: each process writes its own shard (`zero.save_shard`).
    """
    if is_deepspeed(accelerator):
        return zero.optimizer_meta(accelerator)
    if not is_sharded(accelerator):
        return optimizer.state_dict()
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_optimizer_state_dict

    return get_optimizer_state_dict(model, optimizer, options=StateDictOptions(full_state_dict=True, cpu_offload=True))


def load_model_state(accelerator: Accelerator, model: nn.Module, tensors: dict[str, torch.Tensor]) -> None:
    """Load full tensors (a subset of the model's) into a plain, FSDP-sharded or DeepSpeed model (every process calls it)."""
    if is_deepspeed(accelerator):
        zero.load_full_fp32_state(unwrap_model(accelerator, model), tensors)
        return
    if not is_sharded(accelerator):
        unwrap_model(accelerator, model).load_state_dict(tensors, strict=False)
        return
    from torch.distributed.checkpoint.state_dict import StateDictOptions, set_model_state_dict

    set_model_state_dict(model, tensors, options=StateDictOptions(full_state_dict=True, strict=False))


def load_optimizer_state(
    accelerator: Accelerator, model: nn.Module, optimizer: torch.optim.Optimizer, state: dict, checkpoint: Path | None = None
) -> None:
    """Load an optimizer state written by `optimizer_state` under the same kind of launch (DeepSpeed: from `checkpoint`)."""
    written_by_deepspeed = "deepspeed_zero_stage" in state
    if written_by_deepspeed != is_deepspeed(accelerator):
        how = (
            f"under DeepSpeed ZeRO-{state['deepspeed_zero_stage']} on {state['processes']} process(es); resume it with "
            f"accelerate launch --config_file configs/accelerate/deepspeed_zero{state['deepspeed_zero_stage']}.yaml "
            f"--num_processes {state['processes']} -m hftl.cli train ... resume=true"
            if written_by_deepspeed
            else "without DeepSpeed; resume it without the DeepSpeed config (plain, DDP or FSDP, as it was written)"
        )
        raise HftlError(f"this checkpoint was written {how}")
    if written_by_deepspeed:
        zero.load_shard(accelerator, optimizer, state, checkpoint)
        return
    by_name = any(isinstance(p, str) for group in state["param_groups"] for p in group["params"])
    if by_name != is_sharded(accelerator):
        written = "with FSDP" if by_name else "without FSDP"
        raise HftlError(f"this checkpoint was written {written}; resume it the same way (with or without the FSDP config)")
    if not is_sharded(accelerator):
        optimizer.load_state_dict(state)
        return
    from torch.distributed.checkpoint.state_dict import StateDictOptions, set_optimizer_state_dict

    set_optimizer_state_dict(model, optimizer, state, options=StateDictOptions(full_state_dict=True))
