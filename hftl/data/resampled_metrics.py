"""An evaluator's metrics under resampling weights, for many resamples at once (bootstrap intervals).

An evaluator's `example_table` keeps, per validation example, what its metrics are made of. Here
`metrics_under_weights` recomputes every metric its `compute` reports (the loss aside) for B resamples of
those examples, given as counts: `weights[b, i]` is how many times example i is drawn in resample b, so a
row of ones is the data itself. Each row's values equal `compute` on the resampled lists: sums become
matrix products with the weights, and what `compute` sorts (average precision, Spearman's ranks) is sorted
once and read through cumulative weights. Python loops run over labels and targets, never resamples.

Example:
    >>> table = {"kind": "single_label", "prediction": [0, 1, 1, 2], "reference": [0, 1, 0, 2]}
    >>> m = metrics_under_weights(table, np.array([[1, 1, 1, 1], [2, 1, 0, 1]]))
    >>> m["accuracy"].tolist(), m["f1"].tolist()
    ([0.75, 1.0], [0.7777777777777777, 1.0])
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
from scipy import sparse

METRICS = {
    "single_label": ("accuracy", "precision", "recall", "f1"),
    "multi_label": ("f1", "micro_f1", "precision", "recall", "mean_average_precision", "exact_match"),
    "regression": ("rmse", "mae", "r2", "pearson", "spearman"),
    "token_classification": ("precision", "recall", "f1", "accuracy"),
    "speech": ("wer", "cer"),
}
LENGTH_COLUMN = {  # the column with one entry per example, of each kind
    "single_label": "reference",
    "multi_label": "truth",
    "regression": "truth",
    "token_classification": "tokens",
    "speech": "words",
}
BLOCK = 1 << 20  # entries of one (resamples x examples) chunk: 8 MB per float64 array, small enough for the caches

Metrics = Callable[[np.ndarray], dict[str, np.ndarray]]


def _kind(table: dict[str, Any]) -> str:
    kind = table.get("kind")
    if kind not in METRICS:
        raise ValueError(f"unknown example table kind {kind!r}; known: {', '.join(METRICS)}")
    return kind


def metric_names(table: dict[str, Any]) -> list[str]:
    """The metrics `compute` reports for this table's kind (the loss aside), in its order.

    Example:
        >>> metric_names({"kind": "speech", "word_errors": [], "words": [], "char_errors": [], "chars": []})
        ['wer', 'cer']
    """
    return list(METRICS[_kind(table)])


def examples(table: dict[str, Any]) -> int:
    """How many examples the table holds (the width its weights must have).

    Example:
        >>> examples({"kind": "single_label", "prediction": [2, 0], "reference": [1, 0]})
        2
    """
    return len(table[LENGTH_COLUMN[_kind(table)]])


def metrics_under_weights(table: dict[str, Any], weights: np.ndarray) -> dict[str, np.ndarray]:
    """Every metric of `table` under each row of `weights` ((B, n) non-negative counts): B values per metric.

    A row is a resample: example i drawn `weights[b, i]` times. Rows are computed in chunks of at most
    `BLOCK` entries, so 10,000 resamples of a large validation split fit in memory.

    Example:
        >>> table = {"kind": "speech", "word_errors": [1, 0], "words": [2, 3], "char_errors": [1, 0], "chars": [5, 9]}
        >>> metrics_under_weights(table, np.array([[1, 1], [2, 0]]))["wer"].tolist()
        [0.2, 0.5]
    """
    kind, n = _kind(table), examples(table)
    w = np.asarray(weights)
    if w.ndim != 2 or w.shape[1] != n:
        raise ValueError(f"weights must be (resamples, {n}) counts, one column per example; got shape {w.shape}")
    if (w < 0).any():
        raise ValueError("weights are counts of draws: none may be negative")
    metrics = _BUILDERS[kind](table)
    step = max(1, BLOCK // max(n, 1))
    # float64 chunks for BLAS products: integer counts stay exact in float64 up to 2**53
    parts = [metrics(w[s : s + step].astype(np.float64)) for s in range(0, len(w), step)]
    return {name: np.concatenate([p[name] for p in parts]) if parts else np.zeros(0) for name in METRICS[kind]}


# -- shared arithmetic ---------------------------------------------------------------------------------


def _ratio(num: np.ndarray, den: np.ndarray, empty: float | np.ndarray = 0.0) -> np.ndarray:
    """num / den, and `empty` where den is 0 (zero_division=0, as sklearn and seqeval are asked to)."""
    num, den = np.broadcast_arrays(np.asarray(num, dtype=np.float64), np.asarray(den, dtype=np.float64))
    out = np.array(np.broadcast_to(empty, num.shape), dtype=np.float64)
    np.divide(num, den, out=out, where=den != 0)
    return out


def _sums(indicator: sparse.csr_matrix, w: np.ndarray) -> np.ndarray:
    """(B, k) weighted column sums of an (n, k) sparse indicator: w @ indicator without densifying it."""
    return np.asarray((indicator.T @ w.T).T)


def _one_hot(codes: np.ndarray, width: int, values: np.ndarray | None = None) -> sparse.csr_matrix:
    values = np.ones(len(codes)) if values is None else values
    return sparse.csr_matrix((values, (np.arange(len(codes)), codes)), shape=(len(codes), width))


def _macro(tp: np.ndarray, pred: np.ndarray, true: np.ndarray, present: np.ndarray) -> tuple[np.ndarray, ...]:
    """Macro precision, recall and F1 over the `present` classes of each row, as sklearn's
    precision_recall_fscore_support(average="macro", zero_division=0) averages them."""
    per_class = (_ratio(tp, pred), _ratio(tp, true), _ratio(2 * tp, true + pred))
    count = present.sum(axis=1)
    return tuple(_ratio((m * present).sum(axis=1), count) for m in per_class)


def _drawn_constant(values: np.ndarray, w: np.ndarray) -> np.ndarray:
    """Per row, whether every example drawn (weight > 0) has the same value (np.ptp of the resample is 0)."""
    drawn = w > 0
    return np.where(drawn, values, np.inf).min(axis=1) == np.where(drawn, values, -np.inf).max(axis=1)


def _weighted_pearson(x: np.ndarray, y: np.ndarray, w: np.ndarray, total: np.ndarray) -> np.ndarray:
    """Pearson's r of x and y ((n,) or (B, n)) with each example counted w times; centred first, as scipy
    does, so large offsets lose no digits."""
    total = np.maximum(total, 1)[:, None]
    dx = x - (w * x).sum(axis=1, keepdims=True) / total
    dy = y - (w * y).sum(axis=1, keepdims=True) / total
    with np.errstate(divide="ignore", invalid="ignore"):
        r = (w * dx * dy).sum(axis=1) / np.sqrt((w * dx * dx).sum(axis=1) * (w * dy * dy).sum(axis=1))
    return np.clip(r, -1.0, 1.0)


# -- one builder per kind: what a table's metrics need, prepared once; then a function of a weights chunk -----


def _single_label(table: dict[str, Any]) -> Metrics:
    ref, pred = np.asarray(table["reference"], dtype=np.int64), np.asarray(table["prediction"], dtype=np.int64)
    classes, codes = np.unique(np.concatenate([ref, pred]), return_inverse=True)
    r, p = codes[: len(ref)], codes[len(ref) :]
    hit = (r == p).astype(np.float64)
    true_1h, pred_1h, tp_1h = _one_hot(r, len(classes)), _one_hot(p, len(classes)), _one_hot(r, len(classes), hit)

    def metrics(w: np.ndarray) -> dict[str, np.ndarray]:
        tp, n_pred, n_true = _sums(tp_1h, w), _sums(pred_1h, w), _sums(true_1h, w)
        # sklearn averages over the labels in y_true or y_pred: here, those the resample draws
        precision, recall, f1 = _macro(tp, n_pred, n_true, (n_true + n_pred) > 0)
        return {"accuracy": _ratio(w @ hit, w.sum(axis=1)), "precision": precision, "recall": recall, "f1": f1}

    return metrics


def _multi_label(table: dict[str, Any]) -> Metrics:
    decided = np.asarray(table["decided"], dtype=np.float64).reshape(len(table["decided"]), -1)
    truth = np.asarray(table["truth"], dtype=np.float64).reshape(decided.shape)
    scores = np.asarray(table["scores"], dtype=np.float64).reshape(decided.shape)
    exact = (decided == truth).all(axis=1).astype(np.float64)
    precisions = [_average_precision(scores[:, j], truth[:, j]) for j in range(truth.shape[1])]
    binary = truth.shape[1] == 1  # one label: sklearn reads a single column as binary classes 0 and 1

    def metrics(w: np.ndarray) -> dict[str, np.ndarray]:
        total = w.sum(axis=1)
        tp, n_pred, n_true = w @ (decided * truth), w @ decided, w @ truth
        present = np.ones_like(tp, dtype=bool)  # a label-indicator matrix: sklearn averages over every label
        micro = _ratio(2 * tp.sum(axis=1), n_true.sum(axis=1) + n_pred.sum(axis=1))
        if binary:  # classes 0 and 1: macro over those drawn, and micro F1 is the accuracy
            negatives = (w @ ((1 - decided) * (1 - truth)), total[:, None] - n_pred, total[:, None] - n_true)
            tp, n_pred, n_true = (np.hstack(pair) for pair in zip(negatives, (tp, n_pred, n_true)))
            present, micro = (n_true + n_pred) > 0, _ratio(w @ exact, total)
        precision, recall, f1 = _macro(tp, n_pred, n_true, present)
        aps = [ap(w) for ap in precisions]
        # the mean over the labels with a positive drawn; 0.0 where none has one, as _mean_ap says
        mean_ap = _ratio(sum(value * has for value, has in aps), sum(has for _, has in aps))
        return {
            "f1": f1,
            "micro_f1": micro,
            "precision": precision,
            "recall": recall,
            "mean_average_precision": mean_ap,
            "exact_match": _ratio(w @ exact, total),
        }

    return metrics


def _average_precision(scores: np.ndarray, truth: np.ndarray) -> Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]]:
    """sklearn's average_precision_score of one label under weights, and whether a resample has a positive.

    AP = sum over positives of w_i * precision at i / sum of w_i over positives, the precision taken at the
    end of i's tie group: sklearn puts one threshold per distinct score, so tied examples enter together.
    """
    order = np.argsort(-scores, kind="stable")
    ordered = scores[order]
    # Index (in sorted order) of the last example of each example's tie group.
    last = np.r_[np.flatnonzero(ordered[1:] != ordered[:-1]), len(ordered) - 1]
    group_end = last[np.searchsorted(last, np.arange(len(ordered)))]
    positive = np.flatnonzero(truth[order] > 0.5)
    ends = group_end[positive]

    def ap(w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        ws = w[:, order]
        cum_all, cum_pos = np.cumsum(ws, axis=1), np.cumsum(ws * (truth[order] > 0.5), axis=1)
        precision = _ratio(cum_pos[:, ends], cum_all[:, ends])
        drawn = ws[:, positive]
        positives = drawn.sum(axis=1)
        return _ratio((drawn * precision).sum(axis=1), positives), positives > 0

    return ap


def _ranks(values: np.ndarray) -> Callable[[np.ndarray], np.ndarray]:
    """Average ranks (scipy's rankdata "average", 1-based) of the resampled values, per example.

    With the examples sorted once into groups of equal values, a group of total weight c after s drawn
    values holds ranks s+1 .. s+c, whose mean s + (c + 1) / 2 every member of the group takes.
    """
    distinct, group = np.unique(values, return_inverse=True)
    members = _one_hot(group.ravel(), len(distinct))

    def ranks(w: np.ndarray) -> np.ndarray:
        size = _sums(members, w)
        mean_rank = np.cumsum(size, axis=1) - (size - 1) / 2
        return mean_rank[:, group.ravel()]

    return ranks


def _regression(table: dict[str, Any]) -> Metrics:
    pred = np.asarray(table["prediction"], dtype=np.float64).reshape(len(table["prediction"]), -1)
    true = np.asarray(table["truth"], dtype=np.float64).reshape(pred.shape)
    targets = [(pred[:, j], true[:, j], _ranks(pred[:, j]), _ranks(true[:, j])) for j in range(pred.shape[1])]

    def metrics(w: np.ndarray) -> dict[str, np.ndarray]:
        rows = [_one_target(p, t, rank_p, rank_t, w) for p, t, rank_p, rank_t in targets]
        return {key: np.mean([row[key] for row in rows], axis=0) for key in METRICS["regression"]}

    return metrics


def _one_target(p: np.ndarray, t: np.ndarray, rank_p: Callable, rank_t: Callable, w: np.ndarray) -> dict[str, np.ndarray]:
    """RegressionEvaluator.per_target of one target under weights, its edge cases included."""
    total = w.sum(axis=1)
    squared = w @ (p - t) ** 2
    t_constant = _drawn_constant(t, w)
    # r2_score: 1 - SS_res / SS_tot; SS_tot = 0 gives 1.0 for a perfect fit, else 0.0 (force_finite)
    mean_t = _ratio(w @ t, total)
    spread = np.where(t_constant, 0.0, (w * (t - mean_t[:, None]) ** 2).sum(axis=1))
    r2 = np.where(squared == 0, 1.0, np.where(spread == 0, 0.0, 1 - _ratio(squared, spread)))
    # pearson and spearman are undefined with under 2 examples or a constant side: the evaluator says 0
    constant = (total < 2) | _drawn_constant(p, w) | t_constant
    pearson = np.where(constant, 0.0, _weighted_pearson(p, t, w, total))
    spearman = np.where(constant, 0.0, _weighted_pearson(rank_p(w), rank_t(w), w, total))
    return {
        "rmse": np.sqrt(_ratio(squared, total)),
        "mae": _ratio(w @ np.abs(p - t), total),
        "r2": np.where(total > 1, r2, 0.0),
        "pearson": pearson,
        "spearman": spearman,
    }


def _token_classification(table: dict[str, Any]) -> Metrics:
    tp, pred, true, correct, tokens = (
        np.asarray(table[k], dtype=np.float64) for k in ("true_positives", "predicted", "actual", "correct", "tokens")
    )

    def metrics(w: np.ndarray) -> dict[str, np.ndarray]:
        # seqeval's micro scores: F1 = 2PR / (P + R) from the rounded ratios, as seqeval computes it
        precision, recall = _ratio(w @ tp, w @ pred), _ratio(w @ tp, w @ true)
        f1 = _ratio(2 * precision * recall, precision + recall)
        return {"precision": precision, "recall": recall, "f1": f1, "accuracy": (w @ correct) / np.maximum(w @ tokens, 1)}

    return metrics


def _speech(table: dict[str, Any]) -> Metrics:
    columns = {k: np.asarray(table[k], dtype=np.float64) for k in ("word_errors", "words", "char_errors", "chars")}

    def rate(w: np.ndarray, errors: np.ndarray, length: np.ndarray) -> np.ndarray:
        # jiwer: errors / reference length over the corpus; with no reference word at all, the errors' count
        # (no transcript at all, as a resample with every weight 0 reads: 0.0, as error_rates says)
        e = w @ errors
        return np.where(w.sum(axis=1) == 0, 0.0, _ratio(e, w @ length, empty=e))

    def metrics(w: np.ndarray) -> dict[str, np.ndarray]:
        c = columns
        return {"wer": rate(w, c["word_errors"], c["words"]), "cer": rate(w, c["char_errors"], c["chars"])}

    return metrics


_BUILDERS: dict[str, Callable[[dict[str, Any]], Metrics]] = {
    "single_label": _single_label,
    "multi_label": _multi_label,
    "regression": _regression,
    "token_classification": _token_classification,
    "speech": _speech,
}
