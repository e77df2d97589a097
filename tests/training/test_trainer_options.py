"""Trainer options: mixed precision, gradient accumulation, early stopping, TensorBoard logs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from tests.conftest import run_cli


def write_config(tmp_path: Path, model: Path, data: Path, **train) -> Path:
    cfg = {
        "model": {"name_or_path": str(model)},
        "data": {"train": str(data), "augment": False, "validation_split": 0.2},
        "strategy": {"name": "full"},
        "train": {"epochs": 2, "batch_size": 8, "learning_rate": 1e-3, **train},
    }
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def metrics(run_dir: Path) -> dict:
    return json.loads((run_dir / "metrics.json").read_text())


def test_gradient_accumulation_takes_one_optimizer_step_per_n_batches(tiny_vit, digits, tmp_path):
    cfg = write_config(tmp_path, tiny_vit, digits, report_to="none")
    run_cli("train", str(cfg), f"output_dir={tmp_path / 'a1'}", in_process=True)
    run_cli("train", str(cfg), f"output_dir={tmp_path / 'a3'}", "train.gradient_accumulation_steps=3", in_process=True)
    # 72 train images / batch 8 = 9 batches per epoch: 9 steps, or 3 with accumulation over 3
    assert metrics(tmp_path / "a1")["global_step"] == 18
    assert metrics(tmp_path / "a3")["global_step"] == 6


def test_early_stopping_stops_when_the_metric_stops_improving(tiny_vit, digits, tmp_path):
    cfg = write_config(tmp_path, tiny_vit, digits, report_to="none", epochs=6, learning_rate=1e-12, early_stopping_patience=1)
    run_cli("train", str(cfg), f"output_dir={tmp_path / 'run'}", in_process=True)
    m = metrics(tmp_path / "run")
    assert m["stopped_early"] is True
    assert len(m["history"]) == 2 and m["best_epoch"] == 1


def test_tensorboard_logs_and_max_steps(tiny_vit, digits, tmp_path):
    cfg = write_config(tmp_path, tiny_vit, digits, max_steps=5, logging_steps=1)
    run_cli("train", str(cfg), f"output_dir={tmp_path / 'run'}", in_process=True)
    events = list((tmp_path / "run" / "logs").rglob("events.out.tfevents.*"))
    assert events and any(e.stat().st_size > 0 for e in events)
    m = metrics(tmp_path / "run")
    assert m["global_step"] == 5 and [e["step"] for e in m["log_history"]] == [1, 2, 3, 4, 5]


@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_mixed_precision_trains(precision, tiny_resnet, digits, tmp_path):
    cfg = write_config(tmp_path, tiny_resnet, digits, report_to="none", epochs=1, mixed_precision=precision)
    run_cli("train", str(cfg), f"output_dir={tmp_path / 'run'}")  # own process: Accelerate's precision is per process
    m = metrics(tmp_path / "run")
    assert m["validation"]["loss"] == m["validation"]["loss"]  # not NaN
    assert yaml.safe_load((tmp_path / "run" / "config.yaml").read_text())["train"]["mixed_precision"] == precision
