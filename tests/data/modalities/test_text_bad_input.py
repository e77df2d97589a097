"""Bad text input: each mistake gets a clear error naming the row / column and the fix, or a counted skip."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from hftl.config import load_config
from hftl.data.modalities import get_modality
from hftl.data.sources import load_splits
from hftl.models.loading import load_model
from hftl.utils.errors import DataError, HftlError
from tests.conftest import REPO, run_cli, save_tiny_bert
from tests.data.test_bad_input import cli_error
from tests.text_data import sentiment_rows, tagging_rows, write_csv, write_jsonl


def text_splits(train: Path, task: str = "text-classification", **data):
    cfg = load_config({"task": task, "model": {"name_or_path": "m"}, "data": {"train": str(train), **data}})
    return load_splits(cfg.data, get_modality(task, cfg), seed=0)


def refused(train: Path, *words: str, task: str = "text-classification", **data) -> str:
    with pytest.raises(DataError) as e:
        text_splits(train, task, **data)
    for word in words:
        assert word in str(e.value), str(e.value)
    return str(e.value)


def test_empty_and_whitespace_texts_are_counted_skips_naming_the_row(tmp_path):
    rows = sentiment_rows(20)
    rows[3]["text"], rows[7]["text"] = "", "   \t "
    s = text_splits(write_csv(tmp_path / "d.csv", rows))
    assert len(s.train) + len(s.validation) == 18
    skipped = s.report.skipped["train"]
    assert [item for item, _ in skipped] == ["row 4", "row 8"]  # data rows, counted from 1 (the header is not a row)
    assert "empty" in skipped[0][1]


def test_empty_text_with_on_bad_file_error(tmp_path):
    rows = sentiment_rows(20)
    rows[3]["text"] = "  "
    refused(write_csv(tmp_path / "d.csv", rows), "row 4", "'text'", "whitespace-only", "on_bad_file=skip", on_bad_file="error")


def test_missing_text_column(tmp_path):
    rows = [{"body": r["text"], "label": r["label"]} for r in sentiment_rows(10)]
    refused(write_csv(tmp_path / "d.csv", rows), "no text column", "'body'", "data.text_column=")


def test_configured_text_column_that_does_not_exist(tmp_path):
    refused(write_csv(tmp_path / "d.csv", sentiment_rows(10)), "'review'", "its columns are", text_column="review")


def test_missing_pair_column(tmp_path):
    refused(write_csv(tmp_path / "d.csv", sentiment_rows(10)), "'second'", "text_pair_column", text_pair_column="second")


def test_non_string_cells(tmp_path):
    # A column of numbers reads fine with datasets and is refused by hftl (mixed cell types never get
    # this far: datasets refuses them while reading the file).
    numbers = write_jsonl(tmp_path / "n.jsonl", [{"text": i, "label": i % 2} for i in range(10)])
    refused(numbers, "row 1", "'text'", "holds int", "not text")


def test_tags_and_tokens_of_different_lengths(tmp_path):
    rows = tagging_rows(10)
    rows[4]["ner_tags"] = rows[4]["ner_tags"][:-1]
    data = write_jsonl(tmp_path / "ner.jsonl", rows)
    refused(data, "row 5", "words but", "tags", "exactly one tag", task="token-classification")


def test_tokens_that_are_not_word_lists(tmp_path):
    rows = [{"tokens": 5, "ner_tags": ["O"]}] + tagging_rows(5)
    path = tmp_path / "ner.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    message = str(pytest.raises(DataError, text_splits, path, "token-classification").value)
    assert "row 1" in message or "could not read" in message  # datasets may refuse the mixed column itself


def test_tag_in_validation_that_train_never_had(tmp_path):
    train = write_jsonl(tmp_path / "train.jsonl", tagging_rows(10))
    val_rows = tagging_rows(3, seed=5)
    val_rows[1]["ner_tags"][0] = "B-ORG"
    validation = write_jsonl(tmp_path / "val.jsonl", val_rows)
    refused(train, "row 2", "'B-ORG'", "train tags", task="token-classification", validation=str(validation))


def test_sentence_without_words_is_a_counted_skip(tmp_path):
    rows = tagging_rows(12)
    rows[0] = {"tokens": [], "ner_tags": []}
    s = text_splits(write_jsonl(tmp_path / "ner.jsonl", rows), "token-classification")
    assert s.report.skipped["train"] == [("row 1", "column 'tokens': no words")]
    assert s.label_names[0] == "O"


def test_single_label_train_set(tmp_path):
    rows = [{"text": r["text"], "label": "pos"} for r in sentiment_rows(10)]
    refused(write_csv(tmp_path / "d.csv", rows), "every training example has the label 'pos'", "at least two labels")


def test_checkpoint_without_a_tokenizer(tmp_path):
    model_dir = save_tiny_bert(tmp_path / "bert", tokenizer=False)
    cfg = load_config({"task": "text-classification", "model": {"name_or_path": str(model_dir)}, "data": {"train": "x"}})
    with pytest.raises(HftlError) as e:
        load_model(cfg, get_modality(cfg.task, cfg), ["neg", "pos"])
    assert "has no tokenizer" in str(e.value) and "AutoTokenizer.from_pretrained(<base>).save_pretrained(<dir>)" in str(e.value)


def test_cli_reports_text_errors_without_traceback(tmp_path, tiny_bert):
    rows = tagging_rows(10)
    rows[2]["tokens"].append("extra")
    words = len(rows[2]["tokens"])
    data = write_jsonl(tmp_path / "ner.jsonl", rows)
    args = ["task=token-classification", f"model={tiny_bert}", f"data.train={data}", f"output_dir={tmp_path / 'run'}"]
    proc = run_cli("train", str(REPO / "configs/text/bert-ner-full.yaml"), *args, check=False)
    cli_error(proc, "row 3", f"{words} words but {words - 1} tags")
    assert not (tmp_path / "run").exists()  # nothing claimed for a run that never started
    proc = run_cli("predict", str(tmp_path), "", check=False)
    cli_error(proc, "not a finished hftl run")
