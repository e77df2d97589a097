"""`strategy.keep_blocks: N`: fine-tune from a lower block, on a smaller model that loads as it is.

When source and target domains differ, lower blocks' features transfer better than the top ones (the probe
shows where). Truncation keeps the lowest N blocks of the layer map: the config says the smaller depth
(a transformer's `num_hidden_layers`, a stage model's `depths` and its per-stage lists), a model of that
config is built, and every pretrained tensor it still has is copied in. The exported `model/` is then an
ordinary, smaller checkpoint: `pipeline` and `AutoModel*` load it with no hftl code.

The config's depth key is found from the layer map, not guessed: it must count exactly the map's blocks
(layers, or stages, or the layers inside stages), and the truncated model is checked afterwards (its
map has N blocks; every tensor outside head and neck came from the checkpoint). An architecture whose
config cannot say it is refused, naming it.

Example:
    >>> small, note = keep_lower_blocks(model, layer_map, 4, map_of)  # doctest: +SKIP
    >>> note                                                          # doctest: +SKIP
    'kept the lowest 4 of 12 blocks (num_hidden_layers 12 -> 4)'
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

from torch import nn

from hftl.errors import ConfigError, HftlError
from hftl.layers import LayerMap

# Transformer depth keys, the encoder's first (Whisper counts encoder and decoder apart).
DEPTH_KEYS = ("encoder_layers", "num_hidden_layers", "n_layer", "num_layers", "n_layers", "num_encoder_layers")
# Lists of a stage model's config that are not one entry per stage, even when their length says so.
NOT_PER_STAGE = frozenset({"architectures", "stage_names", "out_features", "out_indices", "image_size", "depths"})


def depth_changes(config: Any, blocks: int, keep: int) -> dict[str, Any]:
    """The config values that make a model of `keep` blocks out of one of `blocks` (the layer map's count).

    Example:
        >>> from transformers import ResNetConfig
        >>> depth_changes(ResNetConfig(depths=[1, 1, 1], hidden_sizes=[8, 16, 32]), 3, 2)["hidden_sizes"]
        [8, 16]
    """
    values = config.to_dict()
    for key in DEPTH_KEYS:
        if isinstance(values.get(key), int) and values[key] == blocks:
            return {key: keep, **_per_item(values, blocks, keep)}
    depths = values.get("depths")
    if isinstance(depths, list) and depths and all(isinstance(d, int) for d in depths):
        if len(depths) == blocks:  # a block is a stage
            kept = depths[:keep]
        elif sum(depths) == blocks:  # a block is a layer inside a stage
            kept, left = [], keep
            for d in depths:
                if left > 0:
                    kept.append(min(d, left))
                left -= d
        else:
            kept = None
        if kept is not None:
            changes = {"depths": kept, **_per_item(values, len(depths), len(kept))}
            if isinstance(values.get("num_encoder_blocks"), int):  # PVT, SegFormer
                changes["num_encoder_blocks"] = len(kept)
            if isinstance(values.get("stage_names"), list):  # backbone configs: stem + one name per stage
                changes["stage_names"] = values["stage_names"][: len(kept) + 1]
            return changes
    found = {k: values[k] for k in (*DEPTH_KEYS, "depths") if k in values}
    raise HftlError(
        f"strategy.keep_blocks: cannot truncate {type(config).__name__}: its layer map has {blocks} blocks, but no "
        f"depth key of its config counts them ({found or 'none of ' + ', '.join((*DEPTH_KEYS, 'depths'))}). "
        "Fine-tune all its blocks (remove strategy.keep_blocks), or use strategy=freeze to train only the top ones"
    )


def _per_item(values: dict[str, Any], count: int, keep: int) -> dict[str, Any]:
    """Lists with one entry per block or stage (ModernBERT's layer_types, ResNet's hidden_sizes), cut to `keep`."""
    return {
        k: v[:keep]
        for k, v in values.items()
        if k not in NOT_PER_STAGE and isinstance(v, list) and len(v) == count and count > 1
    }


def keep_lower_blocks(
    model: nn.Module, layer_map: LayerMap, keep: int, map_of: Callable[[nn.Module], LayerMap]
) -> tuple[nn.Module, LayerMap, str]:
    """A model of the lowest `keep` blocks of `model`, its pretrained tensors copied in; its layer map; a note.

    `map_of` builds a model's layer map (as `setup_model` does). Raises ConfigError for a `keep` out of
    range and HftlError when the architecture's config cannot express the smaller depth.
    """
    blocks = len(layer_map.blocks)
    if not 1 <= keep <= blocks:
        raise ConfigError(f"strategy.keep_blocks={keep}: this model has {blocks} blocks; choose 1..{blocks}")
    if keep == blocks:
        return model, layer_map, f"keep_blocks={keep} keeps every block: nothing to drop"
    changes = depth_changes(model.config, blocks, keep)
    config = copy.deepcopy(model.config)
    for key, value in changes.items():
        setattr(config, key, value)
    if "stage_names" in changes and hasattr(config, "out_features"):
        config.out_features = [changes["stage_names"][-1]]  # the backbone's output: the last kept stage
    small = type(model)(config)
    source = model.state_dict()
    target = small.state_dict()
    copied = {k: v for k, v in source.items() if k in target and target[k].shape == v.shape}
    small.load_state_dict(copied, strict=False)
    small_map = map_of(small)
    _verify(type(model).__name__, small, small_map, keep, set(target) - set(copied))
    dropped = sum(v.numel() for k, v in source.items() if k not in copied)
    summary = ", ".join(f"{k} {getattr(model.config, k, '?')} -> {v}" for k, v in changes.items() if k != "stage_names")
    note = f"kept the lowest {keep} of {blocks} blocks ({summary}); {dropped:,} pretrained parameters dropped"
    return small, small_map, note


def _verify(name: str, small: nn.Module, small_map: LayerMap, keep: int, fresh: set[str]) -> None:
    """The truncated model has `keep` blocks and every tensor outside its head and neck is pretrained."""
    if len(small_map.blocks) != keep:
        raise HftlError(
            f"strategy.keep_blocks: truncating {name} gave a model of {len(small_map.blocks)} blocks, not {keep}; "
            "its config's depth keys do not describe its layer map. Remove strategy.keep_blocks for this model"
        )
    stray = sorted(k for k in fresh if small_map.part_of(k) not in ("head", "neck"))
    if stray:
        raise HftlError(
            f"strategy.keep_blocks: the truncated {name} has tensors the checkpoint does not ({', '.join(stray[:4])}); "
            "they would start random. Remove strategy.keep_blocks for this model"
        )
