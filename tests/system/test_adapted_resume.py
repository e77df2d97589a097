"""An adapted run killed mid-epoch and resumed ends bitwise on the uninterrupted run's weights: DANN (its domain
classifier's weights and optimizer state are in the checkpoint) and self-training (a resumed round reads its
pseudo-labels back), with augmentation on for source and target."""

from __future__ import annotations

import signal

import pytest
import torch
import yaml
from safetensors.torch import load_file

from tests.adapt.domain_data import adapted_config, write_domain_pair
from tests.conftest import run_cli, save_tiny_resnet, seeded


@pytest.mark.slow
@pytest.mark.parametrize("method", ["dann", "self_training"])
def test_a_killed_and_resumed_adapted_run_ends_bitwise_on_the_uninterrupted_one(method, tmp_path):
    pair = write_domain_pair(tmp_path / "data")
    model = seeded(save_tiny_resnet, tmp_path / "resnet")
    cfg = adapted_config(model, pair, tmp_path / "unused", method, save_steps=2)
    cfg["data"]["augment"] = True
    cfg["adapt"]["threshold"] = 0.4  # three classes: some pseudo-labels clear it, so the target loss is in play
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(cfg))
    reference, crashed = tmp_path / "reference", tmp_path / "crashed"
    run_cli("train", str(path), f"output_dir={reference}")

    # 54 source images / 8 = 7 steps an epoch: step 10 is inside epoch 2 (self-training's first round).
    killed = run_cli("train", str(path), f"output_dir={crashed}", env={"HFTL_FAULT_KILL_AFTER_STEP": "10"}, check=False)
    assert killed.returncode == -signal.SIGKILL
    resumed = run_cli("train", str(path), f"output_dir={crashed}", "resume=true")
    assert "resuming from" in resumed.stdout

    expected = load_file(str(reference / "model" / "model.safetensors"))
    got = load_file(str(crashed / "model" / "model.safetensors"))
    assert expected.keys() == got.keys()
    for key in expected:
        assert torch.equal(expected[key], got[key]), key
    if method == "self_training":
        for name in ("round-1.csv", "round-2.csv"):
            assert (reference / "pseudo_labels" / name).read_text() == (crashed / "pseudo_labels" / name).read_text()
