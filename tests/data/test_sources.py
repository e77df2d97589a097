"""Data loading: imagefolders, tables of image paths, label vocabularies, stratified splits.

Real image files written with PIL in tmp_path, loaded through hftl.data.sources and the image modality.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import datasets
import pytest
from PIL import Image

from hftl.config import DataConfig
from hftl.data.modalities import get_modality
from hftl.data.sampling import stratified_split
from hftl.data.sources import LABELS, ROW, DataReport, load_source, load_splits
from hftl.utils.errors import DataError

IMAGE = get_modality("image-classification")


def png(path: Path, shade: int = 0) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (8, 8), (shade % 256, 40, 90)).save(path)
    return path


def imagefolder(root: Path, counts: dict[str, int]) -> Path:
    for label, n in counts.items():
        for i in range(n):
            png(root / label / f"{i}.png", shade=i * 17)
    return root


def table_rows(folder: Path, labels: list) -> list[dict]:
    """One image per label in `folder/img/`, rows with paths relative to `folder`."""
    paths = [png(folder / "img" / f"{i}.png", i * 9).relative_to(folder).as_posix() for i in range(len(labels))]
    return [{"image": path, "label": y} for path, y in zip(paths, labels)]


def splits(**data) -> object:
    return load_splits(DataConfig(**data), IMAGE, seed=0)


def label_of(s, split: str = "train") -> list[str]:
    ds = getattr(s, split)
    return [s.label_names[i] for i in ds[LABELS]]


# --- imagefolder -----------------------------------------------------------------------------------


def test_imagefolder_class_folders_become_labels(tmp_path):
    root = imagefolder(tmp_path / "pets", {"cat": 5, "dog": 4})
    s = splits(train=str(root))
    assert s.label_names == ["cat", "dog"]
    assert len(s.train) + len(s.validation) == 9
    assert s.input_column == "image"
    for path, label in zip(s.train["image"], label_of(s)):
        assert Path(path).parent.name == label and Path(path).is_file()


def test_imagefolder_split_subfolders_are_splits(tmp_path):
    root = tmp_path / "pets"
    imagefolder(root / "train", {"cat": 3, "dog": 3})
    imagefolder(root / "validation", {"cat": 1, "dog": 2})
    imagefolder(root / "test", {"cat": 2, "dog": 1})
    s = splits(train=str(root))
    assert (len(s.train), len(s.validation), len(s.test)) == (6, 3, 3)
    assert all("/validation/" in p for p in s.validation["image"])
    assert sorted(label_of(s, "test")) == ["cat", "cat", "dog"]
    assert s.sources["train"] == str(root)


def test_imagefolder_skips_strays_and_ignores_hidden(tmp_path):
    root = imagefolder(tmp_path / "pets", {"cat": 3, "dog": 3})
    (root / "cat" / "notes.txt").write_text("not an image")
    (root / "stray.png").write_bytes((root / "cat" / "0.png").read_bytes())  # not inside a class folder
    (root / ".DS_Store").write_bytes(b"\0")
    png(root / "dog" / ".hidden.png")
    png(root / ".cache" / "x.png")  # a hidden folder is not a class
    s = splits(train=str(root))
    assert s.label_names == ["cat", "dog"]
    assert len(s.train) + len(s.validation) == 6
    skipped = dict(s.report.skipped["train"])
    assert set(skipped) == {str(root / "cat" / "notes.txt"), str(root / "stray.png")}
    assert "not an image file (.txt)" in skipped[str(root / "cat" / "notes.txt")]
    assert "class folder" in skipped[str(root / "stray.png")]
    assert s.report.total() == 2 and "skipped 2 item(s) in train" in s.report.summary()


def test_flat_validation_folder_skips_are_filed_under_validation(tmp_path):
    train = imagefolder(tmp_path / "train", {"a": 2, "b": 2})
    val = imagefolder(tmp_path / "val", {"a": 1, "b": 1})
    (val / "a" / "readme.md").write_text("hi")
    s = splits(train=str(train), validation=str(val))
    assert [item for item, _ in s.report.skipped["validation"]] == [str(val / "a" / "readme.md")]
    assert "train" not in s.report.skipped


# --- tables of image paths -------------------------------------------------------------------------


def write_table(path: Path, rows: list[dict]) -> Path:
    if path.suffix == ".csv":
        datasets.Dataset.from_list(rows).to_csv(str(path), index=False)
    elif path.suffix == ".jsonl":
        path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    else:
        datasets.Dataset.from_list(rows).to_parquet(str(path))
    return path


@pytest.mark.parametrize("suffix", [".csv", ".jsonl", ".parquet"])
@pytest.mark.parametrize("labels", [["cat", "dog"] * 4, [3, 7] * 4], ids=["str-labels", "int-labels"])
def test_table_with_relative_paths(tmp_path, suffix, labels):
    folder = tmp_path / "set"
    path = write_table(folder / f"data{suffix}", table_rows(folder, labels))
    s = splits(train=str(path), validation=str(path))
    assert s.label_names == sorted({str(y) for y in labels})
    assert s.input_column == "image"
    assert all(Path(p).is_absolute() and Path(p).is_file() for p in s.train["image"])  # relative to the data file's folder
    assert label_of(s) == [str(y) for y in labels]  # row order kept, labels encoded back and forth
    assert ROW not in s.train.column_names and ROW not in s.validation.column_names  # bookkeeping does not leak


def test_image_column_detected_by_name(tmp_path):
    folder = tmp_path / "set"
    rows = [{"id": i, "filepath": r["image"], "label": r["label"]} for i, r in enumerate(table_rows(folder, ["a", "b"] * 3))]
    s = splits(train=str(write_table(folder / "d.csv", rows)))
    assert s.input_column == "filepath"


def test_input_and_label_column_overrides(tmp_path):
    folder = tmp_path / "set"
    rows = [{"picture": r["image"], "species": r["label"], "label": "decoy"} for r in table_rows(folder, ["a", "b"] * 3)]
    s = splits(train=str(write_table(folder / "d.csv", rows)), input_column="picture", label_column="species")
    assert s.input_column == "picture"
    assert s.label_names == ["a", "b"]


def test_undetectable_image_column_says_what_to_set(tmp_path):
    folder = tmp_path / "set"
    rows = [{"picture": r["image"], "label": r["label"]} for r in table_rows(folder, ["a", "b"] * 3)]
    path = write_table(folder / "d.csv", rows)
    with pytest.raises(DataError, match=r"no image column.*'picture'.*data.input_column"):
        splits(train=str(path))


# --- stratified validation split -------------------------------------------------------------------


def test_stratified_split_keeps_every_class():
    labels = [0] * 50 + [1] * 30 + [2] * 5 + [3] * 2
    train_idx, val_idx = stratified_split(labels, 0.2, seed=1)
    assert sorted(train_idx + val_idx) == list(range(len(labels)))
    val = Counter(labels[i] for i in val_idx)
    assert set(val) == {0, 1, 2, 3}
    assert val[0] == 10 and val[1] == 6 and val[2] == 1 and val[3] == 1
    assert all(Counter(labels[i] for i in train_idx)[c] >= 1 for c in range(4))  # train keeps every class too


def test_stratified_split_is_seeded():
    labels = [i % 3 for i in range(60)]
    assert stratified_split(labels, 0.25, seed=7) == stratified_split(labels, 0.25, seed=7)
    assert stratified_split(labels, 0.25, seed=7)[1] != stratified_split(labels, 0.25, seed=8)[1]


def test_split_off_validation_through_load_splits(tmp_path):
    root = imagefolder(tmp_path / "pets", {"cat": 10, "dog": 10, "eel": 10})
    s = load_splits(DataConfig(train=str(root), validation_split=0.2), IMAGE, seed=3)
    assert Counter(label_of(s, "validation")) == {"cat": 2, "dog": 2, "eel": 2}
    assert len(s.train) == 24 and "stratified" in s.sources["validation"]
    again = load_splits(DataConfig(train=str(root), validation_split=0.2), IMAGE, seed=3)
    assert again.validation["image"] == s.validation["image"]


def test_too_few_examples_to_split(tmp_path):
    root = imagefolder(tmp_path / "pets", {"cat": 1, "dog": 1})
    with pytest.raises(DataError, match=r"too few examples.*data.validation=PATH"):
        splits(train=str(root))


def test_max_train_samples(tmp_path):
    root = imagefolder(tmp_path / "pets", {"cat": 10, "dog": 10})
    assert len(splits(train=str(root), max_train_samples=5).train) == 5


# --- datasets with Image and ClassLabel features ---------------------------------------------------


def test_classlabel_dataset_via_parquet(tmp_path):
    names = ["ant", "bee", "wasp"]
    features = datasets.Features({"img": datasets.Image(), "kind": datasets.ClassLabel(names=names)})
    images = [Image.new("RGB", (8, 8), (i * 20, 0, 0)) for i in range(9)]
    ds = datasets.Dataset.from_dict({"img": images, "kind": [i % 3 for i in range(9)]}, features=features)
    path = tmp_path / "bugs.parquet"
    ds.to_parquet(str(path))

    loaded = load_source(str(path), IMAGE, "data.train", DataReport())
    assert isinstance(loaded.features["kind"], datasets.ClassLabel)  # the features survive the file

    s = splits(train=str(path), validation=str(path), label_column="kind")
    assert s.label_names == names
    assert s.input_column == "img"  # found by its Image feature, whatever its name
    assert s.train[LABELS] == [i % 3 for i in range(9)]
    assert IMAGE.loader(None)(s.train[0]["img"]).size == (8, 8)  # embedded bytes decode lazily
