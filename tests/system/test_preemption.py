"""SIGTERM / SIGINT (a scheduler's preemption, Ctrl-C): the optimizer step finishes, a checkpoint is written,
the run exits saying how to continue, and `resume=true` ends bitwise on the uninterrupted run's weights,
on one process and on two."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file

from hftl.utils.faults import SIGTERM_AFTER_STEP
from tests.conftest import REPO, run_cli
from tests.system.test_distributed import torchrun
from tests.text_data import sentiment_rows, write_csv


def vit_args(tmp_path: Path, model: Path, data: Path, name: str, *extra: str) -> list[str]:
    args = ["train", str(REPO / "configs/vision/vit-full.yaml"), f"model.name_or_path={model}", f"data.train={data}"]
    return [*args, f"output_dir={tmp_path / name}", "train.batch_size=16", "train.report_to=none", *extra]


def same_weights(a: Path, b: Path) -> bool:
    x, y = (load_file(str(p / "model" / "model.safetensors")) for p in (a, b))
    return x.keys() == y.keys() and all(torch.equal(x[k], y[k]) for k in x)


def test_sigterm_checkpoints_the_step_and_resume_ends_on_the_uninterrupted_weights(tiny_vit, digits, tmp_path):
    # Augmentation and dropout draw from the RNG, so the resume must replay the exact streams.
    args = ["train.epochs=2", "data.augment=true"]
    run_cli(*vit_args(tmp_path, tiny_vit, digits, "clean", *args), in_process=True)
    stopped = run_cli(*vit_args(tmp_path, tiny_vit, digits, "run", *args), env={SIGTERM_AFTER_STEP: "4"}, check=False)
    assert stopped.returncode == 128 + signal.SIGTERM, stopped.stderr[-2000:]
    assert "SIGTERM received: finishing this optimizer step, then checkpointing" in stopped.stdout
    assert "stopped by SIGTERM after optimizer step 4" in stopped.stderr and "resume=true" in stopped.stderr
    run = tmp_path / "run"
    assert (run / "checkpoints" / "step-0000004").is_dir() and not (run / "model").exists()
    state = json.loads((run / "checkpoints" / "step-0000004" / "trainer_state.json").read_text())
    assert state["batch_in_epoch"] == 4 and state["epoch"] == 0  # mid-epoch: 6 steps an epoch
    run_cli(*vit_args(tmp_path, tiny_vit, digits, "run", *args, "resume=true"), in_process=True)
    assert same_weights(tmp_path / "clean", run)


@pytest.mark.slow
def test_sigterm_on_two_processes_checkpoints_one_step_together(tiny_bert, tmp_path):
    data = write_csv(tmp_path / "d.csv", sentiment_rows(64))
    config = {
        "task": "text-classification",
        "model": {"name_or_path": str(tiny_bert)},
        "data": {"train": str(data), "validation_split": 0.25},
        "train": {"epochs": 2, "batch_size": 4, "report_to": "none"},
    }
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(config))
    torchrun("train", str(tmp_path / "c.yaml"), f"output_dir={tmp_path / 'clean'}")
    # Each process is told after its own step 2 (as SLURM signals every task); they agree to stop there.
    train = ("train", str(tmp_path / "c.yaml"), f"output_dir={tmp_path / 'run'}")
    stopped = torchrun(*train, env={SIGTERM_AFTER_STEP: "2"}, check=False)
    assert stopped.returncode != 0 and "stopped by SIGTERM after optimizer step 2" in stopped.stderr
    state = json.loads((tmp_path / "run" / "checkpoints" / "step-0000002" / "trainer_state.json").read_text())
    assert state["num_processes"] == 2 and state["batch_in_epoch"] == 2
    torchrun(*train, "resume=true")
    assert same_weights(tmp_path / "clean", tmp_path / "run")


@pytest.mark.slow
def test_ctrl_c_from_outside_mid_training(tiny_vit, digits, tmp_path):
    """A real SIGINT from another process at an unknown moment: whatever step it lands on, the resumed run
    ends on the uninterrupted run's weights."""
    args = ["train.epochs=40", "data.augment=true", "train.feature_cache=off"]
    run_cli(*vit_args(tmp_path, tiny_vit, digits, "clean", *args), in_process=True)
    cmd = [sys.executable, "-m", "hftl.cli", *vit_args(tmp_path, tiny_vit, digits, "run", *args)]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO, env=env)
    for line in proc.stdout:
        if line.lstrip().startswith("epoch 3/"):
            proc.send_signal(signal.SIGINT)
            break
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 128 + signal.SIGINT, err[-2000:]
    assert "stopped by SIGINT after optimizer step" in err and not (tmp_path / "run" / "model").exists()
    run_cli(*vit_args(tmp_path, tiny_vit, digits, "run", *args, "resume=true"), in_process=True)
    assert same_weights(tmp_path / "clean", tmp_path / "run")
