"""The freezing strategies: head_only (feature extraction), freeze (the top N blocks), full, and scratch (full
from random init, the baseline that shows what transfer buys). Each registers itself.

Example:
    >>> from hftl.models.strategies import get_strategy
    >>> get_strategy("freeze").name
    'freeze'
"""

from __future__ import annotations

import dataclasses
from typing import Any

from torch import nn

from hftl.config import StrategyConfig
from hftl.models.layer_map import LayerMap
from hftl.models.strategies.plan import head_parameters, names_in
from hftl.models.strategies.registry import Strategy, register_strategy
from hftl.utils.errors import ConfigError


def _freeze(model: nn.Module, layer_map: LayerMap, cfg: StrategyConfig) -> set[str]:
    n_blocks = len(layer_map.blocks)
    if cfg.trainable_blocks > n_blocks and cfg.trainable_blocks == StrategyConfig().trainable_blocks:
        # The default on a model with fewer blocks (ALBERT's one shared layer group): train them all.
        cfg = dataclasses.replace(cfg, trainable_blocks=n_blocks)
    if cfg.trainable_blocks > n_blocks:
        raise ConfigError(
            f"strategy.trainable_blocks={cfg.trainable_blocks} but this model has only {n_blocks} backbone blocks; "
            f"use 0..{n_blocks} (or strategy.name=full to train everything)"
        )
    top = {f"block.{i}" for i in range(n_blocks - cfg.trainable_blocks, n_blocks)}
    parts = top | {"neck"} if cfg.trainable_blocks else set()
    return names_in(model, layer_map, parts) | head_parameters(model, layer_map)


def _everything(model: nn.Module, layer_map: LayerMap, cfg: StrategyConfig) -> set[str]:
    return {n for n, _ in model.named_parameters()}


def _freeze_card(cfg: StrategyConfig, summary: dict[str, Any]) -> list[str]:
    blocks = summary["strategy"]["blocks"]
    return [f"- trainable blocks: top {min(cfg.trainable_blocks, blocks)} of {blocks}"]


register_strategy(Strategy("head_only", trains=lambda model, layer_map, cfg: head_parameters(model, layer_map)))
register_strategy(Strategy("freeze", trains=_freeze, card=_freeze_card))
register_strategy(Strategy("full", trains=_everything))
register_strategy(Strategy("scratch", trains=_everything, pretrained=False))
