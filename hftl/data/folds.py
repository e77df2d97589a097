"""K-fold cross-validation and label budgets: which examples validate in fold k of K, and which N examples train
under a budget of N labels, stratified by the label shape and never splitting a group (speaker, patient, source).

The assignments are pure, seeded functions of the labels (numpy and scikit-learn): the same labels, groups and
seed give the same folds, so seeds x folds is repeated k-fold. `split_labelled` and `label_budget` apply them to
the datasets `sources.load_splits` builds.

Example:
    >>> folds = assign_folds([0, 0, 0, 1, 1, 1], k=3, seed=0, kind=SINGLE)
    >>> np.bincount(folds).tolist()
    [2, 2, 2]
    >>> labels = np.array([0, 0, 0, 0, 1, 1])
    >>> np.bincount(labels[nested_order(labels, SINGLE, seed=0)[:3]]).tolist()
    [2, 1]
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from typing import Any

import datasets
import numpy as np
from sklearn.model_selection import KFold, StratifiedGroupKFold, StratifiedKFold

from hftl.config import DataConfig
from hftl.data.sampling import stratified_split
from hftl.utils.errors import DataError

# The label kinds: the three label shapes of labels.LabelSpace.problem, and sequence labels (tags, transcripts).
SINGLE, MULTI, REGRESSION, SEQUENCE = "single_label", "multi_label", "regression", "sequence"
_HOW = {
    SINGLE: "stratified by class",
    MULTI: "iteratively stratified by label",
    REGRESSION: "stratified by target quantiles",
    SEQUENCE: "shuffled",
}
_BUDGET_HOW = {
    SINGLE: "stratified by class",
    MULTI: "stratified by each example's rarest label",
    REGRESSION: "stratified by target quantiles",
    SEQUENCE: "random",
}
_BINS = 10  # regression: the most quantile bins stratified on


def label_kind(problem: str, label_shapes: bool) -> str:
    """The kind of a task's encoded labels: its label shape (`problem`), or SEQUENCE for a task without label
    shapes (token classification, speech recognition).

    Example:
        >>> label_kind("single_label", label_shapes=False)
        'sequence'
    """
    return problem if label_shapes else SEQUENCE


def describe(kind: str, group_column: str | None, seed: int) -> str:
    """How folds (or a grouped hold-out) were chosen, in words, for metrics.json's sources and the card.

    Example:
        >>> describe(SINGLE, "speaker", 3)
        'stratified by class, grouped by speaker, seed 3'
    """
    return ", ".join([_HOW[kind], *([f"grouped by {group_column}"] if group_column else []), f"seed {seed}"])


def quantile_bins(values: Sequence[float], bins: int = _BINS) -> np.ndarray:
    """A bin id per value: `bins` bins of about equal count (fewer where values tie).

    Example:
        >>> quantile_bins([0.1, 5.0, 0.3, 9.0], bins=2).tolist()
        [0, 1, 0, 1]
    """
    values = np.asarray(values, dtype=np.float64)
    if len(values) == 0:
        return np.zeros(0, dtype=np.int64)
    edges = np.unique(np.quantile(values, np.linspace(0, 1, bins + 1)[1:-1]))
    bins_of = np.searchsorted(edges, values, side="right")
    return np.unique(bins_of, return_inverse=True)[1].astype(np.int64)  # numbered 0.. without gaps


def _multi_hot(labels: Sequence[Any]) -> np.ndarray:
    return np.asarray(labels, dtype=np.float64).reshape(len(labels), -1) > 0.5


def _first_target(labels: Sequence[Any]) -> np.ndarray:
    return np.asarray(labels, dtype=np.float64).reshape(len(labels), -1)[:, 0]


def iterative_stratification(y: np.ndarray, k: int, seed: int, sizes: Sequence[float] | None = None) -> np.ndarray:
    """A fold per item of a multi-label matrix `y` (items x labels, 0/1 or counts) by iterative stratification
    (Sechidis, Tsoumakas and Vlahavas 2011): the label with the fewest unplaced positives goes first, each of its
    items to the fold that most lacks that label (ties: the fold that most lacks items, then at random); items
    with no label fill the emptiest folds. `sizes` (default 1 each) lets an item stand for a group of examples.

    Example:
        >>> iterative_stratification(np.array([[1, 0], [1, 0], [0, 1], [0, 1]]), k=2, seed=0).tolist()
        [1, 0, 1, 0]
    """
    y = np.asarray(y, dtype=np.float64)
    sizes = np.ones(len(y)) if sizes is None else np.asarray(sizes, dtype=np.float64)
    rng = np.random.default_rng(seed)
    want_items = np.full(k, sizes.sum() / k)
    want_labels = np.tile(y.sum(axis=0) / k, (k, 1))
    remaining = y.sum(axis=0)
    folds = np.full(len(y), -1, dtype=np.int64)

    def place(i: int, label: int | None) -> None:
        best = np.arange(k)
        for want in ([want_labels[:, label]] if label is not None else []) + [want_items]:
            scores = want[best]
            best = best[np.isclose(scores, scores.max())]
        fold = int(rng.choice(best))
        folds[i] = fold
        want_labels[fold] -= y[i]
        want_items[fold] -= sizes[i]
        remaining[:] -= y[i]

    while (remaining > 0.5).any():
        live = np.flatnonzero(remaining > 0.5)
        label = int(rng.choice(live[remaining[live] == remaining[live].min()]))
        for i in rng.permutation(np.flatnonzero((folds < 0) & (y[:, label] > 0))):
            place(int(i), label)
    for i in rng.permutation(np.flatnonzero(folds < 0)):
        place(int(i), None)
    return folds


def group_folds(groups: Sequence[Any], k: int, seed: int) -> np.ndarray:
    """A fold per example, whole groups per fold: scikit-learn's GroupKFold balancing (largest group first,
    into the fold with fewest examples), its ties and order of equal groups drawn with `seed`.

    Example:
        >>> group_folds(["a", "a", "b", "c"], k=2, seed=0).tolist()
        [0, 0, 1, 1]
    """
    ids, inverse = np.unique(np.asarray(groups), return_inverse=True)
    shuffled = np.random.default_rng(seed).permutation(len(ids))
    sizes = np.bincount(inverse, minlength=len(ids))
    order = shuffled[np.argsort(-sizes[shuffled], kind="stable")]
    load, fold_of = np.zeros(k), np.zeros(len(ids), dtype=np.int64)
    for g in order:
        fold_of[g] = int(np.argmin(load))
        load[fold_of[g]] += sizes[g]
    return fold_of[inverse]


def assign_folds(labels: Sequence[Any], k: int, seed: int, kind: str, groups: Sequence[Any] | None = None) -> np.ndarray:
    """A fold id (0 .. k-1) per example of encoded `labels` of `kind`, no value of `groups` in two folds.

    Single-label: StratifiedKFold (grouped: StratifiedGroupKFold), shuffled with `seed`; multi-label: iterative
    stratification, over whole groups when grouped; regression: StratifiedKFold on quantile bins of the first
    target; sequence labels: shuffled KFold (grouped: `group_folds`). A class with fewer than k examples cannot
    be in every fold; scikit-learn's warning about it is silenced.

    Example:
        >>> folds = assign_folds([[0.0, 1.0], [1.0, 0.0]] * 3, k=3, seed=0, kind=MULTI)
        >>> sorted(folds[::2].tolist()), sorted(folds[1::2].tolist())  # each label once in every fold
        ([0, 1, 2], [0, 1, 2])
    """
    n = len(labels)
    if kind == MULTI:
        y = _multi_hot(labels)
        if groups is None:
            return iterative_stratification(y, k, seed)
        ids, inverse = np.unique(np.asarray(groups), return_inverse=True)
        per_group = np.zeros((len(ids), y.shape[1]))
        np.add.at(per_group, inverse, y)
        return iterative_stratification(per_group, k, seed, np.bincount(inverse))[inverse]
    if kind == SEQUENCE:
        if groups is not None:
            return group_folds(groups, k, seed)
        strata = np.zeros(n, dtype=np.int64)
    else:
        strata = quantile_bins(_first_target(labels), max(1, min(_BINS, n // (2 * k)))) if kind == REGRESSION else labels
    if kind == SEQUENCE:
        splitter: Any = KFold(k, shuffle=True, random_state=seed)
    elif groups is None:
        splitter = StratifiedKFold(k, shuffle=True, random_state=seed)
    else:
        splitter = StratifiedGroupKFold(k, shuffle=True, random_state=seed)
    folds = np.zeros(n, dtype=np.int64)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*least populated class", category=UserWarning)
        for fold, (_, held) in enumerate(splitter.split(np.zeros((n, 1)), np.asarray(strata), groups)):
            folds[held] = fold
    return folds


def budget_strata(labels: Sequence[Any], kind: str) -> np.ndarray:
    """The stratum of each example for label-budget subsets: its class; multi-label: its rarest label (no label:
    a stratum of its own); regression: a quantile bin of the first target; sequence labels: one stratum.

    Example:
        >>> budget_strata([[1.0, 1.0], [1.0, 0.0], [0.0, 0.0]], MULTI).tolist()
        [1, 0, 2]
    """
    if kind == SINGLE:
        return np.asarray(labels, dtype=np.int64)
    if kind == MULTI:
        y = _multi_hot(labels)
        rarest = np.where(y, y.sum(axis=0), np.inf).argmin(axis=1)
        return np.where(y.any(axis=1), rarest, y.shape[1])
    if kind == REGRESSION:
        return quantile_bins(_first_target(labels))
    return np.zeros(len(labels), dtype=np.int64)


def interleave(strata: Sequence[int], seed: int) -> np.ndarray:
    """An order of the examples whose every prefix holds each stratum in proportion (within one example):
    each stratum shuffled, then merged by relative position, so item i of a stratum of n sits at (i + 0.5) / n.

    Example:
        >>> np.asarray([0, 0, 1, 1])[interleave([0, 0, 1, 1], seed=0)][:2].tolist() in ([0, 1], [1, 0])
        True
    """
    strata = np.asarray(strata)
    rng = np.random.default_rng(seed)
    position = np.zeros(len(strata))
    for stratum in np.unique(strata):
        members = rng.permutation(np.flatnonzero(strata == stratum))
        position[members] = (np.arange(len(members)) + 0.5) / len(members)
    return np.lexsort((rng.permutation(len(strata)), position))  # equal positions: in a seeded random order


def nested_order(labels: Sequence[Any], kind: str, seed: int) -> np.ndarray:
    """The label-budget order of the training examples: the subset of size N is the first N, so (for one seed)
    every smaller budget is inside every larger one, and each is stratified as `budget_strata` says.

    Example:
        >>> order = nested_order([0, 1, 0, 1, 0, 1], SINGLE, seed=3)
        >>> set(order[:2]) <= set(order[:4])
        True
    """
    return interleave(budget_strata(labels, kind), seed) if len(labels) else np.zeros(0, dtype=np.int64)


# -- applied to load_splits' datasets -------------------------------------------------------------------
def split_labelled(
    cfg: DataConfig,
    pool: tuple[datasets.Dataset, datasets.Dataset | None],
    kind: str,
    seed: int,
    sources: dict[str, str],
    labels: str,
) -> tuple[datasets.Dataset, datasets.Dataset]:
    """(train, validation) of a run from the labelled (train, validation or None) `pool` (column `labels`
    encoded): fold cfg.fold of cfg.folds (cfg a DataConfig), else the given validation, else a hold-out of
    cfg.validation_split of train (grouped by cfg.group_column when set). Writes what was chosen into `sources`.
    """
    train, validation = pool
    if cfg.folds:
        return _fold_split(cfg, train, validation, kind, seed, sources, labels)
    if validation is not None:
        return train, validation
    values = train[labels][:]
    if cfg.group_column:
        groups = group_ids(cfg.group_column, (train, sources["train"]))
        # One fold of about 1 / validation_split folds: a hold-out that keeps groups whole.
        k = min(max(2, round(1 / cfg.validation_split)), len(np.unique(groups)))
        held = assign_folds(values, k, seed, kind, groups) == 0 if k >= 2 else np.zeros(len(train), dtype=bool)
        train_idx, val_idx = np.flatnonzero(~held).tolist(), np.flatnonzero(held).tolist()
        how = describe(kind, cfg.group_column, seed)
        sources["validation"] = f"{len(val_idx) / len(train):.0%} of train, one of {k} folds ({how})"
    else:
        # The hold-out as it always was: stratified on class ids; other labels split at random.
        train_idx, val_idx = stratified_split([v if isinstance(v, int) else 0 for v in values], cfg.validation_split, seed)
        sources["validation"] = f"{cfg.validation_split:.0%} of train (stratified, seed {seed})"
    if not val_idx:
        raise DataError(
            f"{cfg.train} has too few examples ({len(train)}) {'or groups ' if cfg.group_column else ''}to hold out a "
            "validation split; provide data.validation=PATH or add examples"
        )
    return train.select(train_idx), train.select(val_idx)


def _fold_split(
    cfg: DataConfig,
    train: datasets.Dataset,
    validation: datasets.Dataset | None,
    kind: str,
    seed: int,
    sources: dict[str, str],
    labels: str,
) -> tuple[datasets.Dataset, datasets.Dataset]:
    parts = [(train, sources["train"])] + ([(validation, sources["validation"])] if validation is not None else [])
    groups = group_ids(cfg.group_column, *parts) if cfg.group_column else None  # read before pooling drops columns
    name = " + ".join(where for _, where in parts)
    if validation is not None:
        train = pooled(train, validation, name)
    k = cfg.folds
    if len(train) < k or (groups is not None and len(np.unique(groups)) < k):
        what = (
            f"{len(np.unique(groups))} groups (data.group_column={cfg.group_column})"
            if groups is not None
            else f"{len(train)} examples"
        )
        raise DataError(f"data.folds={k}: {name} has only {what}, fewer than the folds; lower data.folds")
    try:
        folds = assign_folds(train[labels][:], k, seed, kind, groups)
    except ValueError as e:  # scikit-learn's: e.g. every class has fewer than k examples
        raise DataError(f"data.folds={k}: {name} cannot be split into {k} folds: {e}; lower data.folds") from None
    how = describe(kind, cfg.group_column, seed)
    sources["validation"] = f"fold {cfg.fold} of {k} (numbered from 0) of {name} ({how})"
    sources["train"] = f"the other {k - 1} folds of {name} ({how})"
    held = folds == cfg.fold
    return train.select(np.flatnonzero(~held).tolist()), train.select(np.flatnonzero(held).tolist())


def label_budget(
    train: datasets.Dataset, size: int, kind: str, seed: int, sources: dict[str, str], labels: str
) -> datasets.Dataset:
    """The first `size` examples of `train` in `nested_order` (kept in their order), or a DataError naming
    data.train_size when train has fewer. Adds the budget to `sources["train"]`."""
    if size > len(train):
        raise DataError(
            f"data.train_size={size} is more than the {len(train)} training examples available ({sources['train']}); "
            f"set it to at most {len(train)}"
        )
    order = nested_order(train[labels][:], kind, seed)
    how = _BUDGET_HOW[kind]
    sources["train"] = f"{sources['train']}; label budget: {size} of its {len(train)} examples (nested, {how}, seed {seed})"
    return train.select(np.sort(order[:size]).tolist())


def group_ids(column: str, *parts: tuple[datasets.Dataset, str]) -> np.ndarray:
    """An int id per example of the datasets in `parts` (each with where it came from), one per distinct value of
    `column` (data.group_column) across them all; a missing column or value is a DataError naming the key.

    Example:
        >>> train, dev = datasets.Dataset.from_dict({"speaker": ["b", "a"]}), datasets.Dataset.from_dict({"speaker": ["a"]})
        >>> group_ids("speaker", (train, "train.csv"), (dev, "dev.csv")).tolist()
        [0, 1, 1]
    """
    values: list[Any] = []
    for ds, where in parts:
        if column not in ds.column_names:
            raise DataError(f"data.group_column={column!r}: {where} has no such column; its columns are {ds.column_names}")
        own = ds[column][:]
        missing = sum(v is None or (isinstance(v, float) and math.isnan(v)) or v == "" for v in own)
        if missing:
            raise DataError(
                f"data.group_column={column!r}: {missing} example(s) of {where} have no group; fill the column in or drop them"
            )
        values += own
    index: dict[Any, int] = {}
    return np.asarray([index.setdefault(v if isinstance(v, (str, int, float)) else repr(v), len(index)) for v in values])


def pooled(train: datasets.Dataset, validation: datasets.Dataset, where: str) -> datasets.Dataset:
    """`train` and `validation` as one dataset, in their shared columns (validation cast to train's types).

    Example:
        >>> len(pooled(datasets.Dataset.from_dict({"x": [1]}), datasets.Dataset.from_dict({"x": [2], "y": [0]}), "t"))
        2
    """
    common = [c for c in train.column_names if c in validation.column_names]
    train, validation = train.select_columns(common), validation.select_columns(common)
    if validation.features != train.features:
        try:
            validation = validation.cast(train.features)
        except (ValueError, TypeError) as e:
            raise DataError(
                f"data.folds: the train and validation splits of {where} cannot be pooled into folds, their columns differ "
                f"in type ({str(e).splitlines()[0][:200]}); give them the same columns, or unset data.folds"
            ) from None
    return datasets.concatenate_datasets([train, validation])
