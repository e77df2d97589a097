"""`hftl predict RUN --data SOURCE --output FILE`: one row per input in order, unreadable inputs listed as
rows with their error, the same rows from two processes as from one, csv / jsonl / parquet."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import datasets
import pytest
import yaml

from tests.conftest import run_cli
from tests.system.test_distributed import torchrun
from tests.text_data import sentiment_rows, write_csv


@pytest.fixture(scope="module")
def text_run(tiny_bert, tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("text-run")
    data = write_csv(root / "train.csv", sentiment_rows(48))
    config = {
        "task": "text-classification",
        "model": {"name_or_path": str(tiny_bert)},
        "data": {"train": str(data), "validation_split": 0.25},
        "train": {"epochs": 1, "batch_size": 16, "report_to": "none"},
    }
    (root / "c.yaml").write_text(yaml.safe_dump(config))
    run_cli("train", str(root / "c.yaml"), f"output_dir={root / 'run'}", in_process=True)
    return root / "run"


@pytest.fixture
def texts(tmp_path) -> Path:
    rows = [{"text": r["text"]} for r in sentiment_rows(23, seed=5)]
    rows[7]["text"] = ""  # unreadable: an empty text
    return write_csv(tmp_path / "texts.csv", rows)


def read_rows(path: Path) -> list[dict]:
    if path.suffix == ".csv":
        with path.open() as f:
            return list(csv.DictReader(f))
    if path.suffix == ".jsonl":
        return [json.loads(line) for line in path.read_text().splitlines()]
    return datasets.Dataset.from_parquet(str(path)).to_list()


@pytest.mark.parametrize("suffix", [".csv", ".jsonl", ".parquet"])
def test_every_input_gets_one_row_in_order_with_the_single_input_prediction(text_run, texts, tmp_path, suffix):
    out = tmp_path / f"preds{suffix}"
    run_cli("predict", str(text_run), "--data", str(texts), "--output", str(out), "--batch-size", "5", in_process=True)
    rows = read_rows(out)
    inputs = [r["text"] for r in csv.DictReader(texts.open())]
    assert [int(r["row"]) for r in rows] == list(range(1, 24)) and [r["input"] or "" for r in rows] == inputs
    bad = rows[7]
    assert bad["error"] == "no input in this row" and not bad["prediction"]  # listed, not dropped
    assert not any(r["error"] for i, r in enumerate(rows) if i != 7)
    single = json.loads(run_cli("predict", str(text_run), inputs[0], inputs[1], "--json", in_process=True).stdout)
    for row, one in zip(rows[:2], single):
        assert row["prediction"] == one["predictions"][0]["label"]
        assert float(row["score"]) == pytest.approx(one["predictions"][0]["score"], abs=1e-6)
        details = row["details"] if isinstance(row["details"], list) else json.loads(row["details"])
        assert {d["label"] for d in details} == {"neg", "pos"}  # every label's score


def test_two_processes_write_the_same_rows_once(text_run, texts, tmp_path):
    one, two = tmp_path / "one.jsonl", tmp_path / "two.jsonl"
    run_cli("predict", str(text_run), "--data", str(texts), "--output", str(one), "--batch-size", "4", in_process=True)
    torchrun("predict", str(text_run), "--data", str(texts), "--output", str(two), "--batch-size", "4")
    a, b = read_rows(one), read_rows(two)
    assert [r["row"] for r in b] == list(range(1, 24))  # no duplicate, none missing, in order
    for x, y in zip(a, b):
        assert x["prediction"] == y["prediction"] and x["error"] == y["error"]
        assert (x["score"] is None) == (y["score"] is None)
        assert x["score"] is None or x["score"] == pytest.approx(y["score"], abs=1e-5)
    assert not list(tmp_path.glob(".two.jsonl.part*"))  # the part files are gone


def test_bad_requests_are_refused(text_run, texts, tmp_path):
    wrong = run_cli(
        "predict", str(text_run), "--data", str(texts), "--output", str(tmp_path / "p.xlsx"), in_process=True, check=False
    )
    assert wrong.returncode != 0 and "write .csv, .jsonl or .parquet" in wrong.stderr
    both = run_cli("predict", str(text_run), "hello", "--data", str(texts), in_process=True, check=False)
    assert both.returncode != 0 and "not both" in both.stderr
    missing = run_cli("predict", str(text_run), "--data", str(tmp_path / "nope.csv"), in_process=True, check=False)
    assert missing.returncode != 0 and "no such file" in missing.stderr


def test_an_imagefolder_with_a_corrupt_image_and_a_regression_run(tiny_resnet, digits, tmp_path):
    """Images are read as training reads them (class folders); a corrupt file is a row with its error.
    Regression rows carry the value in the data's units and --top-k is refused."""
    import shutil

    folder = tmp_path / "images"
    for label in ("0", "1"):
        (folder / label).mkdir(parents=True)
        for image in sorted((digits / label).iterdir())[:3]:
            shutil.copy(image, folder / label / image.name)
    (folder / "1" / "broken.png").write_bytes(b"not a png")
    rows = [{"image": str(p), "value": float(p.parent.name)} for p in sorted(digits.glob("*/*.png"))]
    table = tmp_path / "values.jsonl"
    table.write_text("".join(json.dumps(r) + "\n" for r in rows))
    config = {
        "task": "image-classification",
        "model": {"name_or_path": str(tiny_resnet)},
        "data": {"train": str(table), "problem": "regression", "label_column": "value", "augment": False},
        "train": {"epochs": 1, "batch_size": 16, "report_to": "none"},
    }
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(config))
    run = tmp_path / "run"
    run_cli("train", str(tmp_path / "c.yaml"), f"output_dir={run}", in_process=True)
    out = tmp_path / "values.csv"
    run_cli("predict", str(run), "--data", str(folder), "--output", str(out), in_process=True)
    got = read_rows(out)
    assert len(got) == 7 and [Path(r["input"]).name for r in got if r["error"]] == ["broken.png"]
    assert all(-5 < float(r["prediction"]) < 10 for r in got if not r["error"])  # digit values, not z-scores
    refused = run_cli("predict", str(run), "--data", str(folder), "--top-k", "2", in_process=True, check=False)
    assert refused.returncode != 0 and "--top-k ranks classes" in refused.stderr


def test_token_classification_rows_hold_the_entities_of_each_sentence(tiny_bert, tmp_path):
    from tests.text_data import tagging_rows, write_jsonl

    train = write_jsonl(tmp_path / "ner.jsonl", tagging_rows(60))
    config = {
        "task": "token-classification",
        "model": {"name_or_path": str(tiny_bert)},
        "data": {"train": str(train)},
        "train": {"epochs": 1, "batch_size": 16, "report_to": "none"},
    }
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(config))
    run = tmp_path / "run"
    run_cli("train", str(tmp_path / "c.yaml"), f"output_dir={run}", in_process=True)
    sentences = write_jsonl(tmp_path / "sentences.jsonl", [{"tokens": r["tokens"]} for r in tagging_rows(5, seed=3)])
    out = tmp_path / "entities.jsonl"
    run_cli("predict", str(run), "--data", str(sentences), "--output", str(out), in_process=True)
    rows = read_rows(out)
    assert [r["input"] for r in rows] == [" ".join(r["tokens"]) for r in tagging_rows(5, seed=3)]
    assert all(r["error"] is None and isinstance(r["details"], list) for r in rows)  # the entities, maybe none yet
