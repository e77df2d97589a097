"""Target-domain data for domain adaptation: `data.target` (inputs only, labels never read) and
`data.target_test` (labelled, encoded into the source's label space).

Example:
    >>> target = load_target(cfg.data, modality, "image", report)          # doctest: +SKIP
    >>> target.column_names
    ['image', 'labels']
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import datasets

from hftl.config import DataConfig
from hftl.data.dataset_repos import RepoOptions
from hftl.data.sources import LABELS, ROW, DataReport, _pick, load_source, prepare_split
from hftl.utils.errors import DataError

NO_LABEL = -1  # the label id every target example carries: a placeholder the loss never sees


def load_target(
    cfg: DataConfig, modality: Any, input_column: str, report: DataReport, train: datasets.Dataset | None = None
) -> datasets.Dataset:
    """`data.target`'s inputs, checked as training inputs are, every other column dropped (so labels that happen
    to be there are never read), with a placeholder label id so batches look like the source's. Refused when
    its inputs are `train`'s own."""
    spec = cfg.target
    _refuse_source(cfg, spec)
    loaded = load_source(spec, modality, "data.target", report, RepoOptions(cfg.dataset_config, cfg.revision))
    ds = _pick(loaded, "train", spec)
    column = input_column if input_column in ds.column_names else _detect(modality, ds, spec)
    pair = [cfg.text_pair_column] if cfg.text_pair_column and cfg.text_pair_column in ds.column_names else []
    ds = ds.select_columns([column, *pair])
    if len(ds) == 0:
        raise DataError(f"data.target={spec} holds no examples; give it unlabelled inputs of the target domain")
    # A check that wants a label (speech: an empty transcript) sees a placeholder: the target's own are never read.
    placeholder = cfg.label_column if isinstance(cfg.label_column, str) else modality.label_candidates[0]
    ds = ds.add_column(ROW, list(range(1, len(ds) + 1))).add_column(placeholder, ["x"] * len(ds))
    ds = modality.prepare_inputs(ds, column, spec)
    checked = modality.check_inputs(ds, column, "target", cfg.on_bad_file, report)
    if len(checked) == 0:
        raise DataError(f"data.target={spec} has no usable examples (all were unreadable); add readable inputs to it")
    checked = checked.remove_columns([ROW, placeholder])
    if column != input_column:
        checked = checked.rename_column(column, input_column)
    if train is not None:
        check_not_source(checked, train, input_column, spec)
    return checked.add_column(LABELS, [NO_LABEL] * len(checked))


def load_target_test(
    cfg: DataConfig, modality: Any, columns: tuple[str, Any], labels: Any, report: DataReport
) -> datasets.Dataset:
    """`data.target_test`, labelled in the source's label space `labels` (a target label the source lacks is an error)."""
    spec = cfg.target_test
    loaded = load_source(spec, modality, "data.target_test", report, RepoOptions(cfg.dataset_config, cfg.revision))
    if isinstance(loaded, dict):  # a dataset with splits: its test split, else its first
        loaded = loaded.get("test") or next(iter(loaded.values()))
    ds = loaded
    input_column, label_column = columns
    column = input_column if input_column in ds.column_names else _detect(modality, ds, spec)
    if column != input_column:
        ds = ds.rename_column(column, input_column)
    ds = prepare_split(ds, "target_test", spec, (input_column, label_column), modality, cfg.on_bad_file, report)
    return modality.encode_labels(ds, label_column, labels, "target_test", spec).remove_columns(ROW)


def check_not_source(target: datasets.Dataset, train: datasets.Dataset, column: str, spec: str) -> None:
    """Refuse a target whose inputs are the source's own (the same texts or files): adaptation would adapt to nothing."""
    if len(target) != len(train):
        return
    if sorted(map(str, target[column][:])) == sorted(map(str, train[column][:])):
        raise DataError(
            f"data.target={spec} holds the same inputs as the training data: it must be the other domain's data "
            "(the photos, recordings or texts the model will meet), not the source's"
        )


def _refuse_source(cfg: DataConfig, spec: str) -> None:
    keys = (("data.train", cfg.train), ("data.validation", cfg.validation))
    same = [key for key, value in keys if value and _same(value, spec)]
    if same:
        raise DataError(
            f"data.target={spec} is {same[0]} itself: data.target must be the other domain's inputs "
            "(the data the model will meet), not the labelled source"
        )


def _same(a: str, b: str) -> bool:
    pa, pb = Path(a).expanduser(), Path(b).expanduser()
    if pa.exists() and pb.exists():
        return pa.resolve() == pb.resolve()
    return a == b


def _detect(modality: Any, ds: datasets.Dataset, spec: str) -> str:
    try:
        return modality.detect_input_column(ds, spec)
    except DataError as e:
        raise DataError(
            f"data.target / data.target_test must hold the same kind of inputs as data.train "
            f"({getattr(modality, 'kind', 'text')}): {e}"
        ) from None
