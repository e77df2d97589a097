"""Frozen-prefix feature cache: run the frozen part of the model once per example, train on its output.

head_only trains only the head, so everything the base model returns is the same every epoch; freeze
trains the top blocks, so the hidden states entering the first trainable block are. The cache stores
those tensors on disk (memory-mapped, so it may be larger than RAM), keyed by everything that changes
them, and the model trains with the frozen part stood in for by the stored tensors:

- **base cut** (every base-model parameter frozen): the base model's `forward` returns the stored
  outputs. Which output fields the head reads is found by poisoning each with NaN on one batch; the
  others are stored as shapes only.
- **block cut** (embeddings and blocks below block k frozen): the frozen blocks pass their input
  through, and a pre-hook on block k swaps in the stored hidden states. The embeddings still run, on
  zeros of the right shape, so the model's own glue code (masks, shapes) stays untouched.

Safety first: before a cache is used, one batch runs both ways and must give the same logits; the
frozen part must also behave the same in training as in inference (no dropout, SpecAugment, LayerDrop
or batch statistics there), otherwise only validation and test use the cache.

Example:
    >>> cache = FeatureCache(cfg, model, layer_map, data, accelerator)   # doctest: +SKIP
    >>> cache.activate(plan.phase_at(0))          # fills or reuses, installs the stand-ins  # doctest: +SKIP
    >>> cache.close()                             # the real model again, for export       # doctest: +SKIP
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import mmap
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from accelerate.utils import broadcast_object_list, send_to_device
from torch import nn
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from hftl.cache_folder import prune, touch
from hftl.data import loader_workers
from hftl.errors import ConfigError
from hftl.layers import LayerMap, full_name
from hftl.metrics import IGNORE
from hftl.sharding import is_deepspeed, is_sharded

FULL = "@full"  # shape-only companion of a field stored at its first position (the CLS token) only
FEATURES = "hftl_features"  # batch key of the stored tensors; the trainer hands it to the stand-ins
CACHE_VERSION = 1
_DTYPES = {str(d).removeprefix("torch."): d for d in (torch.float32, torch.float16, torch.bfloat16, torch.float64,
                                                       torch.int64, torch.int32, torch.int16, torch.int8, torch.uint8,
                                                       torch.bool)}  # fmt: skip
_ITEMSIZE = {d: torch.empty((), dtype=d).element_size() for d in _DTYPES.values()}
_DONTNEED = getattr(mmap, "MADV_DONTNEED", None)  # Linux, macOS; elsewhere pages stay mapped until exit


def default_cache_dir() -> Path:
    """`$HFTL_FEATURE_CACHE`, else `~/.cache/hftl/features` (under `$XDG_CACHE_HOME` when set)."""
    if os.environ.get("HFTL_FEATURE_CACHE"):
        return Path(os.environ["HFTL_FEATURE_CACHE"]).expanduser()
    return Path(os.environ.get("XDG_CACHE_HOME", "~/.cache")).expanduser() / "hftl" / "features"


# -- where to cut -----------------------------------------------------------------------------------
@dataclass(frozen=True)
class Cut:
    """Where the frozen prefix ends in one phase."""

    kind: str  # "base", "block", or "input" (nothing frozen: the processed model inputs are cached)
    module: str  # the base model, or the first trainable block (full module name); "" for inputs
    skipped: tuple[str, ...] = ()  # block cut: the frozen blocks below `module`
    prefix_parts: frozenset[str] = frozenset()  # layer-map parts whose tensors shape the features

    def describe(self) -> str:
        if self.kind == "input":
            return "model inputs (decoded and processed once)"
        return "base-model outputs" if self.kind == "base" else f"hidden states entering {self.module}"


def find_cut(model: nn.Module, layer_map: LayerMap, trainable: frozenset[str]) -> Cut | None:
    """The cut for a phase training `trainable`, or None when nothing below the trained part is frozen."""
    parts = {name: layer_map.part_of(name) for name, _ in model.named_parameters()}
    trained = {parts[n] for n in trainable if n in parts}
    if layer_map.base_prefix and trained <= {"head"}:
        base_parts = frozenset(p for p in parts.values() if p != "head")
        return Cut("base", full_name(model, layer_map.base_prefix), prefix_parts=base_parts)
    blocks = sorted(i for p in trained if (i := layer_map.block_index(p)) is not None)
    if "embeddings" in trained or not blocks or blocks[0] == 0:
        return None
    k = blocks[0]
    return Cut(
        "block",
        full_name(model, layer_map.blocks[k]),
        skipped=tuple(full_name(model, b) for b in layer_map.blocks[:k]),
        prefix_parts=frozenset({"embeddings", *(f"block.{i}" for i in range(k))}),
    )


# -- the key ----------------------------------------------------------------------------------------
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
    """Hash of the prefix's parameters and buffers and of the model config (head labels aside)."""
    h = _hasher()
    config = getattr(model, "config", None)
    if config is not None:
        d = {k: v for k, v in config.to_dict().items() if k not in _HEAD_CONFIG_KEYS}
        h.update(json.dumps(d, sort_keys=True, default=str).encode())
    named = [*model.named_parameters(), *model.named_buffers()]
    _hash_tensors(h, ((n, t) for n, t in sorted(named, key=lambda x: x[0]) if layer_map.part_of(n) in cut.prefix_parts))
    return h.hexdigest()


def processor_fingerprint(processor: Any) -> str:
    """Hash of the files `save_pretrained` writes: tokenizer vocabulary, image / audio settings."""
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
    """Hash of a split's inputs and labels, in order; for file paths, each file's size and mtime too."""
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


# -- on disk ----------------------------------------------------------------------------------------
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

    def add(self, index: int, record: dict[str, tuple[torch.Tensor | None, tuple[int, ...], torch.dtype]]) -> None:
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


# -- stand-ins --------------------------------------------------------------------------------------
class _Stop(Exception):
    """Raised by the capture hook: nothing after the cut needs computing while filling the cache."""


class _Feed:
    """Hands the current batch's stored tensors to the stand-ins."""

    def __init__(self) -> None:
        self.features: dict[str, Any] | None = None

    def tensors(self) -> dict[str, torch.Tensor]:
        if self.features is None:
            raise RuntimeError("feature cache: the model ran without cached features for this batch")
        out = dict(self.features["stored"])
        ref = next(iter(out.values()), None)  # shape-only placeholders go where the stored tensors are
        device = ref.device if ref is not None else None
        for name, (shape, dtype) in self.features["shapes"].items():
            if name.endswith(FULL):  # only the first position was stored: the head reads no other
                out[name.removesuffix(FULL)] = out[name.removesuffix(FULL)].expand(shape)
            else:
                out[name] = torch.zeros((), dtype=_DTYPES[dtype], device=device).expand(shape)
        return out


def _output_kind(out: Any) -> str:
    return "tensor" if isinstance(out, torch.Tensor) else f"tuple:{len(out)}"


def _pass_through(kind: str, original: Callable[..., Any], feed: _Feed) -> Callable[..., Any]:
    def forward(*args: Any, **kwargs: Any) -> Any:
        if feed.features is None:  # an uncached batch (training examples that are augmented)
            return original(*args, **kwargs)
        hidden = args[0] if args else kwargs["hidden_states"]
        if kind == "tensor":
            return hidden
        return (hidden, *([None] * (int(kind.split(":")[1]) - 1)))

    return forward


@dataclass
class _Installed:
    modules: list[tuple[nn.Module, Any]] = field(default_factory=list)
    hooks: list[Any] = field(default_factory=list)

    def patch(self, module: nn.Module, make: Callable[[Callable[..., Any]], Callable[..., Any]]) -> None:
        """Give `module` an instance `forward` built around its current one; `remove` restores it."""
        self.modules.append((module, module.__dict__.get("forward")))
        module.forward = make(module.forward)

    def remove(self) -> None:
        for module, previous in reversed(self.modules):
            if previous is None:
                module.__dict__.pop("forward", None)
            else:
                module.forward = previous
        for hook in self.hooks:
            hook.remove()
        self.modules, self.hooks = [], []


def install(model: nn.Module, cut: Cut, feed: _Feed, output_class: Any, block_kind: str) -> _Installed:
    """Stand in for the frozen prefix with the stored tensors whenever a batch carries them (instance
    `forward`s and a pre-hook; nothing is re-registered, so state_dict, DDP and the optimizer see the
    same model). Batches without stored tensors run the real modules."""
    installed = _Installed()
    target = model.get_submodule(cut.module)
    if cut.kind == "base":

        def make(original: Callable[..., Any]) -> Callable[..., Any]:
            def forward(*args: Any, **kwargs: Any) -> Any:
                return original(*args, **kwargs) if feed.features is None else _rebuild(output_class, feed.tensors())

            return forward

        installed.patch(target, make)
        return installed
    for name in cut.skipped:
        installed.patch(model.get_submodule(name), lambda original: _pass_through(block_kind, original, feed))

    def swap_in(module: nn.Module, args: tuple, kwargs: dict) -> tuple[tuple, dict] | None:
        if feed.features is None:
            return None
        hidden = feed.tensors()["hidden"]
        if args:
            return (hidden, *args[1:]), kwargs
        return args, {**kwargs, "hidden_states": hidden}

    installed.hooks.append(target.register_forward_pre_hook(swap_in, with_kwargs=True))
    return installed


@contextmanager
def _capture(model: nn.Module, cut: Cut) -> Iterator[dict[str, Any]]:
    """While active, a forward stops at the cut; the dict gets what crossed it."""
    got: dict[str, Any] = {}
    target = model.get_submodule(cut.module)
    hooks = []
    if cut.kind == "base":

        def after(module: nn.Module, args: tuple, kwargs: dict, out: Any) -> None:
            got["out"] = out
            raise _Stop

        hooks.append(target.register_forward_hook(after, with_kwargs=True))
    else:

        def before(module: nn.Module, args: tuple, kwargs: dict) -> None:
            got["out"] = args[0] if args else kwargs["hidden_states"]
            raise _Stop

        def block_out(module: nn.Module, args: tuple, out: Any) -> None:
            got["block_kind"] = _output_kind(out)

        hooks.append(target.register_forward_pre_hook(before, with_kwargs=True))
        hooks.append(model.get_submodule(cut.skipped[-1]).register_forward_hook(block_out))
    try:
        yield got
    finally:
        for hook in hooks:
            hook.remove()


def _run_to_cut(model: nn.Module, batch: dict[str, Any], got: dict[str, Any]) -> Any:
    try:
        model(**batch)
    except _Stop:
        return got["out"]
    raise RuntimeError("feature cache: the forward pass never reached the cut")


def _fields(out: Any) -> dict[str, Any]:
    """The tensors that crossed the cut, by name; tuple fields (per-layer hidden states) as `name#i`."""
    if isinstance(out, torch.Tensor):
        return {"hidden": out}
    fields: dict[str, Any] = {}
    for name, value in out.items():
        if isinstance(value, (tuple, list)):
            fields.update({f"{name}#{i}": v for i, v in enumerate(value)})
        else:
            fields[name] = value
    return fields


def _rebuild(output_class: Any, fields: dict[str, torch.Tensor]) -> Any:
    """The base model's output object from `_fields`' flat names."""
    kwargs: dict[str, Any] = {}
    for name, value in fields.items():
        if "#" in name:
            base, i = name.split("#")
            kwargs.setdefault(base, {})[int(i)] = value
        else:
            kwargs[name] = value
    kwargs = {k: tuple(v[i] for i in sorted(v)) if isinstance(v, dict) else v for k, v in kwargs.items()}
    return output_class(**kwargs)


# -- the cache of one run ---------------------------------------------------------------------------
@dataclass
class CacheStatus:
    """What the cache did in a run, for the log and metrics.json."""

    train: bool = False
    eval: bool = False
    cut: str | None = None
    note: str | None = None
    fill_seconds: float = 0.0
    bytes: int = 0
    reused: bool = False

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


class FeatureCache:
    """The cache for one `fit`: fills or reuses per phase, installs and removes the stand-ins."""

    def __init__(self, cfg: Any, model: nn.Module, layer_map: LayerMap, data: Any, accelerator: Any) -> None:
        self.cfg, self.model, self.layer_map, self.data, self.accelerator = cfg, model, layer_map, data, accelerator
        self.mode = cfg.train.feature_cache
        self.root = Path(cfg.train.feature_cache_dir).expanduser() if cfg.train.feature_cache_dir else default_cache_dir()
        self.folders: set[Path] = set()  # the entries this run uses: never pruned by it
        self.feed = _Feed()
        self.installed: _Installed | None = None
        self.main_input = getattr(model, "main_input_name", "input_ids")
        self.pass_main = True
        self._padding_marked = True  # input cut: whether a filled batch's padding can be cut off again
        self._first: set[str] = set()  # base cut: fields stored at their first position only
        self.status = CacheStatus()
        self._splits = [("train", data.train), ("validation", data.validation)]
        if data.test is not None:
            self._splits.append(("test", data.test))

    def print(self, text: str) -> None:
        self.accelerator.print(f"feature cache: {text}")

    # The trainer calls these three.
    def activate(self, phase: Any) -> None:
        """Use the cache in `phase` where it is safe; a phase without frozen prefix runs uncached."""
        self.deactivate()
        if self.mode == "off":
            return
        if self.cfg.train.torch_compile:  # the compiled graph would not see the stand-ins
            self._refuse("train.torch_compile=true compiles the frozen part into the graph")
            return
        if is_sharded(self.accelerator) or is_deepspeed(self.accelerator):  # weights gathered or cast
            self._refuse("the model is sharded with FSDP or DeepSpeed, which the stand-ins are not tested with")
            return
        cut = find_cut(self.model, self.layer_map, phase.trainable)
        if cut is None and self.main_input == "input_ids":  # text is tokenized once already (Modality.encode)
            self._refuse(f"the {phase.name} phase trains the lowest backbone block, so nothing below it is frozen to cache")
            return
        # Nothing frozen below the trained part: cache what the model is fed (decoded, resized, resampled,
        # normalised inputs), so later epochs skip decoding. Only where augmentation does not redraw them.
        cut = cut or Cut("input", "")
        try:
            # Filling draws nothing a run should see (DataLoader seeds among it): the global RNG is kept.
            with torch.random.fork_rng(devices=_rng_devices()):
                self._activate(phase, cut)
        except _Unsafe as e:
            self.deactivate()
            self._refuse(str(e))

    def feed_batch(self, batch: dict[str, Any]) -> None:
        features = batch.pop(FEATURES, None)
        self.feed.features = features

    def deactivate(self) -> None:
        if self.installed is not None:
            self.installed.remove()
            self.installed = None
        for _, ds in self._splits:
            ds.cached = None

    close = deactivate

    # -- internals ---------------------------------------------------------------------------------
    def _refuse(self, why: str) -> None:
        if self.mode == "on":
            raise ConfigError(f"train.feature_cache=on, but {why}. Use train.feature_cache=auto to run uncached where it must")
        if self.status.note != why:
            self.status.note = why
            self.print(f"off ({why})")

    def _activate(self, phase: Any, cut: Cut) -> None:
        model = self.model
        started = time.perf_counter()
        probe = self._batch(self.data.validation, range(min(len(self.data.validation), self._batch_size())))
        self._first = set()
        if cut.kind == "input":
            self._activate_inputs(phase, cut, probe, started)
            return
        with torch.no_grad(), _eval_mode(model):
            with _capture(model, cut) as got:
                reference = _fields(_run_to_cut(model, probe, got))
            block_kind = got.get("block_kind", "tensor")
            output_class = type(got["out"]) if cut.kind == "base" else None
        for name, value in reference.items():
            if not isinstance(value, torch.Tensor) or value.shape[:1] != probe[self.main_input].shape[:1]:
                raise _Unsafe(f"the {cut.describe()} field {name!r} is not a per-example tensor")
        stored = self._used_fields(cut, probe, reference, output_class) if cut.kind == "base" else {"hidden"}
        if cut.kind == "base":
            self._first = self._first_position_fields(cut, probe, reference, output_class, stored)
        train_ok, why_not = self._train_safe(phase, cut, probe, reference)

        key_base = self._key_material(cut)
        caches: dict[str, CachedSplit] = {}
        reused = True
        for split, ds in self._splits:
            if split == "train" and not train_ok:
                continue
            folder, was_there = self._fill(split, ds, cut, stored, key_base)
            reused &= was_there
            caches[split] = CachedSplit(folder)
        self._verify(cut, caches["validation"], probe, output_class, block_kind)
        self._use(phase, cut, caches, train_ok, why_not, started, reused)

    def _use(
        self,
        phase: Any,
        cut: Cut,
        caches: dict[str, CachedSplit],
        train_ok: bool,
        why_not: str | None,
        started: float,
        reused: bool,
    ) -> None:
        """Point the splits at their caches, record the status and say what runs cached."""
        for split, ds in self._splits:
            if split in caches:
                ds.cached = caches[split]
        self.status = CacheStatus(
            train=train_ok,
            eval=True,
            cut=cut.describe(),
            note=why_not,
            fill_seconds=self.status.fill_seconds + time.perf_counter() - started,
            bytes=sum(c.nbytes() for c in caches.values()),
            reused=reused,
        )
        where = next(iter(caches.values())).folder.parent
        size = self.status.bytes / 2**20
        what = "training and evaluation" if train_ok else "validation and test only"
        how = "reused" if reused else f"filled in {time.perf_counter() - started:.1f} s"
        self.print(f"{phase.name} runs on cached {cut.describe()} for {what} ({size:.1f} MiB in {where}, {how})")
        if why_not:
            self.print(f"training examples run uncached: {why_not}")

    def _activate_inputs(self, phase: Any, cut: Cut, probe: dict[str, Any], started: float) -> None:
        """Cache the processed inputs of every split augmentation leaves alone; checked against the collator."""
        augmented = self.data.train.augment is not None
        splits = [(split, ds) for split, ds in self._splits if not (split == "train" and augmented)]
        per_example = sum(t.numel() * t.element_size() for t in probe.values() if isinstance(t, torch.Tensor))
        size = per_example / max(len(probe["labels"]), 1) * sum(len(ds) for _, ds in splits)
        cap = self.cfg.train.feature_cache_max_gb * 2**30 or math.inf
        existing = next((p for p in (self.root, *self.root.parents) if p.exists()), Path("/"))
        free = shutil.disk_usage(existing).free
        if size > min(cap / 2, free * 0.8):
            why = "half of train.feature_cache_max_gb" if cap / 2 < free * 0.8 else "80% of the free disk space"
            raise _Unsafe(f"the processed inputs would take {size / 2**30:.1f} GB, over {why} ({self.root})")
        self._padding_marked = _unpadded_lengths(probe) is not None or self._fixed_size(probe)
        key_base = self._key_material(cut)
        caches: dict[str, CachedSplit] = {}
        reused = True
        for split, ds in splits:
            folder, was_there = self._fill(split, ds, cut, set(), key_base)
            reused &= was_there
            caches[split] = CachedSplit(folder)
        self._verify_inputs(cut, caches["validation"])
        self.pass_main = True
        why_not = (
            "data.augment is on, so training examples differ every epoch; set data.augment=false to cache them too"
            if augmented
            else None
        )
        self._use(phase, cut, caches, not augmented, why_not, started, reused)

    def _fixed_size(self, probe: dict[str, Any]) -> bool:
        """Whether examples collated alone have the batch's shape (images), so a batch holds no padding."""
        plain = _plain(self.data.validation)
        alone = [self.data.collate([plain[i]])[self.main_input].shape[1:] for i in range(min(len(plain), 4))]
        return all(shape == probe[self.main_input].shape[1:] for shape in alone)

    def _verify_inputs(self, cut: Cut, cache: CachedSplit) -> None:
        """Examples from different fill batches, collated by the modality and read from the cache: equal."""
        ds = self.data.validation
        indices = list(range(0, min(len(ds), 2 * self._fill_batch_size(cut)), 2))[: self._batch_size()]
        expected = self.data.collate([_plain(ds)[i] for i in indices])
        got = collate_cached(cache.batch(indices), self.main_input, pass_main=True)
        got.pop(FEATURES)
        same = expected.keys() == got.keys() and all(
            isinstance(v, torch.Tensor) and v.shape == got[k].shape and torch.equal(v, got[k].to(v.dtype))
            for k, v in expected.items()
        )
        if not same:
            raise _Unsafe("the processed inputs depend on the batch they are padded in (no attention mask)")

    def _batch_size(self) -> int:
        t = self.cfg.train
        return t.eval_batch_size or t.batch_size

    def _fill_batch_size(self, cut: Cut) -> int:
        # Inputs are stored one example at a time when no attention mask marks their padding: each is
        # then stored unpadded, as the processor makes it alone (checked by _verify_inputs).
        if cut.kind == "input" and not self._padding_marked:
            return 1
        return self._batch_size()

    def _batch(self, ds: Any, indices: Any) -> dict[str, Any]:
        plain = _plain(ds)
        batch = self.data.collate([plain[i] for i in indices])
        return send_to_device(batch, self.accelerator.device)

    def _reads(self, cut: Cut, probe: dict, poisoned: dict[str, torch.Tensor], output_class: Any) -> bool:
        """Whether the head's logits turn NaN when the base model outputs `poisoned` (it reads the NaNs)."""
        standin = _Installed()
        standin.patch(self.model.get_submodule(cut.module), lambda _: lambda *a, **k: _rebuild(output_class, poisoned))
        try:
            with torch.no_grad(), _eval_mode(self.model):
                logits = self.model(**probe).logits
        finally:
            standin.remove()
        return not torch.isfinite(logits.float()).all()

    def _used_fields(self, cut: Cut, probe: dict, reference: dict[str, torch.Tensor], output_class: Any) -> set[str]:
        """The base-output fields the head reads: poison one with NaN; if the logits stay finite, it is unused."""
        used = set()
        for name, value in reference.items():
            if not value.is_floating_point() or self._reads(
                cut, probe, {**reference, name: torch.full_like(value, float("nan"))}, output_class
            ):
                used.add(name)
        return used or set(reference)

    def _first_position_fields(
        self, cut: Cut, probe: dict, reference: dict[str, torch.Tensor], output_class: Any, used: set[str]
    ) -> set[str]:
        """Sequence fields the head reads at the first position only (ViT's CLS token): NaN everywhere
        else leaves the logits finite. Those are stored at that position alone, 1/T of the size."""
        first = set()
        for name in used:
            value = reference[name]
            if not value.is_floating_point() or value.dim() < 3 or value.shape[1] < 2:
                continue
            poisoned = value.clone()
            poisoned[:, 1:] = float("nan")
            if not self._reads(cut, probe, {**reference, name: poisoned}, output_class):
                first.add(name)
        return first

    def _train_safe(self, phase: Any, cut: Cut, probe: dict, reference: dict[str, torch.Tensor]) -> tuple[bool, str | None]:
        """Whether the frozen prefix computes in training exactly what it computes in inference."""
        from hftl.strategies import set_train_mode

        if self.data.train.augment is not None:
            return False, (
                "data.augment is on, so training examples differ every epoch; set data.augment=false "
                "to train on cached features too"
            )
        buffers = {n: b.detach().clone() for n, b in self.model.named_buffers()}
        seeds_differ = False
        try:
            for seed in (1, 2):
                with torch.random.fork_rng(devices=_rng_devices()), torch.no_grad():
                    torch.manual_seed(seed)
                    self.model.eval()
                    set_train_mode(self.model, self.layer_map, phase, self.cfg.strategy.batch_norm)
                    spec = _spec_augment(self.model, self.layer_map)
                    if spec:  # masks at random, but only long enough clips: one batch may not show it
                        return False, (
                            f"SpecAugment ({spec}) masks the frozen features in training; "
                            "strategy.head_only runs without it, or set apply_spec_augment=false in the model's config"
                        )
                    with _capture(self.model, cut) as got:
                        out = _fields(_run_to_cut(self.model, probe, got))
                if any(not _close(out[k], reference[k], self._mixed()) for k in reference):
                    seeds_differ = True
                    break
        finally:
            with torch.no_grad():
                for n, b in self.model.named_buffers():
                    b.copy_(buffers[n])
            self.model.eval()
        if seeds_differ:
            return False, (
                "the frozen part computes differently in training than in inference (dropout, LayerDrop or "
                "BatchNorm statistics there; strategy.batch_norm=freeze_stats keeps frozen parts in inference mode)"
            )
        return True, None

    def _mixed(self) -> bool:
        return self.cfg.train.mixed_precision != "no"

    def _key_material(self, cut: Cut) -> dict[str, Any]:
        import transformers

        cfg = self.cfg
        material = {
            "version": CACHE_VERSION,
            "cut": [cut.kind],
            "processor": processor_fingerprint(self.data.processor),
            "task": cfg.task,
            "data": {k: getattr(cfg.data, k) for k in ("max_length", "max_duration_seconds", "text_pair_column")},
            "batch_size": self._fill_batch_size(cut),
            "versions": [torch.__version__, transformers.__version__],
        }
        if cut.kind == "input":  # the inputs depend on the data and the processor only
            return material
        return {
            **material,
            "model": type(self.model).__name__,
            "cut": [cut.kind, cut.module],
            "weights": weights_fingerprint(self.model, self.layer_map, cut),
            "precision": [cfg.train.mixed_precision, str(next(self.model.parameters()).dtype)],
            "device": self.accelerator.device.type,
        }

    def _fill(self, split: str, ds: Any, cut: Cut, stored: set[str], key_base: dict[str, Any]) -> tuple[Path, bool]:
        """The split's cache folder, computed now (sharded over processes) unless it exists."""
        accelerator = self.accelerator
        first = self._first
        material = {**key_base, "split_data": data_fingerprint(ds.ds, ds.column), "stored": sorted(stored)}
        if first:
            material["first_position"] = sorted(first)
        key = hashlib.sha256(json.dumps(material, sort_keys=True).encode()).hexdigest()[:24]
        folder = self.root / key
        self.folders.add(folder)
        there = [(folder / "meta.json").exists()]
        broadcast_object_list(there)  # every process must take the same branch
        if there[0]:
            if accelerator.is_main_process:
                touch(folder)  # its last use, for pruning least recently used entries
            return folder, True
        token = [f"{os.getpid()}-{time.time_ns()}"]
        broadcast_object_list(token)  # every process writes its shard into the same partial folder
        partial = self.root / f".{key}.partial-{token[0]}"
        rank, world = accelerator.process_index, accelerator.num_processes
        shard = partial / f"shard-{rank}"
        writer = _ShardWriter(shard)
        indices = list(range(rank, len(ds), world))
        size = self._fill_batch_size(cut)
        loader = DataLoader(
            _plain(ds),
            batch_size=size,
            sampler=indices,
            collate_fn=self.data.collate,
            num_workers=loader_workers(self.cfg, accelerator),
        )
        quiet = not accelerator.is_local_main_process
        bar = tqdm(total=len(indices), desc=f"caching features ({split})", leave=False, disable=quiet)
        position = 0
        inputs_only = cut.kind == "input"  # nothing to compute: the collated inputs are what is stored
        capture = contextlib.nullcontext({}) if inputs_only else _capture(self.model, cut)
        with torch.no_grad(), _eval_mode(self.model), capture as got:
            for batch in loader:
                if inputs_only:
                    fields = {}
                else:
                    batch = send_to_device(batch, accelerator.device)
                    fields = _fields(_run_to_cut(self.model, batch, got))
                lengths = _unpadded_lengths(batch)
                for row in range(len(batch["labels"])):
                    trim = _trimmer(lengths, row)
                    record: dict[str, tuple[torch.Tensor | None, tuple[int, ...], torch.dtype]] = {}
                    for name, value in batch.items():
                        kept = trim(value[row])
                        keep = inputs_only or name != self.main_input
                        record[f"input.{name}"] = (kept if keep else None, tuple(kept.shape), value.dtype)
                    for name, value in fields.items():
                        kept = trim(value[row])
                        if name in first:
                            record[f"feature.{name}"] = (kept[:1], (1, *kept.shape[1:]), value.dtype)
                            record[f"feature.{name}{FULL}"] = (None, tuple(kept.shape), value.dtype)
                            continue
                        record[f"feature.{name}"] = (kept if name in stored else None, tuple(kept.shape), value.dtype)
                    writer.add(indices[position], record)
                    position += 1
                bar.update(len(batch["labels"]))
        bar.close()
        writer.finish({})
        accelerator.wait_for_everyone()
        if accelerator.is_main_process:
            about = {"split": split, "model": self.cfg.model.name_or_path}
            meta = {"shards": [f"shard-{r}" for r in range(world)], "count": len(ds), "key": material, "about": about}
            (partial / "meta.json").write_text(json.dumps(meta, default=str))
            try:
                os.replace(partial, folder)  # atomic: a cache is there whole or not at all
            except OSError:  # another run filled it meanwhile: keep theirs
                shutil.rmtree(partial, ignore_errors=True)
            self._prune()
        accelerator.wait_for_everyone()
        return folder, False

    def _prune(self) -> None:
        """Keep the cache folder under train.feature_cache_max_gb (least recently used entries go first)."""
        cap = self.cfg.train.feature_cache_max_gb
        if not cap:
            return
        removed = prune(self.root, int(cap * 2**30), protect=self.folders)
        if removed:
            freed = sum(e.size_bytes for e in removed) / 2**30
            self.print(
                f"removed {len(removed)} least recently used entries ({freed:.2f} GB) to stay under "
                f"train.feature_cache_max_gb={cap:g} ({self.root})"
            )

    def _verify(self, cut: Cut, cache: CachedSplit, probe: dict[str, Any], output_class: Any, block_kind: str) -> None:
        """The first validation batch, uncached vs cached: the logits must agree. Installs the stand-ins."""
        record = cache.batch(list(range(probe["labels"].shape[0])))
        with torch.no_grad(), _eval_mode(self.model):
            expected = self.model(**probe).logits.float()
            self.installed = install(self.model, cut, self.feed, output_class, block_kind)
            got = None
            # The base model's stand-in ignores its input; pass zeros only if the task model reads it.
            for pass_main in (False, True) if cut.kind == "base" else (True,):
                batch = send_to_device(collate_cached(record, self.main_input, pass_main), self.accelerator.device)
                self.feed_batch(batch)
                try:
                    got = self.model(**batch).logits.float()
                except (TypeError, AttributeError, RuntimeError, ValueError):
                    if pass_main:
                        raise
                    continue
                self.pass_main = pass_main
                break
        diff = (got - expected).abs().max().item() if got.shape == expected.shape else float("inf")
        scale = max(1.0, expected.abs().max().item())
        if not diff <= (2e-2 if self._mixed() else 1e-3) * scale:
            raise _Unsafe(
                f"the cached forward of {type(self.model).__name__} did not reproduce its logits "
                f"(max difference {diff:.3g}); please report this model"
            )

    def collate(self, fallback: Callable[[list[dict]], dict]) -> Callable[[list[dict]], dict]:
        """The DataLoader's collate: cached items batch here, others through the modality's collator."""

        def collate(items: list[dict]) -> dict:
            if len(items) == 1 and FEATURES in items[0]:
                return collate_cached(items[0][FEATURES], self.main_input, self.pass_main)
            return fallback(items)

        return collate


class _Unsafe(Exception):
    """The cache would not reproduce uncached training here; auto runs uncached, on refuses."""


def _plain(ds: Any) -> Any:
    """The split as the model sees it in inference: no augmentation, no cache."""
    from hftl.data import ExampleDataset

    return ExampleDataset(ds.ds, ds.column, ds.load)


def _unpadded_lengths(batch: dict[str, Any]) -> tuple[int, list[int]] | None:
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


def _close(a: torch.Tensor, b: torch.Tensor, mixed: bool) -> bool:
    if a.shape != b.shape:
        return False
    if not a.is_floating_point():
        return bool(torch.equal(a, b))
    tol = 2e-2 if mixed else 1e-5
    return bool(torch.allclose(a.float(), b.float(), atol=tol, rtol=tol))


def _spec_augment(model: nn.Module, layer_map: LayerMap) -> str | None:
    """`mask_time_prob=...` when a speech model in training mode would mask its features, else None."""
    config = getattr(model, "config", None)
    probs = [f"{k}={getattr(config, k)}" for k in ("mask_time_prob", "mask_feature_prob") if getattr(config, k, 0)]
    if not probs or not getattr(config, "apply_spec_augment", False) or not layer_map.base_prefix:
        return None
    # The masking lives in the speech base model's forward, under its own training flag.
    return ", ".join(probs) if model.get_submodule(full_name(model, layer_map.base_prefix)).training else None


def _rng_devices() -> list[int]:
    return list(range(torch.cuda.device_count())) if torch.cuda.is_available() else []


@contextmanager
def _eval_mode(model: nn.Module) -> Iterator[None]:
    modes = {m: m.training for m in model.modules()}
    model.eval()
    try:
        yield
    finally:
        for m, mode in modes.items():
            m.training = mode


__all__ = ["FEATURES", "FeatureCache", "CachedSplit", "Cut", "find_cut", "collate_cached", "default_cache_dir"]
