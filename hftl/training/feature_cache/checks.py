"""Safety probes: before a cache is used, find out whether it reproduces uncached training, and what to store.

- which base-output fields the head reads (each poisoned with NaN in turn), and which it reads at the
  first position only (ViT's CLS token);
- whether the frozen part computes the same in training as in inference (no dropout, SpecAugment,
  LayerDrop or batch statistics there); if not, only validation and test run cached;
- whether processed inputs fit the disk and the cap, and batch from the cache as the collator batches them;
- one batch through the cached and the uncached model: the logits must agree; then its shortest example
  alone, padded to its own length, not to the one of the batch the cache computed it in.

A probe that finds the cache unsafe raises `_Unsafe` with a message a user can act on.

Example:
    >>> stored = used_fields(model, cut, probe, reference, output_class)   # doctest: +SKIP
    >>> safe, why_not = train_safe(model, layer_map, phase, cut, probe, reference,   # doctest: +SKIP
    ...                            augmented=False, batch_norm="freeze_stats", mixed=False)
"""

from __future__ import annotations

import math
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from accelerate.utils import send_to_device
from torch import nn

from hftl.data.sources import FEATURES, ExampleDataset
from hftl.models.layer_map import LayerMap, full_name
from hftl.models.strategies import set_train_mode
from hftl.training.feature_cache.cut import Cut
from hftl.training.feature_cache.standins import _capture, _eval_mode, _fields, _Installed, _rebuild, _run_to_cut
from hftl.training.feature_cache.store import CachedSplit, collate_cached, unpadded_lengths
from hftl.utils.errors import first_line

# How close cached must come to uncached, keyed by whether the run computes in mixed precision (bf16 and
# fp16 keep about three significant digits, float32 about seven). Loose enough for rounding alone, tight
# enough for what each check is after:
# - the frozen part in training vs inference mode, per element (atol = rtol): dropout or batch statistics
#   move the features by far more;
FEATURE_TOLERANCE = {False: 1e-5, True: 2e-2}
# - cached vs uncached logits, times max(1, the largest |logit|): the features' rounding carried through the
#   trained part stays below it; a stand-in handing over the wrong field or position does not.
LOGIT_TOLERANCE = {False: 1e-3, True: 2e-2}


class _Unsafe(Exception):
    """The cache would not reproduce uncached training here; auto runs uncached, on refuses."""


def _plain(ds: Any) -> ExampleDataset:
    """The split as the model sees it in inference: no augmentation, no cache."""
    return ExampleDataset(ds.ds, ds.column, ds.load)


def _rng_devices() -> list[int]:
    return list(range(torch.cuda.device_count())) if torch.cuda.is_available() else []


def _close(a: torch.Tensor, b: torch.Tensor, mixed: bool) -> bool:
    if a.shape != b.shape:
        return False
    if not a.is_floating_point():
        return bool(torch.equal(a, b))
    tol = FEATURE_TOLERANCE[mixed]
    return bool(torch.allclose(a.float(), b.float(), atol=tol, rtol=tol))


# -- what to store ----------------------------------------------------------------------------------
def check_per_example(cut: Cut, reference: dict[str, Any], probe: dict[str, Any], main_input: str) -> None:
    """Raise `_Unsafe` unless every field that crossed the cut is a tensor with one row per example.

    Example:
        >>> check_per_example(cut, {"hidden": torch.zeros(8, 5, 32)}, probe, "input_ids")   # doctest: +SKIP
    """
    for name, value in reference.items():
        if not isinstance(value, torch.Tensor) or value.shape[:1] != probe[main_input].shape[:1]:
            raise _Unsafe(f"the {cut.describe()} field {name!r} is not a per-example tensor")


def _reads(model: nn.Module, cut: Cut, probe: dict, poisoned: dict[str, torch.Tensor], output_class: Any) -> bool:
    """Whether the head's logits turn NaN when the base model outputs `poisoned` (it reads the NaNs)."""
    standin = _Installed()
    standin.patch(model.get_submodule(cut.module), lambda _: lambda *a, **k: _rebuild(output_class, poisoned))
    try:
        with torch.no_grad(), _eval_mode(model):
            logits = model(**probe).logits
    finally:
        standin.remove()
    return not torch.isfinite(logits.float()).all()


def used_fields(model: nn.Module, cut: Cut, probe: dict, reference: dict[str, torch.Tensor], output_class: Any) -> set[str]:
    """The base-output fields the head reads: poison one with NaN; if the logits stay finite, it is unused.

    Example:
        >>> used_fields(bert_classifier, cut, probe, reference, BaseModelOutputWithPooling)   # doctest: +SKIP
        {'pooler_output'}
    """
    used = set()
    for name, value in reference.items():
        if not value.is_floating_point() or _reads(
            model, cut, probe, {**reference, name: torch.full_like(value, float("nan"))}, output_class
        ):
            used.add(name)
    return used or set(reference)


def first_position_fields(
    model: nn.Module, cut: Cut, probe: dict, reference: dict[str, torch.Tensor], output_class: Any, used: set[str]
) -> set[str]:
    """Sequence fields the head reads at the first position only (ViT's CLS token): NaN everywhere
    else leaves the logits finite. Those are stored at that position alone, 1/T of the size.

    Example:
        >>> first_position_fields(vit_classifier, cut, probe, reference, output_class, {"last_hidden_state"})  # doctest: +SKIP
        {'last_hidden_state'}
    """
    first = set()
    for name in used:
        value = reference[name]
        if not value.is_floating_point() or value.dim() < 3 or value.shape[1] < 2:
            continue
        poisoned = value.clone()
        poisoned[:, 1:] = float("nan")
        if not _reads(model, cut, probe, {**reference, name: poisoned}, output_class):
            first.add(name)
    return first


# -- whether training examples may run cached -------------------------------------------------------
def train_safe(
    model: nn.Module,
    layer_map: LayerMap,
    phase: Any,
    cut: Cut,
    probe: dict,
    reference: dict[str, torch.Tensor],
    *,
    augmented: bool,
    batch_norm: str,
    mixed: bool,
) -> tuple[bool, str | None]:
    """Whether the frozen prefix computes in training exactly what it computes in inference, and if not, why.

    Runs the probe batch in the phase's training mode under two seeds (the global RNG and the model's
    buffers are kept) and compares with `reference`, its features in inference mode.

    Example:
        >>> train_safe(model, layer_map, phase, cut, probe, reference,   # doctest: +SKIP
        ...            augmented=True, batch_norm="freeze_stats", mixed=False)
        (False, 'data.augment is on, so training examples differ every epoch; ...')
    """
    if augmented:
        return False, (
            "data.augment is on, so training examples differ every epoch; set data.augment=false to train on cached features too"
        )
    buffers = {n: b.detach().clone() for n, b in model.named_buffers()}
    seeds_differ = False
    try:
        for seed in (1, 2):
            with torch.random.fork_rng(devices=_rng_devices()), torch.no_grad():
                torch.manual_seed(seed)
                model.eval()
                set_train_mode(model, layer_map, phase, batch_norm)
                spec = _spec_augment(model, layer_map)
                if spec:  # masks at random, but only long enough clips: one batch may not show it
                    return False, (
                        f"SpecAugment ({spec}) masks the frozen features in training; "
                        "strategy.head_only runs without it, or set apply_spec_augment=false in the model's config"
                    )
                with _capture(model, cut) as got:
                    out = _fields(_run_to_cut(model, probe, got))
            if any(not _close(out[k], reference[k], mixed) for k in reference):
                seeds_differ = True
                break
    finally:
        with torch.no_grad():
            for n, b in model.named_buffers():
                b.copy_(buffers[n])
        model.eval()
    if seeds_differ:
        return False, (
            "the frozen part computes differently in training than in inference (dropout, LayerDrop or "
            "BatchNorm statistics there; strategy.batch_norm=freeze_stats keeps frozen parts in inference mode)"
        )
    return True, None


def _spec_augment(model: nn.Module, layer_map: LayerMap) -> str | None:
    """`mask_time_prob=...` when a speech model in training mode would mask its features, else None."""
    config = getattr(model, "config", None)
    probs = [f"{k}={getattr(config, k)}" for k in ("mask_time_prob", "mask_feature_prob") if getattr(config, k, 0)]
    if not probs or not getattr(config, "apply_spec_augment", False) or not layer_map.base_prefix:
        return None
    # The masking lives in the speech base model's forward, under its own training flag.
    return ", ".join(probs) if model.get_submodule(full_name(model, layer_map.base_prefix)).training else None


# -- processed inputs -------------------------------------------------------------------------------
def check_inputs_fit(probe: dict[str, Any], examples: int, cap_gb: float, root: Path, what: str = "the processed inputs") -> None:
    """Raise `_Unsafe` when `examples` processed inputs (or features), at the probe batch's size each, would
    take over half of the cache cap (`cap_gb`, 0 for none) or 80% of the free disk under `root`.

    Example:
        >>> check_inputs_fit(probe, examples=60_000, cap_gb=50.0, root=default_cache_dir())   # doctest: +SKIP
    """
    per_example = sum(t.numel() * t.element_size() for t in probe.values() if isinstance(t, torch.Tensor))
    size = per_example / max(len(probe["labels"]), 1) * examples
    cap = cap_gb * 2**30 or math.inf
    existing = next((p for p in (root, *root.parents) if p.exists()), Path("/"))
    free = shutil.disk_usage(existing).free
    if size > min(cap / 2, free * 0.8):
        why = "half of train.feature_cache_max_gb" if cap / 2 < free * 0.8 else "80% of the free disk space"
        raise _Unsafe(f"{what} would take {size / 2**30:.1f} GB, over {why} ({root})")


def fixed_size(ds: Any, collate: Callable[[list[dict]], dict], probe: dict[str, Any], main_input: str) -> bool:
    """Whether examples collated alone have the batch's shape (images), so a batch holds no padding.

    Example:
        >>> fixed_size(data.validation, data.collate, probe, "pixel_values")   # doctest: +SKIP
        True
    """
    plain = _plain(ds)
    alone = [collate([plain[i]])[main_input].shape[1:] for i in range(min(len(plain), 4))]
    return all(shape == probe[main_input].shape[1:] for shape in alone)


def verify_inputs(
    ds: Any, collate: Callable[[list[dict]], dict], cache: CachedSplit, main_input: str, fill_batch_size: int, batch_size: int
) -> None:
    """Examples from different fill batches, collated by the modality and read from the cache: equal
    (raises `_Unsafe` if not).

    Example:
        >>> verify_inputs(data.validation, data.collate, split, "pixel_values", 32, 32)   # doctest: +SKIP
    """
    indices = list(range(0, min(len(ds), 2 * fill_batch_size), 2))[:batch_size]
    expected = collate([_plain(ds)[i] for i in indices])
    got = collate_cached(cache.batch(indices), main_input, pass_main=True)
    got.pop(FEATURES)
    same = expected.keys() == got.keys() and all(
        isinstance(v, torch.Tensor) and v.shape == got[k].shape and torch.equal(v, got[k].to(v.dtype))
        for k, v in expected.items()
    )
    if not same:
        raise _Unsafe("the processed inputs depend on the batch they are padded in (no attention mask)")


# -- cached vs uncached logits ----------------------------------------------------------------------
def cached_logits(
    model: nn.Module,
    cut: Cut,
    record: dict[str, Any],
    main_input: str,
    device: Any,
    feed: Callable[[dict], None],
    pass_main: bool | None = None,
) -> tuple[torch.Tensor, bool]:
    """The logits of `model`, its stand-ins installed, on `record` (a `CachedSplit.batch`), and whether
    the main input had to be passed: the base model's stand-in ignores it, so zeros go in only if the
    task model reads it (`pass_main` None: find out). `feed` hands a batch's features to the stand-ins.

    Example:
        >>> logits, pass_main = cached_logits(model, cut, split.batch([0, 1]), "input_ids", "cpu", feed)   # doctest: +SKIP
    """
    tries = (pass_main,) if pass_main is not None else (False, True) if cut.kind == "base" else (True,)
    for main in tries:
        batch = send_to_device(collate_cached(record, main_input, main), device)
        feed(batch)
        try:
            return model(**batch).logits.float(), main
        except (TypeError, AttributeError, RuntimeError, ValueError):
            if main == tries[-1]:
                raise
    raise AssertionError("unreachable: the last try raises what fails")


def verify_logits(got: torch.Tensor, expected: torch.Tensor, model_name: str, mixed: bool) -> None:
    """Raise `_Unsafe` unless the cached logits `got` match the uncached `expected` (see `LOGIT_TOLERANCE`).

    Example:
        >>> verify_logits(torch.ones(2, 3), torch.ones(2, 3), "BertForSequenceClassification", mixed=False)
    """
    diff = (got - expected).abs().max().item() if got.shape == expected.shape else float("inf")
    scale = max(1.0, expected.abs().max().item())
    if not diff <= LOGIT_TOLERANCE[mixed] * scale:
        raise _Unsafe(
            f"the cached forward of {model_name} did not reproduce its logits "
            f"(max difference {diff:.3g}); please report this model"
        )


def padding_probe(probe: dict[str, Any]) -> list[int] | None:
    """The probe batch's row to verify alone: its shortest example, which the cache computed padded to
    the batch's length, or None when the probe holds no right padding to take away.

    A cached example may land in a batch padded to any length. The trimmed features hold up in such a
    batch only where nothing in them depends on the padded length they were computed at (CANINE's
    molecules do: its hidden states are the characters downsampled, padding included, and its trained
    blocks take a mask made from the batch at hand). Cached and uncached, that one example must agree.

    Example:
        >>> padding_probe({"attention_mask": torch.tensor([[1, 1, 1], [1, 0, 0]])})
        [1]
    """
    lengths = unpadded_lengths(probe)
    if lengths is None:
        return None
    padded, each = lengths
    shortest = min(range(len(each)), key=each.__getitem__)
    return [shortest] if each[shortest] < padded else None


def across_fill_batches(examples: int, fill_batch_size: int, most: int = 4) -> list[int] | None:
    """Rows of the validation split from different fill batches (the first of each, up to `most`), to verify
    together: each was cached padded to its own batch's length. None when one fill batch holds them all.

    Example:
        >>> across_fill_batches(10, 4)
        [0, 4, 8]
        >>> across_fill_batches(4, 4) is None
        True
    """
    rows = list(range(0, examples, max(1, fill_batch_size)))[:most]
    return rows if len(rows) > 1 else None


def padding_unsafe(cut: Cut, error: Exception, rows: int = 1, split: str = "validation") -> _Unsafe:
    """Why the cache cannot serve a model whose padding checks failed with `error` (`rows`: 1 for the shortest
    example of a padded batch alone, more for examples of different fill batches together; `split`: where).

    Example:
        >>> str(padding_unsafe(Cut("base", "bert"), RuntimeError("size mismatch")))   # doctest: +ELLIPSIS
        'the base-model outputs depend on the length their batch is padded to, ...: RuntimeError: size mismatch)'
    """
    detail = first_line(error) if isinstance(error, _Unsafe) else f"{type(error).__name__}: {first_line(error)}"
    what = (
        f"the shortest {split} example of a padded batch, alone"
        if rows == 1
        else f"{rows} {split} examples cached in different batches, together"
    )
    return _Unsafe(
        f"the {cut.describe()} depend on the length their batch is padded to, which the cache does not keep ({what}: {detail})"
    )
