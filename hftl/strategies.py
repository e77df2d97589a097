"""Strategies as operations on the layer map: what trains in each phase, BN policy, LR groups.

A `Plan` is an ordered list of `Phase`s; each phase names exactly which parameters train, so "what is
frozen" is explicit (the trainer, checkpoints and a future feature cache all read it from here).

Example:
    >>> model, layer_map = apply_lora(model, layer_map, cfg.strategy)   # lora only  # doctest: +SKIP
    >>> plan = build_plan(model, layer_map, cfg)                        # doctest: +SKIP
    >>> [(p.name, p.epochs) for p in plan.phases]                       # doctest: +SKIP
    [('head_warmup', 1), ('full', 2)]
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from hftl.config import Config, LoraConfig, StrategyConfig, TrainConfig
from hftl.errors import ConfigError
from hftl.layers import LayerMap, full_name

_NORM_TYPES = (nn.modules.batchnorm._NormBase, nn.GroupNorm, nn.LayerNorm)
# Attention projections LoRA adapts by default (Hu et al. adapt query and value).
_ATTENTION_TARGETS = ("query", "value", "q_proj", "v_proj", "q_lin", "v_lin", "q", "v")
_FUSED_ATTENTION_TARGETS = ("qkv", "query_key_value", "Wqkv", "c_attn")


@dataclass(frozen=True)
class Phase:
    """A span of epochs during which exactly `trainable` (parameter names) receive gradients."""

    name: str
    start_epoch: int
    epochs: int
    trainable: frozenset[str]

    @property
    def end_epoch(self) -> int:
        return self.start_epoch + self.epochs


@dataclass(frozen=True)
class Plan:
    phases: tuple[Phase, ...]

    def phase_at(self, epoch: int) -> Phase:
        for phase in self.phases:
            if epoch < phase.end_epoch:
                return phase
        return self.phases[-1]

    @property
    def trainable_any(self) -> frozenset[str]:
        """Parameters that train in at least one phase: the optimizer's and the checkpoint's set."""
        return frozenset().union(*(p.trainable for p in self.phases))


def _names_in(model: nn.Module, layer_map: LayerMap, parts: set[str]) -> set[str]:
    return {n for n, _ in model.named_parameters() if layer_map.part_of(n) in parts}


def _head_names(model: nn.Module, layer_map: LayerMap) -> set[str]:
    # Under peft the head's trainable copy lives in modules_to_save; its original stays frozen.
    return {n for n in _names_in(model, layer_map, {"head"}) if ".original_module." not in n}


def _head_only(model: nn.Module, layer_map: LayerMap, cfg: StrategyConfig) -> set[str]:
    return _head_names(model, layer_map)


def _freeze(model: nn.Module, layer_map: LayerMap, cfg: StrategyConfig) -> set[str]:
    n_blocks = len(layer_map.blocks)
    if cfg.trainable_blocks > n_blocks:
        raise ConfigError(
            f"strategy.trainable_blocks={cfg.trainable_blocks} but this model has only {n_blocks} backbone blocks; "
            f"use 0..{n_blocks} (or strategy.name=full to train everything)"
        )
    top = {f"block.{i}" for i in range(n_blocks - cfg.trainable_blocks, n_blocks)}
    parts = top | {"neck"} if cfg.trainable_blocks else set()
    return _names_in(model, layer_map, parts) | _head_names(model, layer_map)


def _everything(model: nn.Module, layer_map: LayerMap, cfg: StrategyConfig) -> set[str]:
    return {n for n, _ in model.named_parameters()}


def _lora(model: nn.Module, layer_map: LayerMap, cfg: StrategyConfig) -> set[str]:
    if not hasattr(model, "peft_config"):
        raise ConfigError("strategy lora needs the model wrapped by apply_lora() first")
    return {n for n, p in model.named_parameters() if "lora_" in n} | _head_names(model, layer_map)


# The registry: strategy name -> the parameters its main phase trains.
STRATEGY_TRAINABLE: dict[str, Callable[[nn.Module, LayerMap, StrategyConfig], set[str]]] = {
    "head_only": _head_only,
    "freeze": _freeze,
    "full": _everything,
    "lora": _lora,
    "scratch": _everything,
}


def feature_encoder_parameters(model: nn.Module) -> set[str]:
    """Names of the parameters of a speech model's convolutional feature encoder; empty for other models.

    Found generically through the `freeze_feature_encoder()` method transformers gives wav2vec2, HuBERT,
    WavLM and their kin: call it on all-trainable parameters and see what it froze. It also sets the
    encoder's own flag that stops it computing gradients for its input, which is what a frozen
    encoder wants. Example:

        >>> sorted(feature_encoder_parameters(Wav2Vec2ForCTC(config)))[:1]   # doctest: +SKIP
        ['wav2vec2.feature_extractor.conv_layers.0.conv.weight']
    """
    freeze = getattr(model, "freeze_feature_encoder", None)
    if not callable(freeze):
        return set()
    before = {name: param.requires_grad for name, param in model.named_parameters()}
    for param in model.parameters():
        param.requires_grad_(True)
    freeze()
    frozen = {name for name, param in model.named_parameters() if not param.requires_grad}
    for name, param in model.named_parameters():
        param.requires_grad_(before[name])
    return frozen


def build_plan(model: nn.Module, layer_map: LayerMap, cfg: Config) -> Plan:
    """The phases of a run: an optional head warm-up, then the strategy for the remaining epochs.

    Speech models keep their convolutional feature encoder frozen in every phase (as the transformers
    audio examples do) unless the strategy is scratch or strategy.freeze_feature_encoder is false.
    """
    s = cfg.strategy
    frozen = feature_encoder_parameters(model) if s.freeze_feature_encoder and s.name != "scratch" else set()
    main = frozenset(STRATEGY_TRAINABLE[s.name](model, layer_map, s)) - frozen
    phases = []
    if s.head_warmup_epochs:
        phases.append(Phase("head_warmup", 0, s.head_warmup_epochs, frozenset(_head_names(model, layer_map))))
    phases.append(Phase(s.name, s.head_warmup_epochs, cfg.train.epochs - s.head_warmup_epochs, main))
    return Plan(tuple(phases))


def apply_phase(model: nn.Module, phase: Phase) -> None:
    """Toggle requires_grad so exactly the phase's parameters train (the optimizer is untouched)."""
    for name, param in model.named_parameters():
        param.requires_grad_(name in phase.trainable)


def set_train_mode(model: nn.Module, layer_map: LayerMap, phase: Phase, batch_norm: str) -> None:
    """`model.train()`, then put frozen parts back in inference mode under `freeze_stats`.

    `requires_grad=False` does not stop BatchNorm updating its running statistics in train mode, so
    a frozen BN would drift from the statistics it was pretrained with. With `freeze_stats`, every part
    with nothing to train runs in eval mode (BN statistics fixed, dropout off: frozen features are
    deterministic), and any norm layer whose own weights are frozen does too (LoRA's frozen backbone).
    When the phase trains nothing inside the base model (head_only, head warm-up), the whole base runs
    in inference mode, glue included: a speech encoder's own dropout and SpecAugment sit outside its
    parts and would otherwise still perturb the features the head learns from.
    """
    model.train()
    if batch_norm != "freeze_stats":
        return
    trainable_parts = {layer_map.part_of(n) for n in phase.trainable}
    if layer_map.base_prefix and trainable_parts <= {"head"}:
        model.get_submodule(full_name(model, layer_map.base_prefix)).eval()
    for name, module in model.named_modules():
        part = layer_map.module_part(name)
        if part is None:  # encloses several parts (e.g. `vit`, `encoder`): leave the mode to its children
            continue
        own = [f"{name}.{p}" for p, _ in module.named_parameters(recurse=False)]
        frozen_norm = isinstance(module, _NORM_TYPES) and bool(own) and not any(n in phase.trainable for n in own)
        if part not in trainable_parts or frozen_norm:
            module.training = False  # this module only: eval() would recurse into trainable children


def default_lora_targets(model: nn.Module, layer_map: LayerMap) -> list[str]:
    """Full names of the modules LoRA adapts when `target_modules: auto`.

    Attention query/value projections inside the blocks where the architecture has them (ViT, BERT,
    wav2vec2); a fused qkv projection otherwise; for CNNs (ResNet, ConvNeXt) every non-grouped
    convolution inside the blocks.
    """
    in_blocks = [
        (name, module)
        for name, module in model.named_modules()
        if layer_map.part_of(name).startswith("block.") and name not in layer_map.blocks
    ]
    for wanted in (_ATTENTION_TARGETS, _FUSED_ATTENTION_TARGETS):
        found = [n for n, m in in_blocks if isinstance(m, nn.Linear) and n.rsplit(".", 1)[-1] in wanted]
        if found:
            return found
    convs = [n for n, m in in_blocks if isinstance(m, nn.Conv2d) and m.groups == 1]
    if convs:
        return convs
    linears = [n for n, m in in_blocks if isinstance(m, nn.Linear)]
    if linears:
        return linears
    raise ConfigError(
        f"no Linear or Conv2d layers inside the blocks of {type(model).__name__} for LoRA to adapt; "
        "set strategy.lora.target_modules to module names"
    )


def apply_lora(model: nn.Module, layer_map: LayerMap, cfg: LoraConfig) -> nn.Module:
    """Wrap `model` with peft LoRA adapters; the new head trains fully through `modules_to_save`."""
    from peft import LoraConfig as PeftLoraConfig
    from peft import get_peft_model

    targets = default_lora_targets(model, layer_map) if cfg.target_modules == "auto" else cfg.target_modules
    peft_config = PeftLoraConfig(
        r=cfg.r,
        lora_alpha=cfg.alpha,
        lora_dropout=cfg.dropout,
        target_modules=targets,
        modules_to_save=list(layer_map.head),
        bias="none",
    )
    try:
        return get_peft_model(model, peft_config)
    except ValueError as e:
        raise ConfigError(f"peft could not apply LoRA with strategy.lora.target_modules={targets!r}: {e}") from None


def init_for_scratch(model: nn.Module) -> None:
    """Make a randomly initialised model trainable whatever its own `_init_weights` did.

    Some transformers inits leave BatchNorm weights near zero (EfficientNet), which keeps a
    from-scratch model at chance; norms start as identity, convolutions He-initialised.
    """
    for module in model.modules():
        if isinstance(module, _NORM_TYPES):
            if getattr(module, "weight", None) is not None:
                nn.init.ones_(module.weight)
            if getattr(module, "bias", None) is not None:
                nn.init.zeros_(module.bias)
            if isinstance(module, nn.modules.batchnorm._NormBase) and module.track_running_stats:
                module.reset_running_stats()
        elif isinstance(module, nn.Conv2d):
            nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
            if module.bias is not None:
                nn.init.zeros_(module.bias)


def _no_decay(name: str, param: torch.Tensor) -> bool:
    # Weight decay only on weight matrices and kernels: not biases, norms or learned embeddings tokens.
    return param.ndim < 2 or any(k in name for k in ("cls_token", "mask_token", "position_embeddings", "masked_spec_embed"))


def layer_learning_rates(layer_map: LayerMap, train: TrainConfig) -> dict[str, float]:
    """Learning rate per part: the top block and neck at `learning_rate`, each lower block one more
    `layer_lr_decay` factor, embeddings below the lowest block, the head at `head_learning_rate`."""
    n = len(layer_map.blocks)
    lrs = {f"block.{i}": train.learning_rate * train.layer_lr_decay ** (n - 1 - i) for i in range(n)}
    lrs["embeddings"] = train.learning_rate * train.layer_lr_decay**n
    lrs["neck"] = train.learning_rate
    lrs["head"] = train.head_learning_rate or train.learning_rate
    return lrs


def param_groups(model: nn.Module, layer_map: LayerMap, plan: Plan, train: TrainConfig) -> list[dict]:
    """AdamW parameter groups, built once: every parameter any phase trains is in from the start.

    A phase change only toggles requires_grad, so the optimizer (and a resumed run's optimizer state)
    stays the same object for the whole run. Each group carries `part` for inspection.
    """
    lrs = layer_learning_rates(layer_map, train)
    groups: dict[tuple[str, bool], dict] = {}
    trainable = plan.trainable_any
    for name, param in model.named_parameters():
        if name not in trainable:
            continue
        part = layer_map.part_of(name)
        no_decay = _no_decay(name, param)
        group = groups.setdefault(
            (part, no_decay),
            {"params": [], "part": part, "lr": lrs[part], "weight_decay": 0.0 if no_decay else train.weight_decay},
        )
        group["params"].append(param)
    order = {part: i for i, part in enumerate(layer_map.parts)}
    return [groups[k] for k in sorted(groups, key=lambda k: (order[k[0]], k[1]))]


def lr_lambda(plan: Plan, steps_per_epoch: int, total_steps: int, train: TrainConfig) -> Callable[[int], float]:
    """Schedule multiplier per optimizer step; each phase gets its own warm-up and decay.

    A pure function of the step, so a resumed scheduler needs nothing but its step count.
    """
    bounds = []
    for phase in plan.phases:
        start = min(phase.start_epoch * steps_per_epoch, total_steps)
        end = min(phase.end_epoch * steps_per_epoch, total_steps)
        bounds.append((start, end))

    def factor(step: int) -> float:
        for start, end in bounds:
            if step < end or (start, end) == bounds[-1]:
                length = max(end - start, 1)
                local = min(max(step - start, 0), length)
                warmup = int(train.warmup_ratio * length)
                if warmup and local < warmup:
                    return (local + 1) / (warmup + 1)
                progress = (local - warmup) / max(length - warmup, 1)
                if train.scheduler == "linear":
                    return max(0.0, 1.0 - progress)
                if train.scheduler == "cosine":
                    return 0.5 * (1.0 + math.cos(math.pi * progress))
                return 1.0
        return 1.0

    return factor
