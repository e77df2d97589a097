"""`train.learning_rate: auto`: a range test of everything the run trains, before the first epoch, sets every
parameter group that follows train.learning_rate (layer decay's ratios kept, a head with its own rate left at it).
It leaves no other trace (the run equals one given that rate by hand, bit for bit), a resumed run keeps it, and
the curve is in plots/."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file

from tests.conftest import MINILM, REPO, VADER, require, run_cli

COMMON = ["train.epochs=2", "train.batch_size=16", "train.report_to=none", "data.augment=false"]


def train(model: Path, data: Path, run_dir: Path, *extra: str, env: dict | None = None, check: bool = True):
    args = ["train", str(REPO / "configs/vision/vit-full.yaml"), f"model.name_or_path={model}", f"data.train={data}"]
    args += [f"output_dir={run_dir}", *COMMON, *extra]
    return run_cli(*args, env=env, check=check, in_process=env is None)


def same_weights(a: Path, b: Path) -> bool:
    x, y = (load_file(str(p / "model" / "model.safetensors")) for p in (a, b))
    return x.keys() == y.keys() and all(torch.equal(x[k], y[k]) for k in x)


def found_rate(run_dir: Path, stdout: str) -> float:
    line = next(x for x in stdout.splitlines() if x.startswith("learning rate: auto -> "))
    rate = json.loads((run_dir / "metrics.json").read_text())["learning_rates_found"]["learning_rate"]
    assert f"auto -> {rate:.1e}" in line
    return rate


def test_auto_learning_rate_sets_every_group_and_leaves_no_other_trace(digits_vit, digits, tmp_path):
    """full with layer decay: every block at its share of the found rate, the head following it."""
    decay = ["train.layer_lr_decay=0.7", "train.head_learning_rate=auto"]
    proc = train(digits_vit, digits, tmp_path / "auto", "train.learning_rate=auto", *decay)
    rate = found_rate(tmp_path / "auto", proc.stdout)
    assert 1e-6 <= rate <= 0.5 and rate != 5e-5  # a rate of its own, not the nominal one the groups were built at
    metrics = json.loads((tmp_path / "auto" / "metrics.json").read_text())
    assert metrics["learning_rates_found"]["head"] == rate  # head: auto, with the backbone training: follows it
    assert (tmp_path / "auto" / "plots" / "lr_range_test.png").is_file()
    assert f"| learning_rate | auto: {rate:g} |" in (tmp_path / "auto" / "README.md").read_text()
    saved = yaml.safe_load((tmp_path / "auto" / "config.yaml").read_text())
    assert saved["train"]["learning_rate"] == "auto"  # the run folder's config runs the same way again
    train(digits_vit, digits, tmp_path / "by-hand", f"train.learning_rate={rate!r}", *decay)
    assert same_weights(tmp_path / "auto", tmp_path / "by-hand")


def test_a_head_with_its_own_rate_keeps_it(digits_vit, digits, tmp_path):
    """freeze (its frozen prefix cached) with the head at a number: only the blocks' rate is searched."""
    extra = ["strategy=freeze", "strategy.trainable_blocks=1", "train.head_learning_rate=0.02"]
    proc = train(digits_vit, digits, tmp_path / "auto", "train.learning_rate=auto", *extra)
    rate = found_rate(tmp_path / "auto", proc.stdout)
    assert "head" not in json.loads((tmp_path / "auto" / "metrics.json").read_text())["learning_rates_found"]
    train(digits_vit, digits, tmp_path / "by-hand", f"train.learning_rate={rate!r}", *extra)
    assert same_weights(tmp_path / "auto", tmp_path / "by-hand")


def test_head_only_needs_no_learning_rate(tiny_vit, digits, tmp_path):
    proc = train(tiny_vit, digits, tmp_path / "run", "strategy=head_only", "train.learning_rate=auto", "train.epochs=1")
    assert "learning rate: auto: only the head trains, at its own rate" in proc.stdout
    assert "learning_rate" not in json.loads((tmp_path / "run" / "metrics.json").read_text())["learning_rates_found"]


def test_a_bad_value_names_the_key(tiny_vit, digits, tmp_path):
    proc = train(tiny_vit, digits, tmp_path / "run", "train.learning_rate=fast", check=False, env={})
    assert proc.returncode != 0 and "train.learning_rate must be auto or a number > 0, got 'fast'" in proc.stderr


@pytest.mark.slow  # two processes
def test_a_resumed_run_keeps_the_learning_rate_it_found(digits_vit, digits, tmp_path):
    args = ["train.learning_rate=auto", "strategy.head_warmup_epochs=1", "train.epochs=3"]  # hybrid
    killed = train(digits_vit, digits, tmp_path / "run", *args, env={"HFTL_FAULT_KILL_AFTER_EPOCH": "2"}, check=False)
    assert killed.returncode != 0 and "learning rate: auto -> " in killed.stdout
    assert "a range test of phase full" in killed.stdout  # hybrid: the phase that trains the backbone
    resumed = train(digits_vit, digits, tmp_path / "run", *args, "resume=true", env={})
    assert "learning rate: auto" not in resumed.stdout  # restored with the checkpoint, not searched again
    train(digits_vit, digits, tmp_path / "whole", *args)
    assert same_weights(tmp_path / "run", tmp_path / "whole")


@pytest.mark.slow  # two MiniLM full fine-tunings, about 2.5 minutes
def test_auto_matches_the_hand_tuned_rates_on_real_weights(tmp_path):
    """all-MiniLM-L6-v2 full fine-tuning on VADER words: `auto` for both rates, with no tuning, does as well as the
    shipped config's hand-picked 5e-5 (blocks) and 1e-3 (head)."""
    require(*MINILM)
    require(*VADER)
    config = REPO / "configs/text/minilm-vader-full.yaml"
    common = ["train.epochs=2", "data.max_train_samples=2000", "report_to=none"]
    results = {}
    for name, extra in (("shipped", []), ("auto", ["train.learning_rate=auto", "train.head_learning_rate=auto"])):
        run_cli("train", str(config), *common, *extra, f"output_dir={tmp_path / name}")
        results[name] = json.loads((tmp_path / name / "metrics.json").read_text())["validation"]["accuracy"]
    assert results["shipped"] > 0.85  # the task is learnt in this budget (1000 samples, 1 epoch: not yet)
    assert results["auto"] >= results["shipped"] - 0.03, results
