"""A diverging run never exports: train.on_nonfinite stops at the first non-finite loss or gradient norm
(keeping the last finite checkpoint, from which it resumes) or skips that step's update and counts it."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import load_file

from hftl.utils.faults import NAN_LOSS_AT_STEP
from tests.conftest import REPO, run_cli


def train(tmp_path: Path, model: Path, data: Path, name: str, *overrides: str, check=True):
    args = ["train", str(REPO / "configs/vision/vit-full.yaml"), f"model.name_or_path={model}", f"data.train={data}"]
    args += [f"output_dir={tmp_path / name}", "train.epochs=2", "train.batch_size=16", "train.report_to=none"]
    return run_cli(*args, "data.augment=false", "train.warmup_ratio=0", *overrides, check=check, in_process=True)


def test_a_learning_rate_that_diverges_stops_and_exports_nothing(tiny_vit, digits, tmp_path):
    out = train(tmp_path, tiny_vit, digits, "run", "train.learning_rate=1e6", check=False)
    assert out.returncode == 2, out.stdout[-2000:]
    assert "training diverged at optimizer step" in out.stderr and "a lower train.learning_rate (now 1e+06)" in out.stderr
    run = tmp_path / "run"
    assert not (run / "model").exists() and not (run / "metrics.json").exists() and not (run / "README.md").exists()
    # Skipping cannot save it either: every epoch's validation is non-finite, so nothing is exported.
    out = train(tmp_path, tiny_vit, digits, "skip", "train.learning_rate=1e6", "train.on_nonfinite=skip", check=False)
    assert out.returncode == 2 and "no epoch to export had a finite validation f1 and loss" in out.stderr
    assert not (tmp_path / "skip" / "model").exists()


def test_a_nan_step_stops_keeps_the_last_checkpoint_and_resumes_to_the_uninterrupted_weights(
    tiny_vit, digits, tmp_path, monkeypatch
):
    train(tmp_path, tiny_vit, digits, "clean")
    monkeypatch.setenv(NAN_LOSS_AT_STEP, "8")  # 6 steps an epoch: in the second
    out = train(tmp_path, tiny_vit, digits, "nan", check=False)
    monkeypatch.delenv(NAN_LOSS_AT_STEP)
    assert out.returncode == 2 and "optimizer step 8: the loss is nan, the gradient norm is nan" in out.stderr
    checkpoints = sorted(p.name for p in (tmp_path / "nan" / "checkpoints").iterdir() if p.name.startswith("step-"))
    assert checkpoints == ["step-0000006"], checkpoints  # the last finite state: epoch 1's
    train(tmp_path, tiny_vit, digits, "nan", "resume=true")
    clean, resumed = (load_file(str(tmp_path / n / "model" / "model.safetensors")) for n in ("clean", "nan"))
    assert all(torch.equal(clean[k], resumed[k]) for k in clean)


def test_skip_drops_the_step_and_counts_it(tiny_vit, digits, tmp_path, monkeypatch):
    monkeypatch.setenv(NAN_LOSS_AT_STEP, "3")
    train(tmp_path, tiny_vit, digits, "skip", "train.on_nonfinite=skip")
    metrics = json.loads((tmp_path / "skip" / "metrics.json").read_text())
    assert metrics["nonfinite_steps_skipped"] == 1 and metrics["global_step"] == 12
    assert all(torch.isfinite(t).all() for t in load_file(str(tmp_path / "skip" / "model" / "model.safetensors")).values())
