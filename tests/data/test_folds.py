"""K-fold assignment and nested label-budget subsets: folds disjoint, covering and stratified for every label
shape, groups never split, subsets nested and stratified; through load_splits on csv files written here, where a
test file is never part of a fold; and the config refusals of the keys."""

from __future__ import annotations

import csv
import random
from pathlib import Path

import numpy as np
import pytest

from hftl.config import load_config
from hftl.data.folds import (
    MULTI,
    REGRESSION,
    SEQUENCE,
    SINGLE,
    assign_folds,
    budget_strata,
    describe,
    iterative_stratification,
    nested_order,
    quantile_bins,
)
from hftl.data.modalities import get_modality
from hftl.data.sources import LABELS, column_values, load_splits
from hftl.utils.errors import ConfigError, DataError
from tests.text_data import sentiment_rows, tagging_rows, write_jsonl

SKEWED = [0] * 70 + [1] * 20 + [2] * 10  # 100 examples, classes 70 / 20 / 10


def check_partition(folds: np.ndarray, n: int, k: int) -> None:
    assert folds.shape == (n,) and set(folds.tolist()) == set(range(k))  # every example in exactly one fold, none empty


# -- the pure assignments ---------------------------------------------------------------------------------
def test_single_label_folds_cover_the_pool_and_keep_the_class_proportions():
    labels = np.array(random.Random(0).sample(SKEWED, len(SKEWED)))
    folds = assign_folds(labels.tolist(), k=5, seed=0, kind=SINGLE)
    check_partition(folds, 100, 5)
    for fold in range(5):
        counts = np.bincount(labels[folds == fold], minlength=3)
        assert np.all(np.abs(counts - np.array([14, 4, 2])) <= 1), (fold, counts)


def test_folds_follow_the_seed():
    same = assign_folds(SKEWED, k=5, seed=3, kind=SINGLE)
    assert np.array_equal(same, assign_folds(SKEWED, k=5, seed=3, kind=SINGLE))
    assert not np.array_equal(same, assign_folds(SKEWED, k=5, seed=4, kind=SINGLE))


@pytest.mark.parametrize("kind", [SINGLE, MULTI, REGRESSION, SEQUENCE])
def test_grouped_folds_never_split_a_group(kind):
    rng = np.random.default_rng(0)
    groups = rng.integers(0, 30, size=200)  # 30 speakers of uneven size
    labels = {
        SINGLE: (groups % 3).tolist(),  # a speaker says one class mostly: the hard case for grouping
        MULTI: (rng.random((200, 4)) < [0.5, 0.2, 0.1, 0.05]).astype(float).tolist(),
        REGRESSION: rng.normal(size=(200, 1)).tolist(),
        SEQUENCE: [[0, 1]] * 200,
    }[kind]
    folds = assign_folds(labels, k=4, seed=1, kind=kind, groups=groups.tolist())
    check_partition(folds, 200, 4)
    for group in set(groups.tolist()):
        assert len(set(folds[groups == group].tolist())) == 1, f"group {group} is in several folds"


def label_imbalance(y: np.ndarray, folds: np.ndarray, k: int) -> float:
    """Summed distance of each fold's label counts from an equal share."""
    return float(sum(np.abs(y[folds == f].sum(axis=0) - y.sum(axis=0) / k).sum() for f in range(k)))


def test_iterative_stratification_balances_skewed_labels_better_than_a_random_split():
    rng = np.random.default_rng(0)
    y = (rng.random((300, 6)) < [0.5, 0.2, 0.06, 0.04, 0.03, 0.02]).astype(float)
    folds = iterative_stratification(y, k=5, seed=0)
    check_partition(folds, 300, 5)
    random_splits = [np.random.default_rng(s).permutation(300) % 5 for s in range(20)]
    assert label_imbalance(y, folds, 5) < 0.5 * np.mean([label_imbalance(y, f, 5) for f in random_splits])
    for label in np.flatnonzero(y.sum(axis=0) >= 5):  # a label with k positives or more is in every fold
        assert set(folds[y[:, label] > 0].tolist()) == set(range(5)), label
    assert np.array_equal(assign_folds(y.tolist(), 5, 0, MULTI), folds)


def test_regression_folds_stratify_on_quantile_bins():
    assert np.bincount(quantile_bins(np.arange(100.0), bins=10)).tolist() == [10] * 10
    assert quantile_bins([2.0, 2.0, 2.0, 5.0], bins=4).tolist() == [0, 0, 0, 1]  # ties stay in one bin
    targets = np.random.default_rng(0).exponential(size=100)  # skewed: a random split's folds differ in range
    folds = assign_folds(targets.reshape(-1, 1).tolist(), k=5, seed=0, kind=REGRESSION)
    check_partition(folds, 100, 5)
    bins = quantile_bins(targets, bins=10)
    for fold in range(5):
        assert np.bincount(bins[folds == fold], minlength=10).tolist() == [2] * 10  # 2 of every decile per fold


def test_sequence_labels_fold_at_random():
    folds = assign_folds([[1, 0, 2]] * 10, k=3, seed=0, kind=SEQUENCE)
    check_partition(folds, 10, 3)
    assert sorted(np.bincount(folds).tolist()) == [3, 3, 4]


def test_describe_says_what_was_chosen():
    assert describe(SINGLE, "speaker", 3) == "stratified by class, grouped by speaker, seed 3"
    assert describe(MULTI, None, 0) == "iteratively stratified by label, seed 0"
    assert describe(REGRESSION, None, 1) == "stratified by target quantiles, seed 1"
    assert describe(SEQUENCE, "doc", 2) == "shuffled, grouped by doc, seed 2"


# -- nested label budgets -----------------------------------------------------------------------------------
def test_nested_subsets_are_nested_and_stratified():
    labels = np.array(random.Random(1).sample(SKEWED * 4, 400))  # 280 / 80 / 40
    order = nested_order(labels.tolist(), SINGLE, seed=5)
    assert sorted(order.tolist()) == list(range(400))
    sizes = (20, 50, 100, 300)
    for small, large in zip(sizes, sizes[1:]):
        assert set(order[:small].tolist()) < set(order[:large].tolist())
    for size in sizes:
        counts = np.bincount(labels[order[:size]], minlength=3)
        assert np.all(np.abs(counts - size * np.array([0.7, 0.2, 0.1])) <= 1), (size, counts)
    assert not np.array_equal(order, nested_order(labels.tolist(), SINGLE, seed=6))


def test_multi_label_and_regression_budgets_stratify_their_own_way():
    y = [[1.0, 1.0], [1.0, 0.0], [1.0, 0.0], [0.0, 0.0]]
    assert budget_strata(y, MULTI).tolist() == [1, 0, 0, 2]  # the rarest label; no label is a stratum of its own
    rng = np.random.default_rng(0)
    multi = (rng.random((200, 3)) < [0.6, 0.3, 0.1]).astype(float)
    strata = budget_strata(multi.tolist(), MULTI)
    order = nested_order(multi.tolist(), MULTI, seed=0)
    share = np.bincount(strata, minlength=4) / 200
    for size in (20, 60):
        assert np.all(np.abs(np.bincount(strata[order[:size]], minlength=4) - size * share) <= 1)
    targets = np.arange(100.0).reshape(-1, 1).tolist()
    first = nested_order(targets, REGRESSION, seed=0)[:10]
    assert np.bincount(quantile_bins(np.arange(100.0))[first], minlength=10).tolist() == [1] * 10


# -- through load_splits ---------------------------------------------------------------------------------------
def write_csv(path: Path, rows: list[dict]) -> Path:
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return path


def rows(n: int, start: int, seed: int = 0) -> list[dict]:
    """Sentiment rows with an `id` and a `speaker` (5 rows each), as a csv's columns."""
    return [{"id": start + i, "speaker": f"s{(start + i) // 5}", **r} for i, r in enumerate(sentiment_rows(n, seed))]


def splits(tmp_path: Path, task: str = "text-classification", seed: int = 0, **data) -> object:
    cfg = load_config({"task": task, "model": {"name_or_path": "m"}, "data": data})
    return load_splits(cfg.data, get_modality(cfg.task, cfg), seed=seed)


def ids(ds) -> set[int]:
    return set(column_values(ds, "id"))


@pytest.fixture
def files(tmp_path) -> dict[str, str]:
    return {
        "train": str(write_csv(tmp_path / "train.csv", rows(60, 0))),
        "validation": str(write_csv(tmp_path / "dev.csv", rows(15, 100, seed=1))),
        "test": str(write_csv(tmp_path / "test.csv", rows(20, 200, seed=2))),
    }


@pytest.mark.parametrize("with_validation", [False, True])
def test_folds_through_load_splits_cover_train_and_validation_never_test(tmp_path, files, with_validation):
    data = {k: v for k, v in files.items() if with_validation or k != "validation"}
    pool = set(range(60)) | (set(range(100, 115)) if with_validation else set())
    held = []
    for fold in range(3):
        s = splits(tmp_path, **data, folds=3, fold=fold)
        assert ids(s.train) | ids(s.validation) == pool and not ids(s.train) & ids(s.validation)
        assert ids(s.test) == set(range(200, 220))
        labels = column_values(s.validation, LABELS)
        assert abs(labels.count(0) - labels.count(1)) <= 1  # stratified: the classes are balanced in every fold
        assert f"fold {fold} of 3" in s.sources["validation"] and "stratified by class, seed 0" in s.sources["validation"]
        assert "the other 2 folds" in s.sources["train"]
        held.append(ids(s.validation))
    assert set().union(*held) == pool and sum(map(len, held)) == len(pool)  # the validation folds are disjoint
    assert ids(splits(tmp_path, **data, folds=3, fold=0, seed=1).validation) != held[0]  # another seed, other folds


def test_grouped_folds_and_hold_out_through_load_splits(tmp_path, files):
    s = splits(tmp_path, train=files["train"], folds=3, fold=1, group_column="speaker")
    speakers = {split: set(column_values(getattr(s, split), "speaker")) for split in ("train", "validation")}
    assert not speakers["train"] & speakers["validation"]
    assert "grouped by speaker" in s.sources["validation"]
    # data.validation's speakers s6..s9 also speak in train: one group across both files, never split
    shared = [{**r, "speaker": f"s{6 + i % 4}"} for i, r in enumerate(rows(15, 100, seed=1))]
    dev = write_csv(tmp_path / "shared.csv", shared)
    for fold in range(3):
        s = splits(tmp_path, train=files["train"], validation=str(dev), folds=3, fold=fold, group_column="speaker")
        assert not set(column_values(s.train, "speaker")) & set(column_values(s.validation, "speaker"))
        assert len(ids(s.train) | ids(s.validation)) == 75
    held_out = splits(tmp_path, train=files["train"], validation_split=0.25, group_column="speaker")
    assert not set(column_values(held_out.train, "speaker")) & set(column_values(held_out.validation, "speaker"))
    assert len(held_out.train) + len(held_out.validation) == 60 and "grouped by speaker" in held_out.sources["validation"]


def test_a_missing_group_column_is_refused_naming_the_key(tmp_path, files):
    with pytest.raises(DataError, match=r"data.group_column='patient': .*train.csv has no such column"):
        splits(tmp_path, train=files["train"], folds=3, fold=0, group_column="patient")


def test_train_size_takes_nested_subsets_of_the_fold(tmp_path, files):
    subsets = [ids(splits(tmp_path, train=files["train"], folds=3, fold=2, train_size=n).train) for n in (10, 20, 40)]
    assert [len(s) for s in subsets] == [10, 20, 40]
    assert subsets[0] < subsets[1] < subsets[2]
    fold_train = ids(splits(tmp_path, train=files["train"], folds=3, fold=2).train)
    assert subsets[2] == fold_train  # a budget of the whole split is the split
    s = splits(tmp_path, train=files["train"], folds=3, fold=2, train_size=20)
    labels = column_values(s.train, LABELS)
    assert labels.count(0) == labels.count(1) == 10 and "label budget: 20 of its 40 examples" in s.sources["train"]
    assert s.labels.examples == 20  # the recorded class counts are the budget's


def test_train_size_beyond_the_training_split_is_refused(tmp_path, files):
    with pytest.raises(DataError, match=r"data.train_size=41 is more than the 40 training examples"):
        splits(tmp_path, train=files["train"], folds=3, fold=0, train_size=41)


def test_sequence_labels_fold_through_load_splits(tmp_path):
    tagged = [{"id": i, **r} for i, r in enumerate(tagging_rows(12))]
    train = write_jsonl(tmp_path / "tags.jsonl", tagged)
    held = [ids(splits(tmp_path, "token-classification", train=str(train), folds=2, fold=f).validation) for f in (0, 1)]
    assert held[0] | held[1] == set(range(12)) and not held[0] & held[1]
    s = splits(tmp_path, "token-classification", train=str(train), folds=2, fold=0, train_size=4)
    assert len(s.train) == 4 and "shuffled, seed 0" in s.sources["validation"]


# -- config refusals ------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"fold": 1}, "data.fold=1 picks one of data.folds' folds, but data.folds is null"),
        ({"folds": 5}, "data.folds=5 needs data.fold"),
        ({"folds": 5, "fold": 5}, r"data.fold must be between 0 and data.folds - 1 \(4\), got 5"),
        ({"folds": 5, "fold": -1}, "data.fold must be between 0"),
        ({"folds": 1, "fold": 0}, "data.folds must be >= 2"),
        ({"train_size": 0}, "data.train_size must be >= 1"),
        ({"group_column": " "}, "data.group_column must name a column"),
    ],
)
def test_the_keys_are_checked(data, message):
    with pytest.raises(ConfigError, match=message):
        load_config({"model": {"name_or_path": "m"}, "data": {"train": "d/", **data}})


def test_the_keys_take_overrides():
    cfg = load_config({"model": {"name_or_path": "m"}, "data": {"train": "d/"}}, ["folds=5", "fold=4", "train_size=50"])
    assert (cfg.data.folds, cfg.data.fold, cfg.data.train_size, cfg.data.group_column) == (5, 4, 50, None)
