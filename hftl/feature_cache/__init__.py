"""Frozen-prefix feature cache (being split into one module per job; see cache.py for now)."""

from hftl.feature_cache.cache import (
    FEATURES,
    FULL,
    CachedSplit,
    CacheStatus,
    Cut,
    FeatureCache,
    _Feed,
    _ShardWriter,
    collate_cached,
    default_cache_dir,
    find_cut,
)

# _Feed and _ShardWriter: for the tests, until they import them from their modules.
__all__ = ["FEATURES", "FULL", "CacheStatus", "CachedSplit", "Cut", "FeatureCache", "collate_cached", "default_cache_dir"]
__all__ += ["find_cut", "_Feed", "_ShardWriter"]
