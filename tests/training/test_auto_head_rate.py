"""`train.head_learning_rate: auto` (the default): a learning-rate range test of the head on the frozen features
before the first epoch picks the head's rate; it leaves no other trace (the run equals one given that rate by
hand, bit for bit), a resumed run keeps it, and the curve is in plots/."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from hftl.training.lr_range_test import choose, range_test
from tests.conftest import MINILM, REPO, VADER, require, run_cli

COMMON = ["train.epochs=2", "train.batch_size=16", "train.report_to=none", "data.augment=false", "train.learning_rate=1e-3"]


def train(model: Path, data: Path, run_dir: Path, *extra: str, env: dict | None = None, check: bool = True):
    args = ["train", str(REPO / "configs/vision/vit-head-only.yaml"), f"model.name_or_path={model}", f"data.train={data}"]
    args += [f"output_dir={run_dir}", *COMMON, *extra]
    return run_cli(*args, env=env, check=check, in_process=env is None)


def test_auto_head_rate_is_chosen_plotted_and_leaves_no_other_trace(digits_vit, digits, tmp_path):
    proc = train(digits_vit, digits, tmp_path / "auto")
    line = next(x for x in proc.stdout.splitlines() if x.startswith("head learning rate: auto -> "))
    metrics = json.loads((tmp_path / "auto" / "metrics.json").read_text())
    rate = metrics["learning_rates_found"]["head"]
    assert f"auto -> {rate:.1e}" in line and 1e-5 <= rate <= 0.5 and rate != 1e-3  # not the backbone's rate
    assert (tmp_path / "auto" / "plots" / "lr_range_test_head.png").is_file()
    assert f"head_learning_rate | auto: {rate:g} |" in (tmp_path / "auto" / "README.md").read_text()
    # The same run with that rate given by hand: the same weights, bit for bit (the test restored the head,
    # its own optimizer stayed apart, the random state came back).
    train(digits_vit, digits, tmp_path / "by-hand", f"train.head_learning_rate={rate!r}")
    auto = load_file(str(tmp_path / "auto" / "model" / "model.safetensors"))
    by_hand = load_file(str(tmp_path / "by-hand" / "model" / "model.safetensors"))
    assert auto.keys() == by_hand.keys() and all(torch.equal(auto[k], by_hand[k]) for k in auto)


@pytest.mark.slow  # two processes, 25 s
def test_a_resumed_run_keeps_the_rate_it_found(digits_vit, digits, tmp_path):
    killed = train(digits_vit, digits, tmp_path / "run", env={"HFTL_FAULT_KILL_AFTER_EPOCH": "1"}, check=False)
    assert killed.returncode != 0 and "head learning rate: auto -> " in killed.stdout
    resumed = train(digits_vit, digits, tmp_path / "run", "resume=true", env={})
    assert "head learning rate: auto" not in resumed.stdout  # restored with the checkpoint, not searched again
    train(digits_vit, digits, tmp_path / "whole")
    whole = json.loads((tmp_path / "whole" / "metrics.json").read_text())
    again = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert again["learning_rates_found"] == whole["learning_rates_found"]
    assert again["history"][-1]["eval_loss"] == whole["history"][-1]["eval_loss"]


def test_auto_falls_back_to_the_learning_rate_where_it_should(tiny_vit, digits, tmp_path):
    """scratch, a moving backbone (full), a flat curve (a random tiny ViT's features explain nothing), a number."""
    proc = train(tiny_vit, digits, tmp_path / "scratch", "strategy=scratch")
    assert "head learning rate: auto -> train.learning_rate 0.001 (scratch)" in proc.stdout
    proc = train(tiny_vit, digits, tmp_path / "full", "strategy=full")
    assert "head learning rate: auto -> train.learning_rate 0.001 (the backbone trains too" in proc.stdout
    proc = train(tiny_vit, digits, tmp_path / "flat")
    assert "head learning rate: auto -> train.learning_rate 0.001 (the loss never fell clearly: " in proc.stdout
    assert (tmp_path / "flat" / "plots" / "lr_range_test_head.png").is_file()
    proc = train(tiny_vit, digits, tmp_path / "set", "train.head_learning_rate=0.02")
    assert "head learning rate" not in proc.stdout
    assert json.loads((tmp_path / "set" / "metrics.json").read_text())["learning_rates_found"] == {}


def test_range_test_restores_the_parameters_and_random_state():
    torch.manual_seed(0)
    head = torch.nn.Linear(4, 2)
    x, y = torch.randn(64, 4), torch.randint(0, 2, (64,))
    before = [p.detach().clone() for p in head.parameters()]
    state = torch.get_rng_state()
    batches = [(x[i : i + 16], y[i : i + 16]) for i in range(0, 64, 16)]

    def loss_of(batch):
        return torch.nn.functional.cross_entropy(torch.nn.functional.dropout(head(batch[0]), 0.1), batch[1])

    found = range_test(loss_of, [{"params": head.parameters()}], lambda: iter(batches), steps=40)
    assert all(torch.equal(a, b) for a, b in zip(before, head.parameters()))
    assert torch.equal(state, torch.get_rng_state())
    assert len(found.rates) == len(found.losses) > 5 and found.rates == sorted(found.rates)
    assert choose([1e-3, 1e-2], [1.0, 1.0]) is None  # a flat curve names no rate


@pytest.mark.slow
def test_auto_head_rate_rescues_head_only_at_the_backbones_rate(tmp_path):
    """The issue's case on real weights: head_only with learning_rate=1e-3 and the head at that rate too (null)
    learns slowly; the default auto finds a head rate that learns in the same budget."""
    require(*MINILM)
    require(*VADER)
    config = REPO / "configs/text/minilm-vader-head-only.yaml"
    common = ["train.learning_rate=1e-3", "train.epochs=2", "data.max_train_samples=2000", "report_to=none"]
    results = {}
    for name, head in (("null", "null"), ("auto", "auto")):
        run_cli("train", str(config), *common, f"train.head_learning_rate={head}", f"output_dir={tmp_path / name}")
        results[name] = json.loads((tmp_path / name / "metrics.json").read_text())["validation"]["accuracy"]
    assert results["auto"] > results["null"] + 0.05, results
