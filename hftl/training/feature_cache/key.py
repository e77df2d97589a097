"""The cache key: fingerprints of everything that changes the stored features, hashed into a folder name.

The frozen tensors and model config, the processor's files, each split's rows (and input files' sizes and
mtimes), the data settings, precision, device and versions. Change any of them and a run gets a new entry;
change none and it reuses the old one, so what goes into the material must stay stable between releases
(bump `CACHE_VERSION` when the stored layout changes).

Example:
    >>> base = key_material(cfg, model, layer_map, processor, cut, batch_size=32, device="cuda")  # doctest: +SKIP
    >>> entry_key(split_material(base, data.train, stored={"pooler_output"}, first=set()))     # doctest: +SKIP
    '3f1c0a9e2b7d4c5e6f708192'
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from torch import nn

from hftl.models.layer_map import LayerMap
from hftl.training.feature_cache.cut import Cut

CACHE_VERSION = 1
_HEAD_CONFIG_KEYS = {"_name_or_path", "id2label", "label2id", "architectures", "transformers_version", "problem_type"}


def _hash_tensors(h: Any, named: Iterator[tuple[str, torch.Tensor]]) -> None:
    for name, tensor in named:
        t = tensor.detach().cpu().contiguous()
        h.update(f"{name}:{t.dtype}:{tuple(t.shape)}".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())


def _hasher() -> Any:
    """xxh3-128 (a datasets dependency, ~10x sha256's speed: a ViT-B hashes in tens of ms), else blake2b."""
    try:
        import xxhash

        return xxhash.xxh3_128()
    except ImportError:
        return hashlib.blake2b(digest_size=16)


def weights_fingerprint(model: nn.Module, layer_map: LayerMap, cut: Cut) -> str:
    """Hash of the prefix's parameters and buffers and of the model config (head labels aside).

    Example:
        >>> weights_fingerprint(model, layer_map, cut)   # doctest: +SKIP
        'c0ffee...'
    """
    return parts_fingerprint(model, layer_map, cut.prefix_parts)


def parts_fingerprint(model: nn.Module, layer_map: LayerMap, parts: frozenset[str] | set[str]) -> str:
    """Hash of the model config (head labels aside) and of the tensors of the layer-map `parts` (e.g. "block.3").

    Example:
        >>> parts_fingerprint(model, layer_map, {"embeddings", "block.0"})   # doctest: +SKIP
        'c0ffee...'
    """
    h = _hasher()
    config = getattr(model, "config", None)
    if config is not None:
        d = {k: v for k, v in config.to_dict().items() if k not in _HEAD_CONFIG_KEYS}
        h.update(json.dumps(d, sort_keys=True, default=str).encode())
    named = [*model.named_parameters(), *model.named_buffers()]
    _hash_tensors(h, ((n, t) for n, t in sorted(named, key=lambda x: x[0]) if layer_map.part_of(n) in parts))
    return h.hexdigest()


def processor_fingerprint(processor: Any) -> str:
    """Hash of the files `save_pretrained` writes: tokenizer vocabulary, image / audio settings.

    Example:
        >>> processor_fingerprint(None)
        'none'
    """
    h = hashlib.sha256()
    if processor is None:
        return "none"
    with tempfile.TemporaryDirectory() as tmp:
        processor.save_pretrained(tmp)
        for path in sorted(Path(tmp).rglob("*")):
            if path.is_file():
                h.update(path.name.encode())
                h.update(path.read_bytes())
    return h.hexdigest()


def data_fingerprint(ds: Any, column: str) -> str:
    """Hash of a split's inputs and labels, in order; for file paths, each file's size and mtime too.

    Example:
        >>> data_fingerprint(datasets.Dataset.from_dict({"text": ["a"], "labels": [0]}), "text")   # doctest: +SKIP
        '5d41402a...'
    """
    h = _hasher()
    table = ds.with_format("arrow")[:]
    for name in (column, "labels"):
        if name not in table.column_names:
            continue
        col = table.column(name).combine_chunks()
        h.update(str(col.type).encode())
        for buf in col.buffers():
            if buf is not None:
                h.update(memoryview(buf))
    values = table.column(column).to_pylist() if len(table) else []
    if values and isinstance(values[0], str) and os.path.exists(values[0]):
        for value in values:
            try:
                st = os.stat(value)
                h.update(f"{st.st_size}:{st.st_mtime_ns}".encode())
            except OSError:
                h.update(b"missing")
    return h.hexdigest()


def key_material(
    cfg: Any, model: nn.Module, layer_map: LayerMap, processor: Any, cut: Cut, batch_size: int, device: str
) -> dict[str, Any]:
    """What every split's key shares: the cut and what shapes its features, the run's data settings,
    the fill batch size, precision, device and versions (`device` is the device type, e.g. "cuda").

    Example:
        >>> key_material(cfg, model, layer_map, processor, cut, batch_size=32, device="cpu")["version"]   # doctest: +SKIP
        1
    """
    import transformers

    material = {
        "version": CACHE_VERSION,
        "cut": [cut.kind],
        "processor": processor_fingerprint(processor),
        "task": cfg.task,
        "data": {k: getattr(cfg.data, k) for k in ("max_length", "max_duration_seconds", "text_pair_column")},
        "batch_size": batch_size,
        "versions": [torch.__version__, transformers.__version__],
    }
    if cut.kind == "input":  # the inputs depend on the data and the processor only
        return material
    return {
        **material,
        "model": type(model).__name__,
        "cut": [cut.kind, cut.module],
        "weights": weights_fingerprint(model, layer_map, cut),
        "precision": [cfg.train.mixed_precision, str(next(model.parameters()).dtype)],
        "device": device,
    }


def split_material(key_base: dict[str, Any], ds: Any, stored: set[str], first: set[str]) -> dict[str, Any]:
    """One split's key material: `key_base` (see `key_material`), its rows, and which fields are stored
    whole (`stored`) or at their first position only (`first`). Also written to the entry's meta.json.

    Example:
        >>> split_material(base, data.validation, stored={"hidden"}, first=set())["stored"]   # doctest: +SKIP
        ['hidden']
    """
    material = {**key_base, "split_data": data_fingerprint(ds.ds, ds.column), "stored": sorted(stored)}
    if first:
        material["first_position"] = sorted(first)
    return material


def entry_key(material: dict[str, Any]) -> str:
    """The entry's folder name: 24 hex digits of the material's sha256.

    Example:
        >>> len(entry_key({"version": 1}))
        24
    """
    return hashlib.sha256(json.dumps(material, sort_keys=True).encode()).hexdigest()[:24]
