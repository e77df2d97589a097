"""What trains when: a `Plan` is an ordered list of `Phase`s, each naming exactly which parameters train, so
"what is frozen" is explicit (the trainer, checkpoints and the feature cache all read it from here).

`set_trainable` is hftl's one place that sets `requires_grad`; `set_train_mode` keeps frozen BatchNorm
statistics fixed under `model.train()`.

Example:
    >>> plan = build_plan(model, layer_map, cfg)                        # doctest: +SKIP
    >>> [(p.name, p.epochs) for p in plan.phases]                       # doctest: +SKIP
    [('head_warmup', 1), ('full', 2)]
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from torch import nn

from hftl.config import Config
from hftl.models.layer_map import LayerMap, format_trainable, full_name
from hftl.models.strategies.registry import get_strategy

NORM_TYPES = (nn.modules.batchnorm._NormBase, nn.GroupNorm, nn.LayerNorm)


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


def names_in(model: nn.Module, layer_map: LayerMap, parts: set[str]) -> set[str]:
    return {n for n, _ in model.named_parameters() if layer_map.part_of(n) in parts}


def head_parameters(model: nn.Module, layer_map: LayerMap) -> set[str]:
    # Under peft the head's trainable copy lives in modules_to_save; its original stays frozen.
    return {n for n in names_in(model, layer_map, {"head"}) if ".original_module." not in n}


# -- what trains ---------------------------------------------------------------------------------
def set_trainable(model: nn.Module, names: frozenset[str] | set[str]) -> None:
    """Exactly the parameters in `names` require grad (the optimizer is untouched): hftl's one way to freeze."""
    for name, param in model.named_parameters():
        param.requires_grad_(name in names)


@contextmanager
def trainable_as(model: nn.Module, names: frozenset[str] | set[str]) -> Iterator[None]:
    """Within it, exactly `names` require grad (to count or probe them); the flags are restored after."""
    before = {n: p.requires_grad for n, p in model.named_parameters()}
    set_trainable(model, names)
    try:
        yield
    finally:
        for n, p in model.named_parameters():
            p.requires_grad_(before[n])


def describe_phase(model: nn.Module, layer_map: LayerMap, phase: Phase) -> str:
    """What trains in `phase`, part by part (the model's own flags are left as they were)."""
    with trainable_as(model, phase.trainable):
        return f"what trains ({phase.name}):\n" + format_trainable(model, layer_map)


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
    with trainable_as(model, {name for name, _ in model.named_parameters()}):
        freeze()
        return {name for name, param in model.named_parameters() if not param.requires_grad}


def build_plan(model: nn.Module, layer_map: LayerMap, cfg: Config) -> Plan:
    """The phases of a run: an optional head warm-up, then the strategy for the remaining epochs.

    Speech models keep their convolutional feature encoder frozen in every phase (as the transformers
    audio examples do) unless the strategy starts from scratch or strategy.freeze_feature_encoder is false.
    """
    s = cfg.strategy
    strategy = get_strategy(s.name)
    frozen = feature_encoder_parameters(model) if s.freeze_feature_encoder and strategy.pretrained else set()
    main = frozenset(strategy.trains(model, layer_map, s)) - frozen
    phases = []
    if s.head_warmup_epochs:
        phases.append(Phase("head_warmup", 0, s.head_warmup_epochs, frozenset(head_parameters(model, layer_map))))
    phases.append(Phase(s.name, s.head_warmup_epochs, cfg.train.epochs - s.head_warmup_epochs, main))
    return Plan(tuple(phases))


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
        frozen_norm = isinstance(module, NORM_TYPES) and bool(own) and not any(n in phase.trainable for n in own)
        if part not in trainable_parts or frozen_norm:
            module.training = False  # this module only: eval() would recurse into trainable children
