"""The feature cache of one run: per phase, find the cut, probe, fill or reuse each split, stand in.

The trainer calls `activate` at each phase, `feed_batch` on each batch and `close` before export. The
pieces live next door: where the prefix ends (`cut`), the key (`key`), the files (`store`), the
stand-ins (`standins`) and the safety probes (`checks`); this module puts them in order.

Example:
    >>> cache = FeatureCache(cfg, model, layer_map, data, accelerator)   # doctest: +SKIP
    >>> cache.activate(plan.phase_at(0))          # fills or reuses, installs the stand-ins  # doctest: +SKIP
    >>> cache.close()                             # the real model again, for export       # doctest: +SKIP
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from accelerate.utils import broadcast_object_list, send_to_device
from torch import nn
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from hftl.data.sources import FEATURES, loader_workers
from hftl.models.layer_map import LayerMap
from hftl.training.feature_cache.checks import (
    _plain,
    _rng_devices,
    _Unsafe,
    across_fill_batches,
    cached_logits,
    check_inputs_fit,
    check_per_example,
    first_position_fields,
    fixed_size,
    padding_probe,
    padding_unsafe,
    train_safe,
    used_fields,
    verify_inputs,
    verify_logits,
)
from hftl.training.feature_cache.cut import Cut, find_cut
from hftl.training.feature_cache.folder import prune, touch
from hftl.training.feature_cache.key import entry_key, key_material, split_material
from hftl.training.feature_cache.standins import _capture, _eval_mode, _Feed, _fields, _Installed, _run_to_cut, install
from hftl.training.feature_cache.store import (
    CachedSplit,
    _ShardWriter,
    collate_cached,
    default_cache_dir,
    row_records,
    unpadded_lengths,
)
from hftl.utils.errors import ConfigError, DiskFullError, HftlError, first_line
from hftl.utils.faults import IN_CACHE_FILL, disk_full, fault
from hftl.utils.files import disk_full_guard


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
    """The cache for one `fit`: fills or reuses per phase, installs and removes the stand-ins.

    `engine_refusal`: why the training engine rules the cache out (the stand-ins are not tested with
    sharded or cast weights), or None; when set, every phase runs uncached and the run says why.

    Example:
        >>> cache = FeatureCache(cfg, model, layer_map, data, accelerator, engine_refusal=None)   # doctest: +SKIP
    """

    def __init__(
        self, cfg: Any, model: nn.Module, layer_map: LayerMap, data: Any, accelerator: Any, engine_refusal: str | None = None
    ) -> None:
        self.cfg, self.model, self.layer_map, self.data, self.accelerator = cfg, model, layer_map, data, accelerator
        self.engine_refusal = engine_refusal
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
        if self.engine_refusal is not None:
            self._refuse(self.engine_refusal)
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
        except (_Unsafe, DiskFullError) as e:  # a full disk: the partial fill is gone, the run goes on uncached
            self.deactivate()
            self._refuse(str(e))
        except HftlError:  # the user's data or settings: theirs to fix, never hidden behind "uncached"
            self.deactivate()
            raise
        except Exception as e:  # noqa: BLE001 - the cache is an optimisation: any failure of its own runs uncached
            self.deactivate()
            self._refuse(f"it failed on this model ({type(e).__name__}: {first_line(e)})")

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
        """Probe a base or block cut, fill or reuse each split's cache, check it and install the stand-ins."""
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
        check_per_example(cut, reference, probe, self.main_input)
        stored = used_fields(model, cut, probe, reference, output_class) if cut.kind == "base" else {"hidden"}
        if cut.kind == "base":
            self._first = first_position_fields(model, cut, probe, reference, output_class, stored)
        train_ok, why_not = train_safe(
            model,
            self.layer_map,
            phase,
            cut,
            probe,
            reference,
            augmented=self.data.train.augment is not None,
            batch_norm=self.cfg.strategy.batch_norm,
            mixed=self._mixed(),
        )
        splits = [(split, ds) for split, ds in self._splits if split != "train" or train_ok]
        # What one example stores (a position-0 field: its first position only); a speech encoder's outputs are large.
        kept = {k: v[:, :1] if k in self._first and v.dim() > 1 else v for k, v in reference.items() if k in stored}
        sized = {**kept, "labels": probe["labels"]}
        examples = sum(len(ds) for _, ds in splits)
        # Against the free disk only: train.feature_cache_max_gb prunes other entries to make room for these.
        check_inputs_fit(sized, examples, 0.0, self.root, "the features")
        caches, reused = self._fill_all(splits, cut, stored, self._key_material(cut))
        self._verify(cut, caches, probe, output_class, block_kind)
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
        check_inputs_fit(probe, sum(len(ds) for _, ds in splits), self.cfg.train.feature_cache_max_gb, self.root)
        self._padding_marked = unpadded_lengths(probe) is not None or fixed_size(
            self.data.validation, self.data.collate, probe, self.main_input
        )
        caches, reused = self._fill_all(splits, cut, set(), self._key_material(cut))
        verify_inputs(
            self.data.validation,
            self.data.collate,
            caches["validation"],
            self.main_input,
            self._fill_batch_size(cut),
            self._batch_size(),
        )
        self.pass_main = True
        why_not = (
            "data.augment is on, so training examples differ every epoch; set data.augment=false to cache them too"
            if augmented
            else None
        )
        self._use(phase, cut, caches, not augmented, why_not, started, reused)

    def _batch_size(self) -> int:
        t = self.cfg.train
        return t.eval_batch_size or t.batch_size

    def _fill_batch_size(self, cut: Cut) -> int:
        # Inputs are stored one example at a time when no attention mask marks their padding: each is
        # then stored unpadded, as the processor makes it alone (checked by verify_inputs).
        if cut.kind == "input" and not self._padding_marked:
            return 1
        return self._batch_size()

    def _batch(self, ds: Any, indices: Any) -> dict[str, Any]:
        plain = _plain(ds)
        batch = self.data.collate([plain[i] for i in indices])
        return send_to_device(batch, self.accelerator.device)

    def _mixed(self) -> bool:
        return self.cfg.train.mixed_precision != "no"

    def _key_material(self, cut: Cut) -> dict[str, Any]:
        batch_size, device = self._fill_batch_size(cut), self.accelerator.device.type
        return key_material(self.cfg, self.model, self.layer_map, self.data.processor, cut, batch_size, device)

    # -- filling -----------------------------------------------------------------------------------
    def _fill_all(
        self, splits: list[tuple[str, Any]], cut: Cut, stored: set[str], key_base: dict[str, Any]
    ) -> tuple[dict[str, CachedSplit], bool]:
        """Each split's cache, filled or reused, and whether all were reused."""
        caches: dict[str, CachedSplit] = {}
        reused = True
        for split, ds in splits:
            folder, was_there = self._fill(split, ds, cut, stored, key_base)
            reused &= was_there
            caches[split] = CachedSplit(folder)
        return caches, reused

    def _fill(self, split: str, ds: Any, cut: Cut, stored: set[str], key_base: dict[str, Any]) -> tuple[Path, bool]:
        """The split's cache folder, computed now (sharded over processes) unless it exists."""
        accelerator = self.accelerator
        material = split_material(key_base, ds, stored, self._first)
        key = entry_key(material)
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
        world = accelerator.num_processes
        intact = "Entries filled before stay usable; this phase runs uncached"
        with disk_full_guard(self.root, f"the {split} features", partial, intact):
            self._write_shard(split, ds, cut, stored, partial / f"shard-{accelerator.process_index}")
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

    def _write_shard(self, split: str, ds: Any, cut: Cut, stored: set[str], shard: Path) -> None:
        """This process's share of the split (every world-th example), run to the cut and written to `shard`."""
        accelerator = self.accelerator
        rank, world = accelerator.process_index, accelerator.num_processes
        writer = _ShardWriter(shard)
        indices = list(range(rank, len(ds), world))
        size = self._fill_batch_size(cut)
        workers = loader_workers(self.cfg, accelerator)
        loader = DataLoader(_plain(ds), batch_size=size, sampler=indices, collate_fn=self.data.collate, num_workers=workers)
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
                for record in row_records(batch, fields, self.main_input, inputs_only, stored, self._first):
                    writer.add(indices[position], record)
                    position += 1
                disk_full("cache", shard)
                fault(IN_CACHE_FILL, 1)
                bar.update(len(batch["labels"]))
        bar.close()
        writer.finish({})

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

    # -- using -------------------------------------------------------------------------------------
    def _verify(
        self, cut: Cut, caches: dict[str, CachedSplit], probe: dict[str, Any], output_class: Any, block_kind: str
    ) -> None:
        """The first validation batch, uncached vs cached: the logits must agree. Then, in each cached split
        (validation, and train where it is cached), the shortest example of the first padded fill batch alone
        (`padding_probe`), and examples of different fill batches together (`across_fill_batches`): a training
        batch mixes examples cached at different padded lengths, which the first batch may not show (all one
        length; a validation split of two). Installs the stand-ins."""
        rows = list(range(probe["labels"].shape[0]))
        self.pass_main = self._agree(cut, caches["validation"], probe, rows, output_class, block_kind, None)
        for split, ds in self._splits[:2]:
            if split not in caches:
                continue
            first = probe if split == "validation" else None
            for alone in (self._padded_example(ds, first), across_fill_batches(len(ds), self._batch_size())):
                if alone is None:
                    continue
                try:
                    batch = self._batch(ds, alone)
                    self._agree(cut, caches[split], batch, alone, output_class, block_kind, self.pass_main)
                except (_Unsafe, TypeError, AttributeError, RuntimeError, ValueError, IndexError) as e:
                    raise padding_unsafe(cut, e, len(alone), split) from e

    def _padded_example(self, ds: Any, first: dict[str, Any] | None, most_batches: int = 8) -> list[int] | None:
        """The row of `ds` to verify alone (`padding_probe`): from its first fill batch (`first`, when already
        collated), or from the first of the next that holds padding (collated only, not run)."""
        alone = padding_probe(first) if first is not None else None
        n, size = len(ds), self._batch_size()
        for start in range(0 if first is None else size, min(n, most_batches * size), size):
            if alone is not None:
                break
            found = padding_probe(self._batch(ds, range(start, min(n, start + size))))
            alone = [start + found[0]] if found else None
        return alone

    def _agree(
        self,
        cut: Cut,
        cache: CachedSplit,
        uncached: dict[str, Any],
        rows: list[int],
        output_class: Any,
        block_kind: str,
        pass_main: bool | None,
    ) -> bool:
        """`uncached` (collated examples) through the real model vs `rows` of `cache` through the stand-ins
        (installed now if not yet): raise `_Unsafe` unless the logits agree; returns whether the main input
        had to be passed (`cached_logits`)."""
        record = cache.batch(rows)
        with torch.no_grad(), _eval_mode(self.model):
            self.feed.features = None  # the real modules run
            expected = self.model(**uncached).logits.float()
            if self.installed is None:
                self.installed = install(self.model, cut, self.feed, output_class, block_kind)
            device = self.accelerator.device
            got, pass_main = cached_logits(self.model, cut, record, self.main_input, device, self.feed_batch, pass_main)
        verify_logits(got, expected, type(self.model).__name__, self._mixed())
        return pass_main

    def collate(self, fallback: Callable[[list[dict]], dict]) -> Callable[[list[dict]], dict]:
        """The DataLoader's collate: cached items batch here, others through the modality's collator."""

        def collate(items: list[dict]) -> dict:
            if len(items) == 1 and FEATURES in items[0]:
                return collate_cached(items[0][FEATURES], self.main_input, self.pass_main)
            return fallback(items)

        return collate
