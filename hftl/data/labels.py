"""Label shapes of image, text and audio classification: single-label, multi-label and regression.

A `LabelSpace` is what training learned about the labels: the shape, the names (classes, or regression
targets), how often each class occurs in train, and the targets' mean and spread. `build_space` reads it
off the training split, `encode` writes each split's `labels` column from it (class ids, multi-hot
vectors, or targets), each bad cell refused naming its row, column and the fix.

Example:
    >>> ds = datasets.Dataset.from_dict({"label": [["cat"], ["cat", "dog"], []]})
    >>> space = build_space(DataConfig(problem="auto"), ds, "label", "pets.jsonl")
    >>> space.problem, space.names, space.counts
    ('multi_label', ['cat', 'dog'], [2, 1])
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

import datasets
import numpy as np

from hftl.config import DataConfig
from hftl.data.sources import LABELS, column_values, encode_labels, label_names_of, source_rows
from hftl.utils.errors import DataError

SINGLE, MULTI, REGRESSION = "single_label", "multi_label", "regression"
# config.problem_type of transformers' classification heads: it picks their loss and the pipelines' scores.
PROBLEM_TYPES = {SINGLE: "single_label_classification", MULTI: "multi_label_classification", REGRESSION: "regression"}
FEW_EXAMPLES = 10  # a class with fewer training examples gets a warning


@dataclass
class LabelSpace:
    """The labels as training saw them (kept in metrics.json's `data.label_space`)."""

    problem: str = SINGLE
    names: list[str] = field(default_factory=list)
    counts: list[int] | None = None  # training examples per class (multi-label: with the label)
    mean: list[float] | None = None  # regression: per target, the training targets' mean and standard deviation
    std: list[float] | None = None
    examples: int = 0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def recount(self, labels: list[Any]) -> None:
        """Class counts (regression: mean and spread) of the final training split's encoded `labels`,
        after the validation split and data.max_train_samples took their share."""
        self.examples = len(labels)
        if self.problem == SINGLE:
            self.counts = np.bincount(np.asarray(labels, dtype=np.int64), minlength=len(self.names)).tolist()
        elif self.problem == MULTI:
            self.counts = (np.asarray(labels).reshape(len(labels), -1) > 0.5).sum(axis=0).astype(int).tolist()
        else:
            targets = np.asarray(labels, dtype=np.float64).reshape(len(labels), -1)
            self.mean, self.std = targets.mean(axis=0).tolist(), targets.std(axis=0).tolist()

    @classmethod
    def from_dict(cls, raw: dict[str, Any] | None, names: list[str]) -> LabelSpace:
        """The space a finished run recorded (runs from before label shapes: single-label of `names`)."""
        return cls(**raw) if raw else cls(SINGLE, list(names))

    def in_data_units(self) -> LabelSpace:
        """The same space for an exported model, whose head already predicts in the data's units."""
        if self.problem != REGRESSION:
            return self
        return LabelSpace(REGRESSION, self.names, None, [0.0] * len(self.names), [1.0] * len(self.names), self.examples)

    def describe_counts(self) -> str | None:
        """One line of class counts, and a warning line for classes with under FEW_EXAMPLES examples."""
        if self.counts is None:
            return None
        pairs = sorted(zip(self.names, self.counts), key=lambda p: -p[1])
        shown = ", ".join(f"{n}: {c}" for n, c in pairs[:20]) + (" ..." if len(pairs) > 20 else "")
        what = "examples per label" if self.problem == MULTI else "examples per class"
        lines = [f"train {what}: {shown}"]
        rare = [n for n, c in pairs if c < FEW_EXAMPLES]
        if rare:
            lines.append(
                f"warning: {len(rare)} class(es) with fewer than {FEW_EXAMPLES} training examples ({', '.join(rare[:10])}): "
                "their metrics will be noisy; add examples, or try train.class_weights=balanced / data.sampler=balanced"
            )
        return "\n".join(lines)


def as_space(labels: LabelSpace | list[str]) -> LabelSpace:
    """A LabelSpace from a space or a plain list of class names (single-label)."""
    return labels if isinstance(labels, LabelSpace) else LabelSpace(SINGLE, list(labels))


def label_columns(column: str | list[str]) -> list[str]:
    return list(column) if isinstance(column, (list, tuple)) else [column]


def _is_list_feature(feature: Any) -> bool:
    return isinstance(feature, (datasets.List, datasets.LargeList, list))


def _inner(feature: Any) -> Any:
    return feature[0] if isinstance(feature, list) else feature.feature


def resolve_problem(cfg: DataConfig, ds: datasets.Dataset, column: str | list[str], where: str) -> str:
    """data.problem, or when `auto`: multi_label for a column of lists, else single_label. A text cell that
    holds the label separator is refused under auto: it may be several labels or one, and guessing either is wrong."""
    if cfg.problem != "auto":
        return cfg.problem
    columns = label_columns(column)
    feature = ds.features[columns[0]]
    if _is_list_feature(feature):
        return MULTI
    if isinstance(feature, datasets.Value) and feature.dtype in ("string", "large_string"):
        sep = cfg.label_separator
        for row, value in zip(source_rows(ds), column_values(ds, columns[0])):
            if isinstance(value, str) and sep in value:
                raise DataError(
                    f"{where}: row {row} column {columns[0]!r} holds {value!r}, which looks like several labels joined "
                    f"by {sep!r}. Set data.problem=multi_label if it is, or data.problem=single_label if {sep!r} is part "
                    "of the label"
                )
    return SINGLE


def build_space(cfg: DataConfig, ds: datasets.Dataset, column: str | list[str], where: str) -> LabelSpace:
    """The label space of the training split `ds` (see the module docstring)."""
    problem = resolve_problem(cfg, ds, column, where)
    if problem == REGRESSION:
        return _regression_space(ds, column, where)
    (col,) = label_columns(column)
    if problem == MULTI:
        return _multi_space(cfg, ds, col, where)
    if _is_list_feature(ds.features[col]):
        raise DataError(
            f"{where}: column {col!r} holds lists of labels, but data.problem=single_label; set data.problem=multi_label "
            "(or auto) to learn several labels per example"
        )
    names = label_names_of(ds, col, where)
    counts = np.bincount(column_values(encode_labels(ds, col, names, "train", where), LABELS), minlength=len(names)).tolist()
    return LabelSpace(SINGLE, names, counts, examples=len(ds))


def encode(
    cfg: DataConfig, ds: datasets.Dataset, column: str | list[str], space: LabelSpace, split: str, where: str
) -> datasets.Dataset:
    """`ds` with `labels`: class ids, multi-hot float vectors, or float targets (in the data's units)."""
    if space.problem == SINGLE:
        (col,) = label_columns(column)
        if _is_list_feature(ds.features[col]):
            raise DataError(
                f"{where}: column {col!r} of the {split} split holds lists of labels, but the model is single-label; "
                "give one label per example"
            )
        return encode_labels(ds, col, space.names, split, where)
    if space.problem == MULTI:
        (col,) = label_columns(column)
        index = {n: i for i, n in enumerate(space.names)}
        vectors = []
        for row, labels in _label_lists(cfg, ds, col, where, split):
            vector = [0.0] * len(space.names)
            for label in labels:
                if label not in index:
                    raise DataError(
                        f"{where}: row {row} of the {split} split has label {label!r} in column {col!r}, which the "
                        f"training data never has (train labels: {', '.join(space.names[:20])}). Fix the label, drop it "
                        "from the row, or add training examples of it"
                    )
                vector[index[label]] = 1.0
            vectors.append(vector)
        return _with_labels(ds, vectors)
    targets = _targets(ds, column, where, split)
    if len(targets) and targets.shape[1] != len(space.names):
        raise DataError(
            f"{where}: the {split} split has {targets.shape[1]} target(s) per row, but the model predicts "
            f"{len(space.names)} ({', '.join(space.names)})"
        )
    # In the data's units: the loss standardises them (losses.py), the exported head predicts them (export.py).
    return _with_labels(ds, targets.astype(np.float32).tolist())


def _with_labels(ds: datasets.Dataset, values: list) -> datasets.Dataset:
    if LABELS in ds.column_names:  # also when the label column itself is called "labels"
        ds = ds.remove_columns(LABELS)
    return ds.add_column(LABELS, values, feature=datasets.List(datasets.Value("float32")))


def _rows(ds: datasets.Dataset, column: str) -> zip:
    return zip(source_rows(ds), column_values(ds, column))


# -- multi-label ------------------------------------------------------------------------------------
def _multi_space(cfg: DataConfig, ds: datasets.Dataset, column: str, where: str) -> LabelSpace:
    counts: dict[str, int] = {}
    for _, labels in _label_lists(cfg, ds, column, where, "train"):
        for label in set(labels):
            counts[label] = counts.get(label, 0) + 1
    if (class_names := _class_names(ds, column)) is not None:
        names = class_names
    elif counts and all(n.lstrip("-").isdigit() for n in counts):
        names = [str(n) for n in sorted(int(n) for n in counts)]
    else:
        names = sorted(counts)
    if not names:
        raise DataError(
            f"{where}: no training example has any label in column {column!r}, so there is nothing to learn; check "
            "data.label_column, and data.label_separator for labels joined in one text cell"
        )
    return LabelSpace(MULTI, names, [counts.get(n, 0) for n in names], examples=len(ds))


def _class_names(ds: datasets.Dataset, column: str) -> list[str] | None:
    """The names of a ClassLabel column (or of a list of ClassLabels), else None."""
    feature = ds.features[column]
    inner = _inner(feature) if _is_list_feature(feature) else feature
    return list(inner.names) if isinstance(inner, datasets.ClassLabel) else None


def _label_lists(cfg: DataConfig, ds: datasets.Dataset, column: str, where: str, split: str) -> list[tuple[int, list[str]]]:
    """(source row, its labels as names) of every example, the column read once."""
    names = _class_names(ds, column)
    return [(row, _label_list(cfg, names, column, where, split, row, value)) for row, value in _rows(ds, column)]


def _label_list(cfg: DataConfig, names: list[str] | None, column: str, where: str, split: str, row: int, value: Any) -> list[str]:
    """One example's labels as names: a list (of names or ClassLabel ids, `names` being the ClassLabel's), a
    text cell joined by the separator, one scalar, or nothing (an example with no label is allowed)."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return []
    items = value if isinstance(value, list) else (value.split(cfg.label_separator) if isinstance(value, str) else [value])
    out = []
    for item in items:
        if isinstance(item, (list, dict)) or (isinstance(item, float) and not item.is_integer()):
            raise DataError(
                f"{where}: row {row} of the {split} split column {column!r} holds {str(value)[:80]!r}; a multi-label "
                "cell is a list of label names (or a text joined by data.label_separator)"
            )
        if names is not None and isinstance(item, int):
            out.append(names[item])
        elif isinstance(item, float):
            out.append(str(int(item)))
        elif str(item).strip():
            out.append(str(item).strip())
    return out


# -- regression -------------------------------------------------------------------------------------
def _regression_space(ds: datasets.Dataset, column: str | list[str], where: str) -> LabelSpace:
    columns = label_columns(column)
    targets = _targets(ds, column, where, "train")
    width = targets.shape[1]
    names = columns if len(columns) > 1 else ([columns[0]] if width == 1 else [f"{columns[0]}_{i}" for i in range(width)])
    mean, std = targets.mean(axis=0), targets.std(axis=0)
    for name, s in zip(names, std):
        if not s > 0:
            raise DataError(
                f"{where}: every training example has the same {name!r} target ({targets[0, names.index(name)]:g}); "
                "there is nothing to learn. Check data.label_column"
            )
    return LabelSpace(REGRESSION, names, None, mean.tolist(), std.tolist(), examples=len(ds))


def _targets(ds: datasets.Dataset, column: str | list[str], where: str, split: str) -> np.ndarray:
    """The targets as an (examples, targets) float array; a missing, non-numeric or non-finite one is an
    error naming its row and column."""
    columns = label_columns(column)
    rows = source_rows(ds)
    per_column = []
    width = None
    for col in columns:
        values = []
        for row, value in zip(rows, column_values(ds, col)):
            items = value if isinstance(value, list) and len(columns) == 1 else [value]
            if width is None:
                width = len(items)
            if len(items) != width or not items:
                raise DataError(
                    f"{where}: row {row} of the {split} split has {len(items)} target(s) in column {col!r}, the rows "
                    f"before it {width}; every row needs the same number"
                )
            values.append([_number(item, where, split, row, col) for item in items])
        per_column.append(np.asarray(values, dtype=np.float64).reshape(len(values), -1))
    return np.concatenate(per_column, axis=1) if per_column else np.zeros((0, 1))


def _number(value: Any, where: str, split: str, row: int, column: str) -> float:
    if isinstance(value, bool) or value is None:
        number = math.nan if value is None else None
    else:
        try:
            number = float(value)
        except (TypeError, ValueError):
            number = None
    if number is None or not math.isfinite(number):
        shown = "nothing" if value is None else repr(value)[:60]
        raise DataError(
            f"{where}: row {row} of the {split} split has {shown} in target column {column!r}; regression needs a "
            "finite number in every row. Fix or drop the row"
        )
    return number
