"""Kill training with SIGKILL (mid-epoch, across a hybrid run's phase change, and in the middle of a
checkpoint write), resume, and end with exactly the weights of an uninterrupted run."""

from __future__ import annotations

import json
import signal
from pathlib import Path

import pytest
import torch
import yaml

from tests.conftest import run_cli


@pytest.fixture(scope="module")
def vit_with_dropout(tmp_path_factory) -> Path:
    """Dropout on, so a resumed run must restore the RNG to match."""
    from transformers import ViTConfig, ViTForImageClassification, ViTImageProcessor

    folder = tmp_path_factory.mktemp("vit-dropout")
    config = ViTConfig(
        image_size=32, patch_size=8, hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
        hidden_dropout_prob=0.2, attention_probs_dropout_prob=0.1,
    )  # fmt: skip
    ViTForImageClassification(config).save_pretrained(folder)
    ViTImageProcessor(size={"height": 32, "width": 32}).save_pretrained(folder)
    return folder


def config(tmp_path: Path, model: Path, data: Path) -> Path:
    cfg = {
        "model": {"name_or_path": str(model)},
        "data": {"train": str(data), "augment": True, "validation_split": 0.2},  # augmentation must replay too
        "strategy": {"name": "full", "head_warmup_epochs": 1},
        "train": {"epochs": 3, "batch_size": 8, "learning_rate": 2e-3, "save_steps": 2, "report_to": "none", "warmup_ratio": 0.2},
    }
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def weights(run_dir: Path) -> dict[str, torch.Tensor]:
    from transformers import AutoModelForImageClassification

    return AutoModelForImageClassification.from_pretrained(run_dir / "model").state_dict()


def test_sigkill_mid_epoch_and_mid_checkpoint_then_resume_matches_uninterrupted(vit_with_dropout, digits, tmp_path):
    cfg = config(tmp_path, vit_with_dropout, digits)
    reference, crashed = tmp_path / "reference", tmp_path / "crashed"
    run_cli("train", str(cfg), f"output_dir={reference}")

    # 72 training images / 8 = 9 steps per epoch; epoch 1 is the head warm-up, epochs 2-3 train everything.
    first = run_cli("train", str(cfg), f"output_dir={crashed}", env={"HFTL_FAULT_KILL_AFTER_STEP": "5"}, check=False)
    assert first.returncode == -signal.SIGKILL
    assert not (crashed / "metrics.json").exists()
    assert (crashed / "checkpoints" / "step-0000004").is_dir()  # the last complete one before the kill

    # Resume inside the warm-up phase and get killed again mid-epoch in the second phase.
    second = run_cli(
        "train", str(cfg), f"output_dir={crashed}", "resume=true", env={"HFTL_FAULT_KILL_AFTER_STEP": "13"}, check=False
    )
    assert second.returncode == -signal.SIGKILL
    assert "resuming from" in second.stdout and "phase head_warmup" in second.stdout

    # Die in the middle of writing the step-16 checkpoint (weights and optimizer state written, the rest
    # not, nothing renamed): the half-written one must not be used.
    third = run_cli(
        "train", str(cfg), f"output_dir={crashed}", "resume=true", env={"HFTL_FAULT_KILL_IN_CHECKPOINT": "16"}, check=False
    )
    assert third.returncode == -signal.SIGKILL
    partial = list((crashed / "checkpoints").glob(".tmp-*"))
    assert len(partial) == 1 and (partial[0] / "weights.safetensors").is_file() and (partial[0] / "optimizer.pt").is_file()
    assert not (partial[0] / "trainer_state.json").exists() and not (crashed / "checkpoints" / "step-0000016").exists()

    last = run_cli("train", str(cfg), f"output_dir={crashed}", "resume=true")
    assert "step-0000014" in last.stdout  # resumed from the previous complete checkpoint
    assert not partial[0].exists()  # the crash's leftover is cleared by the next checkpoint

    expected, got = weights(reference), weights(crashed)
    assert expected.keys() == got.keys()
    for key in expected:
        assert torch.equal(expected[key], got[key]), key  # bitwise on CPU
    ref_metrics = json.loads((reference / "metrics.json").read_text())
    got_metrics = json.loads((crashed / "metrics.json").read_text())
    untimed = [{k: v for k, v in h.items() if k != "epoch_seconds"} for h in ref_metrics["history"]]
    assert untimed == [{k: v for k, v in h.items() if k != "epoch_seconds"} for h in got_metrics["history"]]
    assert [h["phase"] for h in got_metrics["history"]] == ["head_warmup", "full", "full"]


def test_resume_is_refused_for_a_finished_run_and_restarts_when_nothing_to_resume(tiny_vit, digits, tmp_path):
    cfg = config(tmp_path, tiny_vit, digits)
    out = tmp_path / "run"
    fresh = run_cli(
        "train", str(cfg), f"output_dir={out}", "resume=true", "train.epochs=2", "train.save_steps=null", in_process=True
    )
    assert "starting from the beginning" in fresh.stdout
    again = run_cli("train", str(cfg), f"output_dir={out}", "resume=true", "train.epochs=2", "train.save_steps=null", check=False)
    assert again.returncode == 2 and "already holds a finished run" in again.stderr and "Traceback" not in again.stderr


def draws() -> tuple:
    import random

    import numpy as np

    return torch.rand(4).tolist(), random.random(), float(np.random.rand())


def test_each_rank_resumes_its_own_rng_stream_and_another_process_count_gets_rank_zeros(tmp_path):
    from hftl.training.checkpoint_files import gather_rng_states, load_checkpoint, save_checkpoint, set_rng_state
    from hftl.training.train_state import TrainState

    states, expected = [], []
    for rank in range(2):  # two ranks' streams, as gather_rng_states collects them in a 2-process run
        torch.manual_seed(rank)
        states.append(gather_rng_states()[0])  # one process: just this process's state
        expected.append(draws())
    assert expected[0] != expected[1]
    state = TrainState(global_step=5, num_processes=2).to_dict()
    path = save_checkpoint(tmp_path, 5, {"w": torch.zeros(1)}, {}, {}, state, states, keep=2)

    for rank in range(2):  # same count: every rank continues its own stream exactly
        loaded = load_checkpoint(path, rank, processes=2)
        assert loaded["rng_exact"] and TrainState(**loaded["state"]).num_processes == 2
        set_rng_state(loaded["rng"])
        assert draws() == expected[rank]
    for rank in range(3):  # another count: rank 0's stream everywhere, as a fresh run seeds every rank alike
        loaded = load_checkpoint(path, rank, processes=3)
        assert not loaded["rng_exact"]
        set_rng_state(loaded["rng"])
        assert draws() == expected[0]
