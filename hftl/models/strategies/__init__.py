"""Strategies as operations on the layer map: the registry (`registry.py`), what trains when (`plan.py`), and
one module per strategy family that registers itself (`freezing.py`: head_only, freeze, full, scratch;
`lora.py`). The hybrid is a preset (`PRESETS`).

Example:
    >>> plan = build_plan(model, layer_map, cfg)                        # doctest: +SKIP
    >>> get_strategy("scratch").pretrained
    False
"""

from hftl.models.strategies import freezing, lora  # noqa: F401  (each registers its strategies)
from hftl.models.strategies.plan import (
    NORM_TYPES,
    Phase,
    Plan,
    build_plan,
    describe_phase,
    feature_encoder_parameters,
    head_parameters,
    set_train_mode,
    set_trainable,
    trainable_as,
)
from hftl.models.strategies.registry import PRESETS, REGISTRY, Strategy, get_strategy, preset_settings, register_strategy

__all__ = [
    "NORM_TYPES", "PRESETS", "REGISTRY", "Phase", "Plan", "Strategy", "build_plan", "describe_phase",
    "feature_encoder_parameters", "get_strategy", "head_parameters", "preset_settings", "register_strategy",
    "set_train_mode", "set_trainable", "trainable_as",
]  # fmt: skip
