"""DeepSpeed ZeRO under hftl: its config filled from hftl's, and the weights and optimizer state checkpoints need.

Under DeepSpeed, `accelerator.backward` runs the engine's backward and its optimizer step, clipping
included, so the DeepSpeed config decides batch size, accumulation, clipping and precision. hftl fills
the values left `auto` (or absent) from its own config and refuses any that disagree, so a run trains
as its hftl config says. Under bf16/fp16 DeepSpeed casts every parameter of the model, frozen ones
too, and keeps fp32 masters of the trained ones in its optimizer: checkpoints, `best.safetensors` and
`model/` take the trained weights from those masters (a collective: every process calls), and frozen
ones from the pretrained checkpoint. The optimizer state stays split: each process writes its shard.

Example:
    >>> configure(plugin.deepspeed_config, cfg, processes=2)   # doctest: +SKIP
    >>> tensors = full_fp32_state(raw)                          # doctest: +SKIP  (every process calls it)
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch
from torch import nn

from hftl.config import Config
from hftl.utils.errors import ConfigError, HftlError

INSTALL = "pip install 'hftl[deepspeed]'"
SHARD = "zero_optimizer_rank{rank}.pt"
# DeepSpeed's own checkpoint loader unpickles with weights_only=False; hftl reads its shards with
# weights_only=True and lets through exactly these DeepSpeed classes (loss scalers, an enum, a dataclass).
SHARD_CLASSES = (
    "deepspeed.runtime.fp16.loss_scaler.LossScaler",
    "deepspeed.runtime.fp16.loss_scaler.DynamicLossScaler",
    "deepspeed.runtime.zero.config.ZeroStageEnum",
    "deepspeed.utils.tensor_fragment.fragment_address",
)
OTHER_LAUNCHES = "DDP (configs/accelerate/multi_gpu.yaml) or FSDP (configs/accelerate/fsdp.yaml)"


def require_deepspeed() -> None:
    """Refuse a DeepSpeed launch when DeepSpeed is not installed, with the install command."""
    try:
        import deepspeed  # noqa: F401
    except ImportError as e:
        raise ConfigError(f"this launch asked for DeepSpeed, but it cannot be imported ({e}). Install it: {INSTALL}") from None


def configure(ds: dict[str, Any], cfg: Config, processes: int) -> None:
    """Fill the DeepSpeed config's `auto` or absent values from hftl's config; refuse what disagrees or cannot run.

    `ds` is the dict Accelerate hands to `deepspeed.initialize` (the plugin's `deepspeed_config`).
    """
    t = cfg.train
    if cfg.strategy.head_warmup_epochs:
        raise ConfigError(
            f"strategy.head_warmup_epochs={cfg.strategy.head_warmup_epochs} (a hybrid run) cannot run under DeepSpeed: ZeRO "
            "puts every parameter any phase trains into its optimizer when it wraps the model, so during the head warm-up "
            "the frozen backbone would still move (weight decay) and its Adam step count would run ahead. Set "
            f"strategy.head_warmup_epochs=0, or run the hybrid without DeepSpeed: {OTHER_LAUNCHES}"
        )
    for section in ("optimizer", "scheduler"):
        if section in ds:
            raise ConfigError(
                f"the DeepSpeed config has a {section!r} section; hftl builds AdamW with its parameter groups and drives "
                f"the learning rate schedule itself (train.learning_rate, train.scheduler). Remove {section!r} from it"
            )
    zero = ds.get("zero_optimization") or {}
    stage = zero.get("stage", 0)
    if stage not in (1, 2, 3):
        raise ConfigError(
            f"DeepSpeed zero_optimization.stage={stage!r}: hftl runs ZeRO stages 1, 2 and 3 (stage 0 is plain data "
            "parallel: use configs/accelerate/multi_gpu.yaml); configs/accelerate/deepspeed_zero2.yaml and "
            "deepspeed_zero3.yaml are ready"
        )
    if zero.get("elastic_checkpoint"):
        raise ConfigError("DeepSpeed zero_optimization.elastic_checkpoint=true: hftl's checkpoints are per process; remove it")
    wanted = {
        "train_micro_batch_size_per_gpu": (t.batch_size, "train.batch_size"),
        "gradient_accumulation_steps": (t.gradient_accumulation_steps, "train.gradient_accumulation_steps"),
        "train_batch_size": (
            t.batch_size * t.gradient_accumulation_steps * processes,
            f"train.batch_size x train.gradient_accumulation_steps x {processes} processes",
        ),
        "gradient_clipping": (float(t.max_grad_norm or 0.0), "train.max_grad_norm (null: 0.0, no clipping)"),
    }
    differ = []
    for key, (value, source) in wanted.items():
        given = ds.get(key, "auto")
        if given in ("auto", None):
            ds[key] = value
        elif float(given) != float(value):
            differ.append(f"{key}={given} in the DeepSpeed config, but {source} gives {value}")
    for dtype in ("fp16", "bf16"):
        enabled = str((ds.get(dtype) or {}).get("enabled", "auto")).lower()
        if enabled == "true" and t.mixed_precision != dtype:
            differ.append(f"{dtype}.enabled=true in the DeepSpeed config, but train.mixed_precision={t.mixed_precision!r}")
    if differ:
        raise ConfigError(
            "the DeepSpeed config disagrees with the hftl config, and DeepSpeed would train with its own values: "
            + "; ".join(differ)
            + ". Leave these keys out of the accelerate / DeepSpeed config (or set them to auto) so hftl fills them, "
            "or change the hftl config to match"
        )


def launch_config(cfg: Config) -> None:
    """Check, before any data loads, the DeepSpeed config this launch gives Accelerate (from its environment)."""
    require_deepspeed()
    from accelerate.utils import DeepSpeedPlugin

    try:
        plugin = DeepSpeedPlugin()  # reads what `accelerate launch` set, as the Accelerator will
    except (ValueError, OSError) as e:
        raise ConfigError(f"Accelerate refused this launch's DeepSpeed config: {str(e).splitlines()[0]}") from None
    configure(plugin.deepspeed_config, cfg, int(os.environ.get("WORLD_SIZE", "1")))


def stage(accelerator: Any) -> int:
    return int(accelerator.state.deepspeed_plugin.deepspeed_config["zero_optimization"]["stage"])


def compute_dtype(accelerator: Any) -> torch.dtype | None:
    """The dtype DeepSpeed casts the model to under mixed precision, or None in fp32."""
    return {"bf16": torch.bfloat16, "fp16": torch.float16}.get(accelerator.mixed_precision)


def cast_inputs(collate: Any, dtype: torch.dtype, examples: list[dict]) -> dict:
    """A batch whose floating tensors (pixels, audio) match a model DeepSpeed cast to `dtype`.

    Unlike autocast, DeepSpeed's bf16 mode runs the cast weights on the inputs as given (as the
    transformers Trainer does, hftl casts them).
    """
    batch = collate(examples)
    return {k: v.to(dtype) if isinstance(v, torch.Tensor) and v.is_floating_point() else v for k, v in batch.items()}


def full_fp32_state(model: nn.Module, keep: bool) -> dict[str, torch.Tensor]:
    """The trained parameters from DeepSpeed's fp32 masters, and the buffers; on CPU where `keep`.

    A collective: every process calls it (ZeRO gathers each master from the processes' partitions).
    Frozen parameters have no master and are left out: they still hold the pretrained weights, which
    DeepSpeed may have cast to 16 bits in the model.
    """
    from deepspeed.utils import safe_get_full_fp32_param

    tensors = {}
    for name, param in model.named_parameters():
        full = safe_get_full_fp32_param(param) if param.requires_grad else None
        if full is not None and keep:
            tensors[name] = full.detach().cpu()
    if keep:
        tensors.update({name: b.detach().cpu() for name, b in _persistent_buffers(model)})
    return tensors


def _persistent_buffers(model: nn.Module) -> list[tuple[str, torch.Tensor]]:
    """The buffers `state_dict` holds (not BERT's position_ids and other non-persistent ones)."""
    return [
        (f"{prefix}.{name}" if prefix else name, buffer)
        for prefix, module in model.named_modules()
        for name, buffer in module.named_buffers(recurse=False)
        if name not in module._non_persistent_buffers_set
    ]


def load_full_fp32_state(model: nn.Module, tensors: dict[str, torch.Tensor]) -> None:
    """Load full fp32 tensors (from `full_fp32_state`) into the masters and the model's copies. Every process calls it."""
    import deepspeed
    from deepspeed.utils import safe_set_full_fp32_param

    params, buffers = dict(model.named_parameters()), dict(model.named_buffers())
    for name in sorted(tensors):  # the same order on every process: ZeRO-3 gathers each parameter
        value = tensors[name]
        if name in buffers:
            buffers[name].data.copy_(value)
            continue
        param = params[name]
        if not param.requires_grad:
            raise HftlError(f"{name} is frozen in this run, but the weights being loaded hold a trained value for it")
        if hasattr(param, "ds_id"):  # ZeRO-3: DeepSpeed's full setter overruns a padded last partition (3 labels on 2 ranks)
            _set_zero3_master(param, value)
        else:
            safe_set_full_fp32_param(param, value.to(param.device))
        # The model's (possibly 16-bit) copy, as DeepSpeed derives it from the master after a step.
        with deepspeed.zero.GatheredParameters([param], modifier_rank=0):
            param.data.copy_(value)


def _set_zero3_master(param: nn.Parameter, value: torch.Tensor) -> None:
    """Write this process's slice of `value` (zero-padded at the end) into a ZeRO-3 parameter's fp32 master partition."""
    from deepspeed import comm
    from deepspeed.utils import safe_set_local_fp32_param

    size = param.ds_tensor.numel()  # every partition has this size; the last one is padded
    start = comm.get_rank(group=param.ds_process_group) * size
    piece = value.flatten()[start : start + size]
    piece = torch.cat([piece, piece.new_zeros(size - piece.numel())])
    safe_set_local_fp32_param(param, piece.to(param.ds_tensor.device))


def describe(engine: Any) -> str:
    """What the DeepSpeed engine trains with, read back from it (hftl's values, filled in by `configure`)."""
    half = "bf16" if engine.bfloat16_enabled() else "fp16" if engine.fp16_enabled() else None
    precision = f"{half} model, fp32 masters of the trained weights" if half else "fp32"
    return (
        f"DeepSpeed ZeRO-{engine.zero_optimization_stage()}: batch {engine.train_micro_batch_size_per_gpu()} per process x "
        f"{engine.gradient_accumulation_steps()} accumulation x {engine.dp_world_size} processes = {engine.train_batch_size()}, "
        f"gradient clipping {engine.gradient_clipping() or 'off'}, {precision}"
    )


def optimizer_meta(accelerator: Any) -> dict[str, int]:
    """What `optimizer.pt` holds under DeepSpeed: how the per-process shards beside it were split."""
    return {"deepspeed_zero_stage": stage(accelerator), "processes": accelerator.num_processes}


def save_shard(folder: Path, rank: int, optimizer: Any) -> None:
    """This process's part of the ZeRO optimizer (fp32 masters, Adam moments, loss scale), written and synced."""
    path = folder / SHARD.format(rank=rank)
    torch.save(optimizer.state_dict(), path)
    with open(path, "rb") as handle:
        os.fsync(handle.fileno())


def read_shard(path: Path) -> dict[str, Any]:
    """A shard written by `save_shard`, unpickling nothing but tensors, containers and `SHARD_CLASSES`."""
    import importlib

    classes = []
    for dotted in SHARD_CLASSES:
        module, name = dotted.rsplit(".", 1)
        classes.append(getattr(importlib.import_module(module), name))
    with torch.serialization.safe_globals(classes):
        return torch.load(path, weights_only=True, map_location="cpu")


def load_shard(accelerator: Any, optimizer: Any, meta: dict[str, int], folder: Path) -> None:
    """Load this process's shard into the ZeRO optimizer; the checkpoint must come from the same stage and process count."""
    written = (meta["deepspeed_zero_stage"], meta["processes"])
    if written != (stage(accelerator), accelerator.num_processes):
        raise HftlError(
            f"{folder} was written under DeepSpeed ZeRO-{written[0]} on {written[1]} process(es); its optimizer state is "
            f"split that way. Resume it with accelerate launch --config_file configs/accelerate/deepspeed_zero{written[0]}.yaml "
            f"--num_processes {written[1]} ... (this launch: ZeRO-{stage(accelerator)} on {accelerator.num_processes})"
        )
    shard = read_shard(folder / SHARD.format(rank=accelerator.process_index))
    shards: list[dict | None] = [None] * accelerator.num_processes
    shards[accelerator.process_index] = shard  # ZeRO reads its own rank's entry
    # From the fp32 masters in the shard, not from the model's 16-bit copies (which would lose precision).
    optimizer.load_state_dict(shards, load_optimizer_states=True, load_from_fp32_weights=True)
