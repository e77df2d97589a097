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

import torch
from torch import nn

from hftl.models.layer_map import LayerMap
from hftl.utils.errors import ConfigError, HftlError

# Transformer depth keys, the encoder's first (Whisper counts encoder and decoder apart).
DEPTH_KEYS = ("encoder_layers", "num_hidden_layers", "n_layer", "num_layers", "n_layers", "num_encoder_layers")
# Whole numbers that count a stage model's stages (Swin's num_layers, ConvNeXt's num_stages, PVT's blocks).
STAGE_COUNT_KEYS = ("num_layers", "num_stages", "num_encoder_blocks")
# Lists of a stage model's config that are not one entry per stage, even when their length says so.
NOT_PER_STAGE = frozenset({"architectures", "stage_names", "out_features", "out_indices", "image_size", "depths"})


def depth_changes(config: Any, blocks: int, keep: int, path: str = "") -> dict[str, Any]:
    """The config values that make a model of `keep` blocks out of one of `blocks` (the layer map's count). In a
    composite config (CLIP's vision and text towers, Gemma 3's language model) the depth sits in a sub-config:
    the one that counts the blocks, or, when several do, the one the blocks' `path` names; its keys come dotted.

    Example:
        >>> from transformers import CLIPConfig, ResNetConfig
        >>> depth_changes(ResNetConfig(depths=[1, 1, 1], hidden_sizes=[8, 16, 32]), 3, 2)["hidden_sizes"]
        [8, 16]
        >>> depth_changes(CLIPConfig(), 12, 4, "vision_model.encoder.layers.0")
        {'vision_config.num_hidden_layers': 4}
    """
    own = _own_depth(config, blocks, keep)
    if own is not None:
        return own
    subs = {k: getattr(config, k, None) for k in getattr(config, "sub_configs", {})}
    fitting = {k: c for k, sub in subs.items() if sub is not None and (c := _own_depth(sub, blocks, keep)) is not None}
    if len(fitting) > 1:  # CLIP's towers both 12 layers deep: the blocks' path says which
        fitting = {k: c for k, c in fitting.items() if any(w in path for w in _TOWER_WORDS.get(k, (k.removesuffix("_config"),)))}
    if len(fitting) == 1:
        ((name, changes),) = fitting.items()
        return {f"{name}.{k}": v for k, v in changes.items()}
    found = {k: getattr(config, k) for k in (*DEPTH_KEYS, "depths") if isinstance(getattr(config, k, None), (int, list))}
    where = f" or in its sub-configs {', '.join(subs)}" if subs else ""
    raise HftlError(
        f"strategy.keep_blocks: cannot truncate {type(config).__name__}: its layer map has {blocks} blocks, but no "
        f"depth key of its config{where} counts them ({found or 'none of ' + ', '.join((*DEPTH_KEYS, 'depths'))}). "
        "Fine-tune all its blocks (remove strategy.keep_blocks), or use strategy=freeze to train only the top ones"
    )


# The words a sub-config's tower goes by in module paths (Gemma 3's text_config builds `language_model`).
_TOWER_WORDS = {"text_config": ("text", "language"), "vision_config": ("vision", "visual", "image")}


def _own_depth(config: Any, blocks: int, keep: int) -> dict[str, Any] | None:
    """`depth_changes` for a config's own keys (not its sub-configs'), or None when none counts `blocks`."""
    values = config.to_dict()
    depths = values.get("depths")
    if isinstance(depths, list) and depths and all(isinstance(d, int) for d in depths):  # a stage model
        kept = _kept_depths(depths, blocks, keep)
        if kept is not None:
            changes = {"depths": kept, **_per_item(values, len(depths), len(kept))}
            changes.update({k: len(kept) for k in STAGE_COUNT_KEYS if values.get(k) == len(depths)})
            if isinstance(values.get("stage_names"), list):  # backbone configs: stem + one name per stage
                changes["stage_names"] = values["stage_names"][: len(kept) + 1]
            return changes
    for key in DEPTH_KEYS:
        if isinstance(values.get(key), int) and values[key] == blocks:
            return {key: keep, **_per_item(values, blocks, keep)}
    return None


def _kept_depths(depths: list[int], blocks: int, keep: int) -> list[int] | None:
    """A stage model's depths for `keep` of its `blocks`: whole stages when a block is a stage, else the layers
    inside stages counted from the bottom; None when neither reading counts `blocks`."""
    if len(depths) == blocks:
        return depths[:keep]
    if sum(depths) != blocks:
        return None
    kept, left = [], keep
    for d in depths:
        if left > 0:
            kept.append(min(d, left))
        left -= d
    return kept


def _per_item(values: dict[str, Any], count: int, keep: int) -> dict[str, Any]:
    """Lists with one entry per block or stage (ModernBERT's layer_types, ResNet's hidden_sizes), cut to `keep`."""
    return {
        k: v[:keep] for k, v in values.items() if k not in NOT_PER_STAGE and isinstance(v, list) and len(v) == count and count > 1
    }


def blocks_parent(layer_map: LayerMap) -> str | None:
    """The layer list every block is an item of (`vit.layers` for `vit.layers.0`, ...), or None.

    Example:
        >>> blocks_parent(LayerMap([], ["resnet.encoder.stages.0", "resnet.encoder.stages.1"], [], ["classifier"], ""))
        'resnet.encoder.stages'
    """
    parents = {name.rpartition(".")[0] for name in layer_map.blocks}
    items = [name.rpartition(".")[2] for name in layer_map.blocks]
    if len(parents) != 1 or layer_map.grouped or items != [str(i) for i in range(len(items))]:
        return None
    return parents.pop() or None


def keep_lower_blocks(
    model: nn.Module,
    layer_map: LayerMap,
    keep: int,
    map_of: Callable[[nn.Module, str | None], LayerMap],
    run: Callable[[nn.Module], Any] | None = None,
) -> tuple[nn.Module, LayerMap, str]:
    """A model of the lowest `keep` blocks of `model`, its pretrained tensors copied in; its layer map; a note.

    `map_of(model, blocks_path)` builds a model's layer map (as `setup_model` does); `blocks_path` names the
    kept layer list, since one remaining layer is no longer a run the map's search can recognise. `run(model)`
    runs an example forward pass (a head sized from a config value the cut did not change fails there).
    Raises ConfigError for a `keep` out of range and HftlError when the architecture cannot be cut so.
    """
    blocks = len(layer_map.blocks)
    if not 1 <= keep <= blocks:
        raise ConfigError(f"strategy.keep_blocks={keep}: this model has {blocks} blocks; choose 1..{blocks}")
    if keep == blocks:
        return model, layer_map, f"keep_blocks={keep} keeps every block: nothing to drop"
    changes = depth_changes(model.config, blocks, keep, layer_map.blocks[0])
    config = copy.deepcopy(model.config)
    for key, value in changes.items():
        *parents, leaf = key.split(".")
        setattr(_dotted(config, parents), leaf, value)
    if "stage_names" in changes and hasattr(config, "out_features"):
        config.out_features = [changes["stage_names"][-1]]  # the backbone's output: the last kept stage
    name = type(model).__name__
    try:
        small = type(model)(config)
        source, target = model.state_dict(), small.state_dict()
        copied = {k: v for k, v in source.items() if k in target and target[k].shape == v.shape}
        small.load_state_dict(copied, strict=False)
        small_map = map_of(small, blocks_parent(layer_map))
        if run is not None:
            small.eval()
            with torch.no_grad():
                run(small)
    except Exception as e:  # noqa: BLE001 - whatever breaks, the cut is what the architecture does not allow
        raise HftlError(
            f"strategy.keep_blocks: {name} cut to {keep} of {blocks} blocks does not work "
            f"({type(e).__name__}: {str(e).splitlines()[0][:200]}). Remove strategy.keep_blocks for this model"
        ) from None
    _verify(name, small, small_map, keep, set(target) - set(copied))
    dropped = sum(v.numel() for k, v in source.items() if k not in copied)
    summary = ", ".join(f"{k} {_dotted(model.config, k.split('.'))} -> {v}" for k, v in changes.items() if k != "stage_names")
    note = f"kept the lowest {keep} of {blocks} blocks ({summary}); {dropped:,} pretrained parameters dropped"
    return small, small_map, note


def _dotted(config: Any, keys: list[str]) -> Any:
    for key in keys:
        config = getattr(config, key, "?")
    return config


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
