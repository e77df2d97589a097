"""Paired bootstrap over validation examples: an interval for every metric of every arm, and for the difference
between two arms scored on the same examples, with a verdict that names a winner only when the interval excludes 0.

Every run of a study writes `eval_examples.json` (one row per validation example, `data.resampled_metrics` reads
it). Runs that share an evaluation set (same seed, fold and label budget) form a *block*; a resample draws that
block's examples with replacement once, and every arm of the block is scored on that same draw, which is what
makes the comparison paired. Blocks are resampled independently and pooled by averaging: a resample's value is the
mean over the arm's blocks (seeds, folds) of the metric on that block's draw, so the point estimate is the mean the
table shows, and the spread counts both the examples' noise and the folds'/seeds' own variation. 10,000 resamples,
seeded: the same study gives the same intervals.

Example:
    >>> import numpy as np
    >>> a = {"kind": "single_label", "prediction": [0, 1, 1, 0] * 25, "reference": [0, 1, 0, 0] * 25}
    >>> draws = bootstrap([Scored("a", "seed 0", a), Scored("b", "seed 0", a)], ["accuracy"], resamples=200)
    >>> compare_arms(draws, "a", "b", "accuracy", lower_is_better=False)["verdict"]
    'indistinguishable'
"""

from __future__ import annotations

import zlib
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from hftl.data.resampled_metrics import examples, metrics_under_weights

RESAMPLES = 10_000
CONFIDENCE = 0.95
CHUNK_CELLS = 4_000_000  # resamples x examples per weight matrix: about 32 MB of int64 at a time
POOLING = (
    "paired bootstrap, {resamples} resamples of the validation examples; runs sharing an evaluation set (seed, fold, "
    "label budget) are scored on the same draws, and several sets are pooled as the mean of the per-set values"
)


@dataclass
class Scored:
    """One finished run's per-example table, the arm it belongs to and the evaluation set (block) it was scored on."""

    arm: str
    block: str
    table: dict[str, Any]


@dataclass
class Draws:
    """Per arm, metric and block: the metric on all examples (`point`) and on every resample (`values`)."""

    resamples: int
    point: dict[str, dict[str, dict[str, float]]] = field(default_factory=lambda: defaultdict(lambda: defaultdict(dict)))
    values: dict[str, dict[str, dict[str, np.ndarray]]] = field(default_factory=lambda: defaultdict(lambda: defaultdict(dict)))
    skipped: list[str] = field(default_factory=list)  # why a run is left out (its set differs from its block's)


def resample_counts(n: int, resamples: int, rng: np.random.Generator) -> np.ndarray:
    """(resamples, n) counts: how many times each of n examples is drawn in each resample (each row sums to n).

    Example:
        >>> resample_counts(5, 3, np.random.default_rng(0)).sum(axis=1).tolist()
        [5, 5, 5]
    """
    picks = rng.integers(0, n, size=(resamples, n)) + (np.arange(resamples) * n)[:, None]
    return np.bincount(picks.ravel(), minlength=resamples * n).reshape(resamples, n)


def bootstrap(scored: list[Scored], metrics: list[str], resamples: int = RESAMPLES, seed: int = 0) -> Draws:
    """Score every run on the same `resamples` draws of its block's examples (see the module docstring)."""
    draws = Draws(resamples)
    by_block: dict[str, list[Scored]] = defaultdict(list)
    for s in scored:
        by_block[s.block].append(s)
    for block, runs in by_block.items():
        n = examples(runs[0].table)
        for s in runs:
            if examples(s.table) != n:
                draws.skipped.append(f"{s.arm} ({block}): {examples(s.table)} examples, the others {n}")
        runs = [s for s in runs if examples(s.table) == n]
        for s in runs:
            full = metrics_under_weights(s.table, np.ones((1, n), dtype=np.int64))
            for m in metrics:
                if m in full:
                    draws.point[s.arm][m][block] = float(full[m][0])
        # The block's name seeds its draws: the same study resamples the same way, whichever arms it holds.
        rng = np.random.default_rng([seed, zlib.crc32(block.encode())])
        chunk = max(1, min(resamples, CHUNK_CELLS // max(n, 1)))
        parts: dict[tuple[str, str], list[np.ndarray]] = defaultdict(list)
        for start in range(0, resamples, chunk):
            counts = resample_counts(n, min(chunk, resamples - start), rng)
            for s in runs:
                values = metrics_under_weights(s.table, counts)
                for m in metrics:
                    if m in values:
                        parts[(s.arm, m)].append(np.asarray(values[m], dtype=float))
        for (arm, m), chunks in parts.items():
            draws.values[arm][m][block] = np.concatenate(chunks)
    return draws


def _pooled(draws: Draws, arm: str, metric: str, blocks: list[str]) -> tuple[float, np.ndarray]:
    point = float(np.mean([draws.point[arm][metric][b] for b in blocks]))
    return point, np.mean([draws.values[arm][metric][b] for b in blocks], axis=0)


def arm_interval(draws: Draws, arm: str, metric: str) -> tuple[float, float, float] | None:
    """(estimate, low, high): the arm's metric pooled over its blocks, with its percentile interval; None if unscored."""
    blocks = sorted(draws.values.get(arm, {}).get(metric, {}))
    if not blocks:
        return None
    point, values = _pooled(draws, arm, metric, blocks)
    low, high = _percentiles(values)
    return point, low, high


def _percentiles(values: np.ndarray) -> tuple[float, float]:
    tail = 100 * (1 - CONFIDENCE) / 2
    finite = values[np.isfinite(values)]
    if not finite.size:
        return float("nan"), float("nan")
    low, high = np.percentile(finite, [tail, 100 - tail])
    return float(low), float(high)


def compare_arms(draws: Draws, a: str, b: str, metric: str, lower_is_better: bool) -> dict[str, Any] | None:
    """The paired difference `a - b` of `metric` over the blocks both were scored on, its interval, a two-sided
    bootstrap p-value and the verdict (`a better`, `b better` or `indistinguishable`); None without a shared block."""
    shared = sorted(set(draws.values.get(a, {}).get(metric, {})) & set(draws.values.get(b, {}).get(metric, {})))
    if not shared:
        return None
    point_a, values_a = _pooled(draws, a, metric, shared)
    point_b, values_b = _pooled(draws, b, metric, shared)
    diff = values_a - values_b
    low, high = _percentiles(diff)
    finite = diff[np.isfinite(diff)]
    # Two-sided: how often the resampled difference lands on the far side of 0 (the +1s keep p above 0).
    side = min(int((finite <= 0).sum()), int((finite >= 0).sum()))
    p_value = min(1.0, 2 * (side + 1) / (finite.size + 1)) if finite.size else float("nan")
    verdict = "indistinguishable"
    if low > 0 or high < 0:
        a_higher = low > 0
        verdict = "a better" if a_higher != lower_is_better else "b better"
    return {
        "a": a, "b": b, "metric": metric, "difference": point_a - point_b, "ci_low": low, "ci_high": high,
        "p_value": p_value, "verdict": verdict, "sets": len(shared),
    }  # fmt: skip


def all_comparisons(draws: Draws, arms: list[str], metric: str, lower_is_better: bool) -> list[dict[str, Any]]:
    """Every pair of `arms` (in order: a before b) that shares an evaluation set."""
    found = []
    for i, a in enumerate(arms):
        for b in arms[i + 1 :]:
            result = compare_arms(draws, a, b, metric, lower_is_better)
            if result is not None:
                found.append(result)
    return found


def verdict_between(comparisons: list[dict[str, Any]], a: str, b: str) -> dict[str, Any] | None:
    """The comparison of `a` and `b` whichever way round it was made, oriented as `a` vs `b`."""
    for c in comparisons:
        if (c["a"], c["b"]) == (a, b):
            return c
        if (c["a"], c["b"]) == (b, a):
            flip = {"a better": "b better", "b better": "a better"}
            return {
                **c, "a": a, "b": b, "difference": -c["difference"], "ci_low": -c["ci_high"], "ci_high": -c["ci_low"],
                "verdict": flip.get(c["verdict"], c["verdict"]),
            }  # fmt: skip
    return None
