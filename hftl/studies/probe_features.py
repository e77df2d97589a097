"""Every block's output of a frozen model over a split, pooled to one vector per example, kept in the feature cache.

`hftl probe` scores each block of each model; this runs the model once per split with a forward hook on
every block of its layer map and pools what each block outputs: the mean over tokens, frames or patches
(padding left out where the batch says which positions are real), or over height and width for a
convolutional stage. The result is stored as an entry of the feature cache folder (`hftl cache list`
shows it, `hftl cache clear` and the size cap prune it), keyed by the model's weights, its processor and
the split's rows, so probing the same model on the same data again (another block range, another
ranking, a later `--models` list that includes it) reads it back in a second.

Example:
    >>> found = block_features(model, layer_map, data.train, data.collate, processor, "vit", settings)  # doctest: +SKIP
    >>> [f.shape for f in found.blocks]                                                                  # doctest: +SKIP
    [(900, 32), (900, 32)]
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from hftl.models.layer_map import LayerMap
from hftl.training.feature_cache.folder import META, PARTIAL, touch
from hftl.training.feature_cache.key import data_fingerprint, entry_key, parts_fingerprint, processor_fingerprint
from hftl.training.feature_cache.store import default_cache_dir

PROBE_VERSION = 2  # bump when pooling or the stored layout changes (2: the first position kept too)
FILE = "blocks.safetensors"


@dataclass
class BlockFeatures:
    """One split's pooled block outputs (N x D_i per block, bottom first), what the pass cost, and whether it was
    read back; `first`: each block's output at the first position (the CLS token a BERT pooler or a ViT head
    reads), None for a block whose output has no positions (a convolutional stage)."""

    blocks: list[np.ndarray]
    seconds: float
    reused: bool
    first: list[np.ndarray | None]


def block_output_modules(layer_map: LayerMap) -> list[str]:
    """The module whose output is block i's output: the block, or the last of its parallel members.

    Example:
        >>> block_output_modules(LayerMap([], ["enc.0", "enc.1"], [], ["classifier"], ""))
        ['enc.0', 'enc.1']
    """
    members = layer_map.block_members or [[] for _ in layer_map.blocks]
    return [group[-1] if group else name for name, group in zip(layer_map.blocks, members)]


def pool(hidden: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """One vector per example of a block's output: the mean over positions (real ones where `mask` marks them),
    or over height and width of a B x C x H x W map.

    Example:
        >>> pool(torch.ones(2, 3, 4), torch.tensor([[1, 1, 0], [1, 0, 0]])).shape
        torch.Size([2, 4])
    """
    hidden = hidden.float()
    if hidden.dim() == 4:
        return hidden.mean(dim=(2, 3))
    if hidden.dim() == 3:
        if mask is not None and mask.shape == hidden.shape[:2]:
            weights = mask.to(hidden.dtype).unsqueeze(-1)
            return (hidden * weights).sum(1) / weights.sum(1).clamp(min=1.0)
        return hidden.mean(dim=1)
    return hidden.reshape(len(hidden), -1)


def _first_tensor(output: Any) -> torch.Tensor:
    if isinstance(output, torch.Tensor):
        return output
    values = output.values() if isinstance(output, dict) else output
    for value in values:
        if isinstance(value, torch.Tensor):
            return value
    raise TypeError(f"a block returned no tensor ({type(output).__name__})")


def _position_mask(model: nn.Module, batch: dict[str, Any], positions: int) -> torch.Tensor | None:
    """Which of `positions` are real: the tokenizer's attention mask, or a speech model's frame mask."""
    mask = batch.get("attention_mask")
    if mask is None:
        return None
    if mask.shape[1] == positions:
        return mask
    frames = getattr(model, "_get_feature_vector_attention_mask", None)  # wav2vec2 family: samples -> frames
    if frames is not None:
        with contextlib.suppress(Exception):
            return frames(positions, mask)
    return None


def _run(
    model: nn.Module, layer_map: LayerMap, loader: DataLoader, device: torch.device, desc: str
) -> tuple[list[np.ndarray], list[np.ndarray | None]]:
    """The pooled outputs of every block over `loader` and their first positions, with forward hooks."""
    names = block_output_modules(layer_map)
    outputs: dict[int, Any] = {}
    hooks = [
        model.get_submodule(name).register_forward_hook(lambda _m, _i, out, i=i: outputs.__setitem__(i, out))
        for i, name in enumerate(names)
    ]
    pooled: list[list[np.ndarray]] = [[] for _ in names]
    firsts: list[list[np.ndarray]] = [[] for _ in names]
    try:
        model.eval()
        with torch.no_grad():
            for batch in tqdm(loader, desc=desc, leave=False):
                batch = {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in batch.items() if k != "labels"}
                outputs.clear()
                model(**batch)
                for i in range(len(names)):
                    hidden = _first_tensor(outputs[i])
                    mask = _position_mask(model, batch, hidden.shape[1]) if hidden.dim() == 3 else None
                    pooled[i].append(pool(hidden, mask).cpu().numpy())
                    if hidden.dim() == 3:
                        firsts[i].append(hidden[:, 0].float().cpu().numpy())
    finally:
        for hook in hooks:
            hook.remove()
    joined = [np.concatenate(parts) if parts else np.zeros((0, 0), np.float32) for parts in pooled]
    return joined, [np.concatenate(parts) if parts else None for parts in firsts]


def block_features(
    model: nn.Module,
    layer_map: LayerMap,
    dataset: Any,
    collate: Any,
    processor: Any,
    about: dict[str, str],
    settings: dict[str, Any],
    batch_size: int = 32,
    root: Path | None = None,
) -> BlockFeatures:
    """Pooled block outputs of `dataset` (an `ExampleDataset`), read from the cache or computed and stored.

    `about` names the entry for `hftl cache list` ({"model": ..., "split": ...}); `settings` are the data
    options that change the inputs (they go into the key).
    """
    root = root or default_cache_dir()
    parts = {"embeddings", *(f"block.{i}" for i in range(len(layer_map.blocks)))}
    material = {
        "probe": PROBE_VERSION,
        "model": type(model).__name__,
        "weights": parts_fingerprint(model, layer_map, parts),
        "processor": processor_fingerprint(processor),
        "split": data_fingerprint(dataset.ds, dataset.column),
        "settings": settings,
        "batch_size": batch_size,  # padding per batch reaches unmasked means (audio without a frame mask)
        "versions": [torch.__version__],
    }
    key = "probe-" + entry_key(material)
    folder = root / key
    if (folder / FILE).is_file():
        from safetensors.numpy import load_file

        stored = load_file(str(folder / FILE))
        touch(folder)
        count = sum(k.startswith("block.") for k in stored)
        return BlockFeatures(
            [stored[f"block.{i}"] for i in range(count)], 0.0, True, [stored.get(f"first.{i}") for i in range(count)]
        )
    device = next(model.parameters()).device
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, collate_fn=collate)
    started = time.perf_counter()
    blocks, first = _run(model, layer_map, loader, device, f"{about.get('model', 'model')}: {about.get('split', '')} blocks")
    seconds = time.perf_counter() - started
    arrays = {f"block.{i}": b for i, b in enumerate(blocks)} | {f"first.{i}": f for i, f in enumerate(first) if f is not None}
    _store(root, key, arrays, {"about": about, "count": len(dataset), "material": material, "seconds": seconds})
    return BlockFeatures(blocks, seconds, False, first)


def _store(root: Path, key: str, arrays: dict[str, np.ndarray], meta: dict[str, Any]) -> None:
    """Write the entry whole or not at all (a partial folder renamed into place); a full disk only means uncached."""
    from safetensors.numpy import save_file

    partial = root / f".{key}{PARTIAL}{secrets.token_hex(4)}"
    try:
        partial.mkdir(parents=True)
        save_file({k: np.ascontiguousarray(a) for k, a in arrays.items()}, str(partial / FILE))
        (partial / META).write_text(json.dumps(meta, default=str))
        os.replace(partial, root / key)
    except OSError as e:  # full disk, read-only cache, or another process stored the same entry first
        shutil.rmtree(partial, ignore_errors=True)
        if not (root / key / FILE).is_file():
            print(f"feature cache: probe features not stored in {root} ({e.strerror or e}); the probe goes on")
