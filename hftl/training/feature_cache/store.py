"""The on-disk store: one folder per split, one flat file per key, read back through memory maps.

An entry `<root>/<key>/` holds `meta.json` and one `shard-<rank>/` per filling process. A shard keeps each
key's examples back to back in `<key>.bin`, unpadded, with their byte offsets and shapes in `.npy` files
and the keys' dtypes in `shard.json`. Keys are `input.<name>` (what the collator made) and
`feature.<name>` (what crossed the cut); a key kept as shapes only has no `.bin` data.

Example:
    >>> split = CachedSplit(default_cache_dir() / key)                       # doctest: +SKIP
    >>> batch = collate_cached(split.batch([0, 1]), "input_ids", pass_main=True)   # doctest: +SKIP
"""

from __future__ import annotations

import json
import mmap
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch

from hftl.data.metrics import IGNORE
from hftl.data.sources import FEATURES

FULL = "@full"  # shape-only companion of a field stored at its first position (the CLS token) only
_DTYPES = {str(d).removeprefix("torch."): d for d in (torch.float32, torch.float16, torch.bfloat16, torch.float64,
                                                       torch.int64, torch.int32, torch.int16, torch.int8, torch.uint8,
                                                       torch.bool)}  # fmt: skip
_ITEMSIZE = {d: torch.empty((), dtype=d).element_size() for d in _DTYPES.values()}
_DONTNEED = getattr(mmap, "MADV_DONTNEED", None)  # Linux, macOS; elsewhere pages stay mapped until exit

# One example as `_ShardWriter.add` takes it: key -> (tensor to store, or None for shape only; shape; dtype).
Record = dict[str, tuple[torch.Tensor | None, tuple[int, ...], torch.dtype]]


def default_cache_dir() -> Path:
    """`$HFTL_FEATURE_CACHE`, else `~/.cache/hftl/features` (under `$XDG_CACHE_HOME` when set)."""
    if os.environ.get("HFTL_FEATURE_CACHE"):
        return Path(os.environ["HFTL_FEATURE_CACHE"]).expanduser()
    return Path(os.environ.get("XDG_CACHE_HOME", "~/.cache")).expanduser() / "hftl" / "features"


def _dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


class _ShardWriter:
    """Appends per-example tensors to one flat file per key; shapes and byte offsets go to .npy files."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        folder.mkdir(parents=True, exist_ok=True)
        self.files: dict[str, Any] = {}
        self.offsets: dict[str, list[int]] = {}
        self.shapes: dict[str, list[tuple[int, ...]]] = {}
        self.dtypes: dict[str, str] = {}
        self.stored: dict[str, bool] = {}
        self.indices: list[int] = []

    def add(self, index: int, record: Record) -> None:
        """`record`: key -> (tensor to store, or None for shape only; shape; dtype)."""
        self.indices.append(index)
        for key, (tensor, shape, dtype) in record.items():
            if key not in self.offsets:
                self.offsets[key], self.shapes[key] = [], []
                self.dtypes[key], self.stored[key] = _dtype_name(dtype), tensor is not None
                if tensor is not None:
                    self.files[key] = open(self.folder / f"{key}.bin", "wb")  # noqa: SIM115 (closed in finish)
            self.shapes[key].append(tuple(shape))
            if tensor is None:
                self.offsets[key].append(0)
                continue
            f = self.files[key]
            self.offsets[key].append(f.tell())
            f.write(tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())

    def finish(self, extra: dict[str, Any]) -> None:
        for f in self.files.values():
            f.close()
        for key in self.offsets:
            np.save(self.folder / f"{key}.offsets.npy", np.asarray(self.offsets[key], dtype=np.int64))
            ndim = len(self.shapes[key][0]) if self.shapes[key] else 0
            shapes = np.asarray(self.shapes[key], dtype=np.int64).reshape(len(self.shapes[key]), ndim)
            np.save(self.folder / f"{key}.shapes.npy", shapes)
        keys = {
            k: {"dtype": self.dtypes[k], "stored": self.stored[k], "uniform": len(set(self.shapes[k])) <= 1} for k in self.offsets
        }
        meta = {"indices": self.indices, "keys": keys}
        (self.folder / "shard.json").write_text(json.dumps({**meta, **extra}))


class CachedSplit:
    """One split's cached examples, read lazily through np.memmap (nothing is loaded up front)."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.meta = json.loads((folder / "meta.json").read_text())
        self.shards = [folder / s for s in self.meta["shards"]]
        self._where: dict[int, tuple[int, int]] = {}
        self._shard_meta = []
        for s, shard in enumerate(self.shards):
            meta = json.loads((shard / "shard.json").read_text())
            self._shard_meta.append(meta)
            for local, index in enumerate(meta["indices"]):
                self._where[index] = (s, local)
        self.keys: dict[str, dict[str, Any]] = self._shard_meta[0]["keys"] if self._shard_meta else {}
        self._arrays: dict[tuple[int, str], tuple[np.ndarray, np.ndarray, np.memmap | None]] = {}
        self._dims: dict[str, list[int] | None] = {}

    def __len__(self) -> int:
        return len(self._where)

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_arrays": {}}  # DataLoader workers map the files again, not copy them

    def nbytes(self) -> int:
        return sum(p.stat().st_size for p in self.folder.rglob("*.bin"))

    def _arrays_of(self, shard: int, key: str) -> tuple[np.ndarray, np.ndarray, np.memmap | None]:
        got = self._arrays.get((shard, key))
        if got is None:  # opened lazily, so each DataLoader worker maps the files itself
            folder = self.shards[shard]
            offsets, shapes = np.load(folder / f"{key}.offsets.npy"), np.load(folder / f"{key}.shapes.npy")
            path = folder / f"{key}.bin"
            data = np.memmap(path, dtype=np.uint8, mode="r") if self.keys[key]["stored"] and path.stat().st_size else None
            got = self._arrays[(shard, key)] = (offsets, shapes, data)
        return got

    def batch(self, indices: list[int]) -> dict[str, Any]:
        """The examples at `indices`, batched: per key a padded tensor, or (shape, dtype) when only the
        shape was kept. Fixed-size keys gather with one numpy take per shard, not one read per example."""
        where = [self._where[i] for i in indices]
        by_shard: dict[int, list[tuple[int, int]]] = {}
        for pos, (shard, local) in enumerate(where):
            by_shard.setdefault(shard, []).append((pos, local))
        out: dict[str, Any] = {}
        for key, info in self.keys.items():
            dtype = _DTYPES[info["dtype"]]
            dims = self._fixed_dims(key)
            fixed = dims is not None
            if not fixed:  # shapes differ between examples: pad to the batch's largest
                shapes = np.concatenate([self._arrays_of(s, key)[1][[loc for _, loc in group]] for s, group in by_shard.items()])
                dims = shapes.max(axis=0).tolist() if shapes.shape[1] else []
                # Shards filled by different processes may each be uniform, in shapes of their own.
                uniform = all(self._shard_meta[s]["keys"][key]["uniform"] for s in by_shard)
                fixed = uniform and bool((shapes == np.asarray(dims, dtype=shapes.dtype)).all())
            if not info["stored"]:
                out[key] = ((len(indices), *dims), info["dtype"])
                continue
            if fixed:
                out[key] = self._take(by_shard, key, dtype, dims, len(indices))
                continue
            rows = [self._row(s, local, key, dtype) for s, local in where]
            out[key] = _pad_stack(rows, IGNORE if key == "input.labels" else 0)
        self._release(by_shard)
        return out

    def _fixed_dims(self, key: str) -> list[int] | None:
        """The one shape every example of `key` has, or None when they differ (worked out once: a cached
        step of a small head takes about a millisecond, and gathering shapes per batch was a sixth of it)."""
        if key not in self._dims:
            uniform = all(meta["keys"][key]["uniform"] for meta in self._shard_meta)  # within each shard
            firsts = {tuple(int(d) for d in x[0]) for s in range(len(self.shards)) if len(x := self._arrays_of(s, key)[1])}
            self._dims[key] = list(next(iter(firsts))) if uniform and len(firsts) == 1 else None
        return self._dims[key]

    def _release(self, shards: Any) -> None:
        """Unmap the pages just read from this process (they stay in the kernel's page cache).

        The batch above holds copies, so nothing points into the files any more. Without this, every page
        an epoch touched would count in the process's resident memory until exit: a 270 MB cache showed as
        270 MB more RSS, as if the cache were in RAM, where a plain file read leaves nothing resident.
        """
        if not _DONTNEED:
            return
        for shard in shards:
            for key in self.keys:
                data = self._arrays.get((shard, key), (None, None, None))[2]
                if data is not None and getattr(data, "_mmap", None) is not None:
                    data._mmap.madvise(_DONTNEED)

    def _take(self, by_shard: dict[int, list[tuple[int, int]]], key: str, dtype: torch.dtype, dims: list[int], n: int) -> Any:
        width = int(np.prod(dims, dtype=np.int64)) * _ITEMSIZE[dtype]
        parts = []
        for shard, group in by_shard.items():
            data = self._arrays_of(shard, key)[2]
            positions, locals_ = zip(*group)
            rows = data.reshape(-1, width)[np.asarray(locals_)] if width else np.zeros((len(group), 0), np.uint8)
            parts.append((positions, torch.from_numpy(rows).view(dtype).reshape(len(group), *dims)))
        if len(parts) == 1:  # one shard: the rows came out in batch order
            return parts[0][1]
        out = torch.empty((n, *dims), dtype=dtype)
        for positions, rows in parts:
            out[torch.as_tensor(positions)] = rows  # a tensor index: a list would take milliseconds
        return out

    def _row(self, shard: int, local: int, key: str, dtype: torch.dtype) -> torch.Tensor:
        offsets, shapes, data = self._arrays_of(shard, key)
        shape = tuple(int(s) for s in shapes[local])
        n = int(np.prod(shape, dtype=np.int64)) * _ITEMSIZE[dtype]
        start = int(offsets[local])
        raw = torch.from_numpy(np.array(data[start : start + n])) if n else torch.empty(0, dtype=torch.uint8)
        return raw.view(dtype).reshape(shape)


def _pad_stack(tensors: list[torch.Tensor], value: float) -> torch.Tensor:
    shape = [len(tensors), *np.max([t.shape for t in tensors], axis=0).tolist()] if tensors[0].dim() else [len(tensors)]
    out = torch.full(shape, value, dtype=tensors[0].dtype)
    for i, t in enumerate(tensors):
        out[(i, *(slice(0, s) for s in t.shape))] = t
    return out


def collate_cached(record: dict[str, Any], main_input: str, pass_main: bool) -> dict[str, Any]:
    """Model inputs from `CachedSplit.batch`: inputs as they were, features for the stand-ins.

    Example:
        >>> batch = collate_cached(split.batch([0, 1]), "input_ids", pass_main=True)   # doctest: +SKIP
    """
    batch: dict[str, Any] = {}
    stored: dict[str, torch.Tensor] = {}
    shapes: dict[str, tuple[tuple[int, ...], str]] = {}
    for key, value in record.items():
        kind, name = key.split(".", 1)
        if isinstance(value, tuple):  # kept as shape and dtype only: the model's main input, unread fields
            if kind == "input":
                if pass_main:  # zeros of the input's shape, for model code that reads it
                    batch[main_input] = torch.zeros(value[0], dtype=_DTYPES[value[1]])
            else:
                shapes[name] = value
        else:
            (batch if kind == "input" else stored)[name] = value
    batch[FEATURES] = {"stored": stored, "shapes": shapes}
    return batch


# -- one collated batch as stored rows --------------------------------------------------------------
def row_records(
    batch: dict[str, Any], fields: dict[str, Any], main_input: str, inputs_only: bool, stored: set[str], first: set[str]
) -> Iterator[Record]:
    """Each example of a collated `batch` and of the `fields` that crossed the cut, as `_ShardWriter.add`
    takes it, padding cut off. Stored whole: the inputs (all of them when `inputs_only`, else all but
    `main_input`, whose features stand in for it) and the fields in `stored`; the fields in `first` at
    their first position only, with a shape-only `FULL` companion; everything else as shapes only.

    Example:
        >>> for i, record in zip(indices, row_records(batch, fields, "input_ids", False, {"hidden"}, set())):  # doctest: +SKIP
        ...     writer.add(i, record)
    """
    lengths = unpadded_lengths(batch)
    for row in range(len(batch["labels"])):
        trim = _trimmer(lengths, row)
        record: Record = {}
        for name, value in batch.items():
            # Multi-hot or regression label vectors are not sequences, whatever their length.
            kept = value[row] if name == "labels" and value.is_floating_point() else trim(value[row])
            keep = inputs_only or name != main_input
            record[f"input.{name}"] = (kept if keep else None, tuple(kept.shape), value.dtype)
        for name, value in fields.items():
            kept = trim(value[row])
            if name in first:
                record[f"feature.{name}"] = (kept[:1], (1, *kept.shape[1:]), value.dtype)
                record[f"feature.{name}{FULL}"] = (None, tuple(kept.shape), value.dtype)
                continue
            record[f"feature.{name}"] = (kept if name in stored else None, tuple(kept.shape), value.dtype)
        yield record


def unpadded_lengths(batch: dict[str, Any]) -> tuple[int, list[int]] | None:
    """(padded length, each example's length) from a right-padded 2-D attention mask, else None."""
    mask = batch.get("attention_mask")
    if not isinstance(mask, torch.Tensor) or mask.dim() != 2:
        return None
    lengths = mask.sum(dim=1).tolist()
    if any(not bool(mask[i, :n].all()) for i, n in enumerate(lengths)):
        return None  # left padding: leave the examples as they are
    return mask.shape[1], lengths


def _trimmer(lengths: tuple[int, list[int]] | None, row: int) -> Callable[[torch.Tensor], torch.Tensor]:
    """Cut an example's padding along its sequence dimension (the first, where it has the mask's length).

    Stored unpadded, examples batch to exactly the length an uncached batch pads to, so dropout in the
    trained blocks draws the same masks cached or not.
    """
    if lengths is None:
        return lambda t: t
    padded, n = lengths[0], lengths[1][row]
    return lambda t: t[:n] if t.dim() and t.shape[0] == padded else t
