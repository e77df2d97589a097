"""The strategy registry: each strategy says what its main phase trains, whether it starts pretrained, how
it wraps the model and what it adds at export, to metrics.json and to the model card.

A strategy registers itself where it is defined (`freezing.py`: head_only, freeze, full, scratch; `lora.py`),
as peft's tuners do. The head-first hybrid is a preset: a strategy after `head_warmup_epochs` of the head alone.

Example:
    >>> get_strategy("scratch").pretrained
    False
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torch import nn

from hftl.config import STRATEGIES, StrategyConfig
from hftl.models.layer_map import LayerMap
from hftl.utils.errors import ConfigError

Trains = Callable[[nn.Module, LayerMap, StrategyConfig], set[str]]


@dataclass(frozen=True)
class Strategy:
    """One way to use the pretrained weights (`strategy.name`)."""

    name: str
    trains: Trains  # the parameters its main phase trains
    pretrained: bool = True  # False: the same architecture from random init (the scratch baseline)
    wrap: Callable[[nn.Module, LayerMap, StrategyConfig], nn.Module] | None = None  # e.g. LoRA adapters
    export: Callable[[nn.Module, Path], nn.Module] | None = None  # before save_pretrained (LoRA: adapter/, merge)
    summary: Callable[[nn.Module], dict[str, Any]] | None = None  # extra fields for metrics.json's strategy
    card: Callable[[StrategyConfig, dict[str, Any]], list[str]] | None = None  # extra model-card lines


REGISTRY: dict[str, Strategy] = {}
# Study names for a strategy with settings: `hftl compare --strategies hybrid` runs full after a head warm-up
# (of strategy.head_warmup_epochs, at least 1).
PRESETS: dict[str, dict[str, Any]] = {"hybrid": {"name": "full", "head_warmup_epochs": 1}}


def register_strategy(strategy: Strategy) -> Strategy:
    """Add a strategy; its name must be one `strategy.name` accepts (`hftl.config.STRATEGIES`)."""
    if strategy.name not in STRATEGIES:
        raise ValueError(f"strategy {strategy.name!r} is not declared in hftl.config.STRATEGIES {STRATEGIES}")
    REGISTRY[strategy.name] = strategy
    # Listed in the order config.STRATEGIES declares, whichever module registered first (studies and messages read it).
    ordered = sorted(REGISTRY.items(), key=lambda item: STRATEGIES.index(item[0]))
    REGISTRY.clear()
    REGISTRY.update(ordered)
    return strategy


def get_strategy(name: str) -> Strategy:
    try:
        return REGISTRY[name]
    except KeyError:
        raise ConfigError(f"strategy.name must be one of {', '.join(REGISTRY)}; got {name!r}") from None


def preset_settings(name: str, strategy: dict[str, Any]) -> dict[str, Any]:
    """The `strategy` section of a study run named `name`: a registered strategy alone, or a preset.

    Example:
        >>> preset_settings("hybrid", {"name": "lora", "head_warmup_epochs": 0})
        {'name': 'full', 'head_warmup_epochs': 1}
    """
    if name in PRESETS:
        preset = dict(PRESETS[name])
        preset["head_warmup_epochs"] = strategy.get("head_warmup_epochs") or preset["head_warmup_epochs"]
        return {**strategy, **preset}
    return {**strategy, "name": name, "head_warmup_epochs": 0}
