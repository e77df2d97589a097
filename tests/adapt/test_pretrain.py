"""adapt.method=pretrain: masked language modelling on the target's texts lowers the masked-LM loss on held-out
target text, the fine-tuning run starts from the pretrained weights, the pretraining is cached and shared, and
model/ loads in `pipeline`."""

from __future__ import annotations

import json

import pytest

from hftl import finetune
from hftl.utils.errors import ConfigError
from tests.conftest import TEXT_WORDS, save_tiny_bert, seeded
from tests.text_data import sentiment_rows, write_csv


def target_rows(n: int) -> list[dict]:
    """The target domain: the same sentiment words in another register (place and person names around them)."""
    rows = sentiment_rows(n, seed=7)
    names = [w for w in TEXT_WORDS if w in ("alice", "bob", "carol", "dave", "paris", "rome", "berlin")]
    return [{"text": f"{names[i % len(names)]} {r['text']} {names[(i + 3) % len(names)]}", "label": r["label"]}
            for i, r in enumerate(rows)]  # fmt: skip


def test_pretrain_lowers_the_masked_lm_loss_on_target_text_and_the_run_loads_in_pipeline(tmp_path, monkeypatch):
    from transformers import pipeline

    monkeypatch.setenv("HFTL_PRETRAINED", str(tmp_path / "pretrained"))
    bert = seeded(save_tiny_bert, tmp_path / "bert")
    source = write_csv(tmp_path / "source.csv", sentiment_rows(80))
    target = write_csv(tmp_path / "target.csv", target_rows(120))
    target_test = write_csv(tmp_path / "target_test.csv", target_rows(40)[::-1])
    cfg = {
        "task": "text-classification",
        "model": {"name_or_path": str(bert)},
        "data": {"train": str(source), "target": str(target), "target_test": str(target_test)},
        "strategy": {"name": "full"},
        "adapt": {"method": "pretrain", "pretrain_epochs": 8, "pretrain_learning_rate": 1e-3},
        "train": {"epochs": 2, "batch_size": 16, "learning_rate": 1e-3, "head_learning_rate": 1e-2, "report_to": "none"},
        "output_dir": str(tmp_path / "run"),
    }
    finetune(cfg)
    record = json.loads((tmp_path / "run" / "metrics.json").read_text())["adapt"]["pretrain"]
    assert record["held_out_loss_after"] < record["held_out_loss_before"] - 0.3
    assert record["epoch_losses"][-1] < record["epoch_losses"][0]
    assert record["texts"] == 120 and record["held_out_texts"] == 12
    cached = list((tmp_path / "pretrained").iterdir())
    assert len(cached) == 1 and (cached[0] / "pretrain.json").is_file()
    # The config keeps the checkpoint the user named; the run started from the pretrained one.
    assert f"name_or_path: {bert}" in (tmp_path / "run" / "config.yaml").read_text()
    assert record["pretrained_checkpoint"] == str(cached[0])
    classify = pipeline("text-classification", model=str(tmp_path / "run" / "model"))
    assert classify("alice the film was good rome")[0]["label"] in {"pos", "neg"}

    # Another strategy on the same target shares the pretraining.
    finetune({**cfg, "strategy": {"name": "head_only"}, "output_dir": str(tmp_path / "head")})
    assert len(list((tmp_path / "pretrained").iterdir())) == 1


def test_pretrain_is_refused_for_a_model_without_a_masked_lm_form(tmp_path, monkeypatch):
    from transformers import GPT2Config, GPT2ForSequenceClassification

    monkeypatch.setenv("HFTL_PRETRAINED", str(tmp_path / "pretrained"))
    folder = tmp_path / "gpt2"
    GPT2ForSequenceClassification(GPT2Config(n_layer=1, n_embd=16, n_head=2, vocab_size=100)).save_pretrained(folder)
    source = write_csv(tmp_path / "source.csv", sentiment_rows(20))
    target = write_csv(tmp_path / "target.csv", target_rows(20))
    cfg = {"task": "text-classification", "model": {"name_or_path": str(folder)},
           "data": {"train": str(source), "target": str(target)}, "adapt": {"method": "pretrain"},
           "output_dir": str(tmp_path / "run")}  # fmt: skip
    with pytest.raises(ConfigError, match="has no masked-LM form"):
        finetune(cfg)
    assert not (tmp_path / "run").exists() and not (tmp_path / "pretrained").exists()
