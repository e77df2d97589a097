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

One job per module, each importing only those above it: `cut` (where the frozen prefix ends), `key`
(what the cache key covers), `store` (the files), `standins` (the stand-in forwards), `checks` (the
safety probes), `cache` (the cache of one run, putting them in order).

Example:
    >>> cache = FeatureCache(cfg, model, layer_map, data, accelerator)   # doctest: +SKIP
    >>> cache.activate(plan.phase_at(0))          # fills or reuses, installs the stand-ins  # doctest: +SKIP
    >>> cache.close()                             # the real model again, for export       # doctest: +SKIP
"""

from hftl.data.sources import FEATURES
from hftl.training.feature_cache.cache import CacheStatus, FeatureCache
from hftl.training.feature_cache.cut import Cut, find_cut
from hftl.training.feature_cache.store import FULL, CachedSplit, collate_cached, default_cache_dir

__all__ = [
    "FEATURES",
    "FULL",
    "CacheStatus",
    "CachedSplit",
    "Cut",
    "FeatureCache",
    "collate_cached",
    "default_cache_dir",
    "find_cut",
]
