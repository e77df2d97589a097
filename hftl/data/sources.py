"""Load and validate labelled datasets for any modality: sources, labels, splits, bad-input reports.

Modality-specific work (which column holds the inputs, how to open and check a file) is delegated to
the task's modality object; everything about labels and splits is shared.

Example:
    >>> splits = load_splits(cfg.data, get_modality("image-classification"), seed=42)  # doctest: +SKIP
    >>> splits.label_names, len(splits.train), len(splits.validation)                 # doctest: +SKIP
"""

from __future__ import annotations

import itertools
import math
import os
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import datasets
import numpy as np
import torch

from hftl.config import DataConfig
from hftl.data.dataset_repos import RepoOptions, is_dataset_repo, load_repo, select_split
from hftl.data.folds import label_budget, label_kind, split_labelled
from hftl.data.metrics import Evaluator
from hftl.utils.errors import DataError

FILE_BUILDERS = {".csv": "csv", ".tsv": "csv", ".json": "json", ".jsonl": "json", ".parquet": "parquet"}
SPLIT_DIRS = {"train": "train", "validation": "validation", "valid": "validation", "val": "validation", "test": "test"}
LABELS = "labels"  # the encoded label-id column every split gets
ROW = "__hftl_row__"  # 1-based row of the source file, so messages stay right after unreadable rows are skipped
FEATURES = "hftl_features"  # batch key of a cached split's stored tensors; the trainer hands it to the stand-ins
_MAX_LISTED = 10


@dataclass
class DataReport:
    """What was skipped while loading, per split, so a run can say it once and record it."""

    skipped: dict[str, list[tuple[str, str]]] = field(default_factory=lambda: defaultdict(list))

    def skip(self, split: str, item: str, reason: str) -> None:
        self.skipped[split].append((item, reason))

    def total(self) -> int:
        return sum(len(v) for v in self.skipped.values())

    def summary(self) -> str:
        lines = []
        for split, items in self.skipped.items():
            lines.append(f"skipped {len(items)} item(s) in {split}:")
            lines += [f"  {item}: {reason}" for item, reason in items[:_MAX_LISTED]]
            if len(items) > _MAX_LISTED:
                lines.append(f"  ... and {len(items) - _MAX_LISTED} more")
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        return {split: {"count": len(v), "items": [{"item": i, "reason": r} for i, r in v]} for split, v in self.skipped.items()}


@dataclass
class Splits:
    train: datasets.Dataset
    validation: datasets.Dataset
    test: datasets.Dataset | None
    label_names: list[str]
    input_column: str
    report: DataReport
    sources: dict[str, str]
    label_column: str | list[str] = "label"
    labels: Any = None  # the task's labels.LabelSpace (shape, names, class counts, target scaling)
    target: datasets.Dataset | None = None  # data.target: target-domain inputs, placeholder labels
    target_test: datasets.Dataset | None = None  # data.target_test: labelled target-domain data


def load_splits(cfg: DataConfig, modality: Any, seed: int) -> Splits:
    """Load train / validation / test as declared in `cfg`, checked and with label ids in `labels`."""
    report = DataReport()
    repo = RepoOptions(cfg.dataset_config, cfg.revision)
    loaded = load_source(cfg.train, modality, "data.train", report, repo)
    train = _pick(loaded, "train", cfg.train, wanted=cfg.train_split, key="data.train_split")
    validation = test = None
    if isinstance(loaded, dict):
        validation = _pick(loaded, "validation", cfg.train, False, cfg.validation_split_name, "data.validation_split_name")
        test = _pick(loaded, "test", cfg.train, False, cfg.test_split, "data.test_split")
    sources = {"train": cfg.train}
    sources.update(
        {split: f"{cfg.train} ({split} split)" for split, ds in (("validation", validation), ("test", test)) if ds is not None}
    )
    for role, spec, wanted in (("validation", cfg.validation, cfg.validation_split_name), ("test", cfg.test, cfg.test_split)):
        if not spec:
            continue
        source = load_source(spec, modality, f"data.{role}", report, repo)
        key = "data.validation_split_name" if role == "validation" else "data.test_split"
        picked = _pick(source, role, spec, wanted=wanted if isinstance(source, dict) else None, key=key)
        validation, test = (picked, test) if role == "validation" else (validation, picked)
        sources[role] = spec

    input_column = cfg.input_column or modality.detect_input_column(train, cfg.train)
    label_column = cfg.label_column or modality.detect_label_column(train, cfg.train)
    prepared = {}
    for split, ds in (("train", train), ("validation", validation), ("test", test)):
        if ds is not None:
            where = sources.get(split, cfg.train)
            prepared[split] = prepare_split(ds, split, where, (input_column, label_column), modality, cfg.on_bad_file, report)

    space = modality.label_space(prepared["train"], label_column, sources["train"])
    label_names = space.names
    if modality.label_shapes:  # auto resolved: saved with the run, and it picks the default metric
        cfg.problem = space.problem
    for split, ds in prepared.items():
        encoded = modality.encode_labels(ds, label_column, space, split, sources.get(split, cfg.train))
        prepared[split] = encoded.remove_columns(ROW)
    kind = label_kind(space.problem, modality.label_shapes)
    pool = (prepared["train"], prepared.get("validation"))
    train, prepared["validation"] = split_labelled(cfg, pool, kind, seed, sources, LABELS)  # data.folds, or a hold-out
    if cfg.max_train_samples and cfg.max_train_samples < len(train):
        order = np.random.default_rng(seed).permutation(len(train))[: cfg.max_train_samples]
        train = train.select(sorted(order.tolist()))
    if cfg.train_size is not None:
        train = label_budget(train, cfg.train_size, kind, seed, sources, LABELS)
    for split, ds in (("train", train), ("validation", prepared["validation"]), ("test", prepared.get("test"))):
        if ds is not None and len(ds) == 0:
            raise DataError(f"the {split} split ({sources.get(split, cfg.train)}) is empty after loading; add examples to it")
    if modality.label_shapes:
        space.recount(column_values(train, LABELS))
    return Splits(
        train, prepared["validation"], prepared.get("test"), label_names, input_column, report, sources, label_column, space
    )


def prepare_split(
    ds: datasets.Dataset, split: str, where: str, columns: tuple[str, str], modality: Any, on_bad: str, report: DataReport
) -> datasets.Dataset:
    """One split with its (input, label) `columns` checked, its inputs prepared and checked by the modality
    (unusable ones skipped and reported, or refused), each row's source row kept in ROW."""
    input_column, label_column = columns
    _require_columns(ds, [input_column, *(label_column if isinstance(label_column, list) else [label_column])], where, split)
    ds = ds.add_column(ROW, list(range(1, len(ds) + 1)))
    ds = modality.prepare_inputs(ds, input_column, where)
    checked = modality.check_inputs(ds, input_column, split, on_bad, report)
    if len(checked) == 0:
        skipped = report.skipped.get(split, [])
        why = f": all {len(ds)} were unreadable (first: {skipped[0][0]}: {skipped[0][1]})" if len(ds) and skipped else ""
        raise DataError(f"the {split} split ({where}) has no usable examples{why}; add readable examples to it")
    return checked


def load_labelled(
    spec: str,
    modality: Any,
    cfg: DataConfig,
    labels: Any,
    report: DataReport,
    repo: RepoOptions | None = None,
    split: str | None = None,
) -> tuple[Any, str]:
    """Labelled data for a trained model (`hftl evaluate --data`), read and checked as training data is, with
    labels encoded into the model's label space `labels` (a labels.LabelSpace). A dataset's `split` (name or
    slice; default test, else validation, else the first) in `repo`'s config. Returns the split and its input column.

    Example:
        >>> ds, column = load_labelled("more.csv", modality, cfg.data, space, DataReport())  # doctest: +SKIP
    """
    ds = inference_split(load_source(spec, modality, "--data", report, repo), spec, split)
    column = cfg.input_column or modality.detect_input_column(ds, spec)
    label_column = cfg.label_column or modality.detect_label_column(ds, spec)
    for name in label_column if isinstance(label_column, list) else [label_column]:
        if name not in ds.column_names:
            raise DataError(
                f"{spec} has no label column {name!r}; its columns are {ds.column_names}. "
                "Rename the column to match the run's data.label_column"
            )
    ds = prepare_split(ds, "evaluation", spec, (column, label_column), modality, cfg.on_bad_file, report)
    return modality.encode_labels(ds, label_column, labels, "evaluation", spec).remove_columns(ROW), column


def inference_split(loaded: datasets.Dataset | dict[str, datasets.Dataset], spec: str, split: str | None) -> datasets.Dataset:
    """The split `hftl evaluate` / `hftl predict --data` read: `--split` (a name or slice), else test, else
    validation, else the first; a single file or folder is its own split."""
    if not isinstance(loaded, dict):
        return loaded
    if split:
        return select_split(loaded, split, spec, "--split")
    return loaded.get("test") or loaded.get("validation") or next(iter(loaded.values()))


def load_source(
    spec: str, modality: Any, key: str, report: DataReport, repo: RepoOptions | None = None
) -> datasets.Dataset | dict[str, datasets.Dataset]:
    """A folder (class sub-folders), a csv/json/jsonl/parquet file, or a Hub dataset id (or a folder laid out
    like a Hub dataset repo), in `repo`'s config and revision."""
    repo = repo or RepoOptions()
    path = Path(os.path.expanduser(spec))
    if path.is_dir() and (is_dataset_repo(path) or repo.config):
        return load_repo(str(path), repo, key)
    if path.is_dir():
        # A flat folder is one split: file its skips under the split this key loads, not always "train".
        folder_report = DataReport()
        loaded = modality.load_folder(path, folder_report)
        default = {"data.validation": "validation", "data.test": "test", "--data": "evaluation"}.get(key, "train")
        for split, items in folder_report.skipped.items():
            for item, reason in items:
                report.skip(split if isinstance(loaded, dict) else default, item, reason)
        return loaded
    if path.is_file():
        builder = FILE_BUILDERS.get(path.suffix.lower())
        if builder is None:
            raise DataError(
                f"{key}={spec}: unsupported file type {path.suffix!r}; use a folder, or one of {', '.join(FILE_BUILDERS)}"
            )
        if _has_no_rows(path, builder):  # datasets' own error for these is "Instruction 'train' corresponds to no data"
            raise DataError(f"{key}={spec} holds no examples (an empty file, or a header and no rows); add examples to it")
        kwargs = {"delimiter": "\t"} if path.suffix.lower() == ".tsv" else {}
        try:
            return datasets.load_dataset(builder, data_files=str(path), split="train", **kwargs)
        except Exception as e:  # noqa: BLE001 - parser errors come in many types; report them all the same way
            raise DataError(f"{key}={spec}: could not read it as {builder}: {_first_line(e)}") from None
    if spec.startswith((".", "/", "~")) or Path(spec).suffix.lower() in FILE_BUILDERS or os.sep + os.sep in spec:
        raise DataError(f"{key}={spec}: no such file or directory")
    return load_repo(spec, repo, key)


def _has_no_rows(path: Path, builder: str) -> bool:
    if builder == "parquet":
        return path.stat().st_size == 0
    with path.open(errors="replace") as f:
        lines = list(itertools.islice((line for line in f if line.strip()), 2))
    return len(lines) <= (1 if builder == "csv" else 0)


def _first_line(e: Exception) -> str:
    text = str(e).strip() or type(e).__name__
    return text.splitlines()[0][:300]


def _pick(
    loaded: Any, split: str, where: str, required: bool = True, wanted: str | None = None, key: str = ""
) -> datasets.Dataset | None:
    """Split `split` of a loaded source: the configured name or slice `wanted` (named by `key`), else by its aliases."""
    if isinstance(loaded, datasets.Dataset):
        if wanted:
            raise DataError(f"{key}={wanted!r}: {where} is a single file or folder with no named splits; remove {key}")
        return loaded
    if wanted:
        return select_split(loaded, wanted, where, key)
    aliases = [k for k, v in SPLIT_DIRS.items() if v == split]
    for name in aliases:
        if name in loaded:
            return loaded[name]
    if split == "train" and len(loaded) == 1:
        return next(iter(loaded.values()))
    if required:
        raise DataError(
            f"{where} has splits {sorted(loaded)} but no {split!r} split; name one {split!r} or pass a path per split"
        )
    return None


def _require_columns(ds: datasets.Dataset, columns: list[str], where: str, split: str) -> None:
    for column in columns:
        if column not in ds.column_names:
            key = "data.input_column" if column == columns[0] else "data.label_column"
            raise DataError(
                f"{where} ({split}) has no column {column!r}; its columns are {ds.column_names}. "
                f"Rename the column or set {key}=<name>"
            )


def _label_text(value: Any, names: list[str] | None) -> str | None:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    if names is not None and isinstance(value, int):
        return names[value] if 0 <= value < len(names) else None  # ClassLabel writes -1 for "no label"
    return str(value)


def column_values(ds: datasets.Dataset, column: str) -> list[Any]:
    """`column` as a plain list, read in one go: iterating datasets' lazy `ds[column]` costs ~13 us a row
    (1.1 s of a 10k-image start-up went to label columns read that way). Not for image or audio columns,
    which this would decode whole.

    Example:
        >>> column_values(datasets.Dataset.from_dict({"y": [1, 0]}), "y")
        [1, 0]
    """
    return ds[column][:]


def source_rows(ds: datasets.Dataset) -> list[int]:
    """1-based source rows of `ds` (kept in ROW through skips), for messages."""
    return column_values(ds, ROW) if ROW in ds.column_names else list(range(1, len(ds) + 1))


def label_names_of(ds: datasets.Dataset, column: str, where: str) -> list[str]:
    """The label vocabulary: a ClassLabel's names, else the sorted distinct values of train."""
    feature = ds.features[column]
    if isinstance(feature, datasets.ClassLabel):
        return list(feature.names)
    values = column_values(ds, column)
    for row, value in zip(source_rows(ds), values):
        if _label_text(value, None) is None or (isinstance(value, str) and not value.strip()):
            raise DataError(f"{where}: row {row} has no label in column {column!r}; fill it in or drop the row")
        if isinstance(value, (list, dict)):
            raise DataError(f"{where}: row {row} column {column!r} holds {type(value).__name__}, expected one label")
    distinct = set(values)
    if len(distinct) < 2:
        raise DataError(
            f"{where}: every training example has the label {next(iter(distinct))!r} (column {column!r}); "
            "classification needs at least two labels. Check data.label_column, or add examples of other labels"
        )
    if all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in distinct):
        return [str(v) for v in sorted(distinct)]
    return sorted(str(v) for v in distinct)


def encode_labels(ds: datasets.Dataset, column: str, label_names: list[str], split: str, where: str) -> datasets.Dataset:
    """Add `labels` (ids into `label_names`); a label train never had is an error naming the row."""
    feature = ds.features[column]
    names = list(feature.names) if isinstance(feature, datasets.ClassLabel) else None
    index = {name: i for i, name in enumerate(label_names)}
    ids = []
    for row, value in zip(source_rows(ds), column_values(ds, column)):
        text = _label_text(value, names)
        if text is None:
            raise DataError(f"{where}: row {row} of the {split} split has no label in column {column!r}")
        if text not in index:
            raise DataError(
                f"{where}: row {row} of the {split} split has label {text!r}, which the training data never has "
                f"(train labels: {', '.join(label_names[:20])}{' ...' if len(label_names) > 20 else ''}). "
                "Fix the label, drop the row, or add training examples of it"
            )
        ids.append(index[text])
    if LABELS in ds.column_names:  # also when the label column itself is called "labels": ids replace it
        ds = ds.remove_columns(LABELS)
    return ds.add_column(LABELS, ids)


def label_tensor(values: list[Any]) -> torch.Tensor:
    """A batch's labels: class ids as int64, multi-hot vectors and regression targets as float32.

    Example:
        >>> label_tensor([1, 0]).dtype, label_tensor([[0.0, 1.0]]).dtype
        (torch.int64, torch.float32)
    """
    return torch.tensor(values)  # torch infers both: Python ints become int64, floats the default float32


class ExampleDataset(torch.utils.data.Dataset):
    """Rows of a HF dataset turned into model inputs by a modality's `load` and optional `augment`.

    Augmentation draws from a generator seeded by (seed, epoch, index), so what an example looks like
    does not depend on worker count, batch order or where a resumed run restarted.
    """

    def __init__(
        self,
        ds: datasets.Dataset,
        column: str,
        load: Callable[[Any], Any],
        augment: Callable[[Any], Any] | None = None,
        seed: int = 0,
    ) -> None:
        # Only the two columns an example needs: a row read decodes every column it holds.
        ds = ds.select_columns(list(dict.fromkeys([column, LABELS]))) if set(ds.column_names) - {column, LABELS} else ds
        self.ds, self.column, self.load, self.augment, self.seed, self.epoch = ds, column, load, augment, seed, 0
        self.cached: Any = None  # a feature_cache.CachedSplit while the run trains on cached features

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.ds)

    def __getitems__(self, indices: list[int]) -> list[dict[str, Any]]:
        """A batch's examples (the DataLoader asks for them together): cached features come as one
        batched record, read with one gather instead of one read per example."""
        if self.cached is not None:
            return [{FEATURES: self.cached.batch(indices)}]
        rows = self.ds[list(indices)]  # one read for the batch: per-row reads cost 5x more for short texts
        return [self._example(i, x, label) for i, x, label in zip(indices, rows[self.column], rows[LABELS])]

    def __getitem__(self, i: int) -> dict[str, Any]:
        row = self.ds[i]
        return self._example(i, row[self.column], row[LABELS])

    def _example(self, i: int, value: Any, label: Any) -> dict[str, Any]:
        x = self.load(value)
        if self.augment is not None:
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed((self.seed * 1_000_003 + self.epoch) * 10_000_019 + i)
                x = self.augment(x)
        return {"input": x, LABELS: label}


def loader_workers(cfg: Any, accelerator: Any) -> int:
    """data.num_workers, or when null: none on a CPU (workers would take its cores from the model),
    else up to 8 per process, leaving a core per process for the training loop.

    Example:
        >>> loader_workers(cfg, accelerator)   # 0 here, no GPU  # doctest: +SKIP
        0
    """
    if cfg.data.num_workers is not None:
        return cfg.data.num_workers
    if accelerator.device.type == "cpu":
        return 0
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(0, min(8, cores // accelerator.num_processes - 1))


@dataclass
class TrainData:
    """What `fit` trains and evaluates on: the splits as torch datasets, the collator, the task's evaluator."""

    train: ExampleDataset
    validation: ExampleDataset
    collate: Callable[[list[dict]], dict]
    test: ExampleDataset | None = None
    evaluator: Evaluator = field(default_factory=Evaluator)
    train_lengths: list[int] | None = None  # per example, for data.group_by_length
    processor: Any = None  # part of the feature cache's key
    loss: Callable[[Any, Any], Any] | None = None  # (logits, labels) -> loss; None: the model's own
    sample_weights: list[float] | None = None  # data.sampler=balanced: per training example
    target: ExampleDataset | None = None  # data.target (augmented as train is), for domain adaptation
    target_test: ExampleDataset | None = None  # data.target_test, evaluated once at the end
