"""Hub datasets with configs, revisions and split names, tested offline on a folder laid out like a Hub
dataset repo (a README whose metadata lists `configs:`), which `datasets.load_dataset` reads the same way."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import yaml

from hftl.config import load_config
from hftl.data.modalities import get_modality
from hftl.data.sources import load_splits
from hftl.utils.errors import DataError
from tests.conftest import run_cli
from tests.text_data import sentiment_rows

README = """---
configs:
- config_name: sst2
  data_files:
  - split: train
    path: sst2/train.csv
  - split: validation_matched
    path: sst2/validation.csv
- config_name: cola
  data_files:
  - split: train
    path: cola/train.csv
---
# A glue-like dataset: two configs, one with a validation split that is not called "validation".
"""


@pytest.fixture(scope="module")
def repo(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("glue-like")
    (root / "README.md").write_text(README)
    for config, split, n, seed in (("sst2", "train", 80, 0), ("sst2", "validation", 20, 1), ("cola", "train", 30, 2)):
        (root / config).mkdir(exist_ok=True)
        with (root / config / f"{split}.csv").open("w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(["sentence", "label"])
            writer.writerows([r["text"], r["label"]] for r in sentiment_rows(n, seed=seed))
    return root


def splits(repo: Path, **data):
    cfg = load_config({"task": "text-classification", "model": {"name_or_path": "m"}, "data": {"train": str(repo), **data}})
    return load_splits(cfg.data, get_modality(cfg.task, cfg), seed=0)


def test_a_config_and_its_named_splits(repo):
    s = splits(repo, dataset_config="sst2", validation_split_name="validation_matched")
    assert (len(s.train), len(s.validation)) == (80, 20)
    assert s.input_column == "sentence" and s.label_names == ["neg", "pos"]


def test_slices_pick_the_examples_in_order(repo):
    s = splits(repo, dataset_config="sst2", train_split="train[:75%]", validation_split_name="train[75%:]")
    assert (len(s.train), len(s.validation)) == (60, 20)
    combined = splits(repo, dataset_config="sst2", train_split="train[:50%]+validation_matched[:10]")
    assert len(combined.train) + len(combined.validation) == 50  # a validation share is held out of the 50


def test_a_missing_config_an_unknown_split_and_a_bad_slice_are_refused_naming_the_key(repo):
    with pytest.raises(DataError, match="name one with data.dataset_config=NAME"):
        splits(repo)
    with pytest.raises(DataError, match="train_split='dev': .* has no split 'dev'; its splits are train, validation_matched"):
        splits(repo, dataset_config="sst2", train_split="dev")
    with pytest.raises(DataError, match="data.validation_split_name='train\\[:0\\]' selects no examples"):
        splits(repo, dataset_config="sst2", validation_split_name="train[:0]")
    with pytest.raises(DataError, match="data.dataset_config"):
        splits(repo, dataset_config="mnli")


def test_evaluate_reads_a_config_and_a_split_of_a_dataset(repo, tiny_bert, tmp_path):
    config = {
        "task": "text-classification",
        "model": {"name_or_path": str(tiny_bert)},
        "data": {"train": str(repo), "dataset_config": "sst2", "validation_split_name": "validation_matched"},
        "train": {"epochs": 1, "batch_size": 16, "report_to": "none"},
    }
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(config))
    run = tmp_path / "run"
    run_cli("train", str(path), f"output_dir={run}", in_process=True)
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["data"]["train_examples"] == 80 and metrics["data"]["validation_examples"] == 20
    out = run_cli(
        "evaluate", str(run), "--data", str(repo), "--data-config", "sst2", "--split", "validation_matched[:10]", in_process=True
    )
    assert json.loads(out.stdout)["examples"] == 10
