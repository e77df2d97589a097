"""`hftl search`: Optuna trials as ordinary run folders, pruning on each epoch, best.yaml that `hftl train` runs to
the same score, a search that resumes (a dead trial retried into its own folder), two processes sharing one
SQLite or PostgreSQL storage, and spaces checked before the first trial."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from PIL import Image

import hftl
from hftl.config import load_config
from hftl.studies.search_space import check_space, default_space
from tests.conftest import REPO, run_cli, run_together

COMMON = ["train.epochs=3", "data.augment=false", "train.report_to=none", "train.batch_size=16"]


def search_args(model: Path, data: Path, out: Path, trials: int, *extra: str) -> list[str]:
    args = ["search", str(REPO / "configs/vision/vit-head-only.yaml"), "--trials", str(trials)]
    return [*args, f"model.name_or_path={model}", f"data.train={data}", f"output_dir={out}", *COMMON, *extra]


def trials_of(out: Path) -> list[dict]:
    return json.loads((out / "search.json").read_text())["trials"]


def test_search_trials_are_runs_pruned_per_epoch_and_best_yaml_reproduces_the_best(tiny_vit, digits, tmp_path):
    out = tmp_path / "search"
    proc = run_cli(*search_args(tiny_vit, digits, out, 5), in_process=True)
    assert "best: trial" in proc.stdout and "report:" in proc.stdout
    trials = trials_of(out)
    assert [t["number"] for t in trials] == [0, 1, 2, 3, 4]
    assert {t["state"] for t in trials} <= {"COMPLETE", "PRUNED"} and any(t["state"] == "COMPLETE" for t in trials)
    assert set(trials[0]["params"]) == set(default_space("head_only"))
    for t in trials:
        run_dir = Path(t["run_dir"])
        assert run_dir == out / f"trial-{t['number']:04d}" and (run_dir / "config.yaml").is_file()
        if t["state"] == "COMPLETE":  # an ordinary finished run: its own metrics are the trial's value
            metrics = json.loads((run_dir / "metrics.json").read_text())
            assert metrics["validation"]["f1"] == t["value"] and t["epochs_reported"] == 3
            saved = yaml.safe_load((run_dir / "config.yaml").read_text())
            assert saved["train"]["head_learning_rate"] == t["params"]["train.head_learning_rate"]
        else:
            assert t["epochs_reported"] < 3 and not (run_dir / "metrics.json").exists()
    # head_only trials after the first read the features the first one cached.
    later = [t for t in trials[1:] if t["state"] == "COMPLETE"]
    assert all(json.loads((Path(t["run_dir"]) / "metrics.json").read_text())["feature_cache"]["reused"] for t in later)

    saved = json.loads((out / "search.json").read_text())
    best = max((t for t in trials if t["state"] == "COMPLETE"), key=lambda t: t["value"])
    assert saved["best_value"] == best["value"] and saved["best_params"] == best["params"]
    best_cfg = load_config(out / "best.yaml")
    assert best_cfg.train.head_learning_rate == best["params"]["train.head_learning_rate"]
    again = run_cli("train", str(out / "best.yaml"), f"output_dir={tmp_path / 'again'}", in_process=True)
    assert "finished" in again.stdout
    assert json.loads((tmp_path / "again" / "metrics.json").read_text())["validation"]["f1"] == best["value"]

    report = (out / "report.md").read_text()
    assert report.startswith("# Hyperparameter search") and "| trial | state | validation f1 |" in report
    for png in ("search_history.png", *(["search_importances.png"] if "Importance" in report else [])):
        with Image.open(out / "plots" / png) as image:
            image.verify()
        assert f"plots/{png}" in report


@pytest.mark.slow  # a killed process, the heartbeat's grace period, 30 s
def test_a_search_started_again_continues_and_retries_a_dead_trial_in_its_folder(tiny_vit, digits, tmp_path):
    out = tmp_path / "search"
    env = {**os.environ, "HFTL_SEARCH_HEARTBEAT": "1", "HFTL_FAULT_KILL_AFTER_EPOCH": "1", "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "hftl.cli", *search_args(tiny_vit, digits, out, 2)]
    killed = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=REPO, timeout=600)
    assert killed.returncode != 0 and (out / "trial-0000" / "checkpoints").is_dir()  # died in trial 0, after epoch 1
    time.sleep(3.5)  # past the heartbeat's grace period (3 x 1 s): the dead trial is stale
    del env["HFTL_FAULT_KILL_AFTER_EPOCH"]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=REPO, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "(a retry, resumed)" in proc.stdout and "resuming from" in proc.stdout
    trials = trials_of(out)
    assert trials[0]["state"] == "FAIL" and trials[0]["run_dir"] == str(out / "trial-0000")
    retry = next(t for t in trials[1:] if t["run_dir"] == str(out / "trial-0000"))
    assert retry["params"] == trials[0]["params"] and retry["state"] in ("COMPLETE", "PRUNED")
    first_done = {t["number"]: t["value"] for t in trials if t["state"] == "COMPLETE"}
    # Grown to 4 trials: the finished ones are kept as they were, two more run.
    grown = run_cli(*search_args(tiny_vit, digits, out, 4), in_process=True)
    assert "best: trial" in grown.stdout
    after = trials_of(out)
    assert sum(t["state"] in ("COMPLETE", "PRUNED", "FAIL") for t in after) >= 4
    assert {t["number"]: t["value"] for t in after if t["number"] in first_done} == first_done


def share_one_storage(model: Path, data: Path, tmp_path: Path, storage: str) -> None:
    """Two `hftl search` processes on one storage and study: 6 trials in all, numbered once by the shared study,
    each process's trials in its own output_dir."""
    outs = [tmp_path / "a", tmp_path / "b"]
    name = tmp_path.name  # the session's one PostgreSQL database holds other tests' studies too
    stdouts = run_together(*(search_args(model, data, out, 6, "--storage", storage, "--study-name", name) for out in outs))
    assert all("=== trial" in stdout for stdout in stdouts)  # both processes ran trials
    import optuna

    study = optuna.load_study(study_name=name, storage=storage)
    numbers = [t.number for t in study.trials]
    assert len(numbers) == len(set(numbers)) and 6 <= len(numbers) <= 7  # one more may start as the sixth ends
    folders = {Path(t.user_attrs["run_dir"]).parent for t in study.trials}
    assert folders == set(outs)  # each process's trials in its own output_dir, numbered by the shared study


@pytest.mark.slow
def test_two_processes_share_one_sqlite_storage(tiny_vit, digits, tmp_path):
    share_one_storage(tiny_vit, digits, tmp_path, f"sqlite:///{tmp_path / 'shared.db'}")


@pytest.mark.slow  # as several machines share a search: through a server (tests/postgres.py starts a real one)
def test_two_processes_share_one_postgresql_storage(tiny_vit, digits, tmp_path, postgres_url):
    share_one_storage(tiny_vit, digits, tmp_path, postgres_url)


def test_spaces_are_checked_before_any_trial(tiny_vit, digits, tmp_path):
    space = tmp_path / "space.yaml"
    space.write_text(yaml.safe_dump({
        "learning_rate": {"type": "float", "low": 1e-5, "high": 1e-3, "log": True},
        "strategy.lora.r": {"type": "categorical", "choices": [4, 8]},
        "trainable_blocks": {"type": "int", "low": 1, "high": 2},
    }))  # fmt: skip
    from hftl.studies.search_space import load_space

    keys = ["train.learning_rate", "strategy.lora.r", "strategy.trainable_blocks"]
    assert list(load_space(space, "image-classification")) == keys  # any spelling hftl train takes, made canonical
    for bad, message in (
        ({"train.learning_rate": {"type": "uniform"}}, "needs a type, one of float, int, categorical"),
        ({"train.learning_rate": {"type": "float", "low": 1e-3, "high": 1e-5}}, "needs low < high"),
        ({"train.learning_rate": {"type": "float", "low": 0.0, "high": 1.0, "log": True}}, "low > 0 (log scale)"),
        ({"strategy.lora.r": {"type": "categorical"}}, "needs choices"),
    ):
        with pytest.raises(hftl.ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
            check_space(bad, "image-classification")
    space.write_text(yaml.safe_dump({"train.lerning_rate": {"type": "float", "low": 1e-5, "high": 1e-3}}))
    out = tmp_path / "s"
    proc = run_cli(*search_args(tiny_vit, digits, out, 2, "--space", str(space)), in_process=True, check=False)
    assert proc.returncode == 2 and "train.lerning_rate" in proc.stderr and not list(out.glob("trial-*"))
    # An error every trial would meet (no data) stops the search at the first trial, not after all of them.
    missing = run_cli(*search_args(tiny_vit, tmp_path / "no-data", tmp_path / "m", 3), in_process=True, check=False)
    assert missing.returncode == 2 and "no such file or directory" in missing.stderr
    assert [p.name for p in (tmp_path / "m").glob("trial-*")] in ([], ["trial-0000"])
