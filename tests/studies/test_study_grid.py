"""`hftl compare --storage --study-name`: one grid that several processes share through Optuna (SQLite on one
machine, a real PostgreSQL server as several machines would), with no cell run twice, every process's runs in its
own output_dir, and the whole report written from the storage by the last to finish or by `--report-only`."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from tests.conftest import REPO, run_cli, run_together


def grid_args(model: Path, data: Path, folder: Path, out: Path, storage: str) -> list[str]:
    raw = {
        "task": "image-classification",
        "model": {"name_or_path": str(model)},
        "data": {"train": str(data), "validation_split": 0.25, "augment": False},
        "train": {"epochs": 1, "batch_size": 16, "learning_rate": 3e-3, "head_learning_rate": 3e-3, "report_to": "none"},
    }
    path = folder / "grid.yaml"
    path.write_text(yaml.safe_dump(raw))
    args = ["compare", str(path), f"output_dir={out}", "--strategies", "head_only,full", "--seeds", "2"]
    return [*args, "--storage", storage, "--study-name", folder.name]  # unique: the PostgreSQL database is shared


def share_one_grid(model: Path, data: Path, tmp_path: Path, storage: str) -> None:
    outs = [tmp_path / "machine-a", tmp_path / "machine-b"]  # as on two machines: each its own disk
    run_together(*(grid_args(model, data, tmp_path, out, storage) for out in outs))
    cells = {"head_only/seed-42", "head_only/seed-43", "full/seed-42", "full/seed-43"}
    ran = [{str(p.parent.relative_to(out).as_posix()) for p in out.rglob("metrics.json")} for out in outs]
    assert ran[0] | ran[1] == cells and not ran[0] & ran[1]  # every cell once, in the process that took it

    import optuna

    study = optuna.load_study(study_name=tmp_path.name, storage=storage)
    finished = [t for t in study.trials if "metrics" in t.user_attrs]
    assert sorted(t.params["cell"] for t in finished) == [0, 1, 2, 3]  # no cell twice
    reports = [out / "report.md" for out in outs if (out / "report.md").exists()]
    assert reports  # the last to finish wrote it, with every cell's numbers
    rows = json.loads((reports[0].parent / "study.json").read_text())["rows"]
    assert {r["arm"]: r["runs"] for r in rows} == {"head_only": 2, "full": 2}
    assert json.loads((reports[0].parent / "study.json").read_text())["comparisons"]

    third = tmp_path / "laptop"  # any process can write the report from the storage alone
    proc = run_cli(*grid_args(model, data, tmp_path, third, storage), "--report-only", in_process=True)
    assert "=== trial" not in proc.stdout and not list(third.rglob("metrics.json"))
    again = json.loads((third / "study.json").read_text())
    assert [r["validation_f1"] for r in again["rows"]] == [r["validation_f1"] for r in rows]


@pytest.mark.slow  # two processes, each importing torch and training two runs
def test_two_processes_share_one_grid_on_sqlite(tiny_vit, digits, tmp_path):
    share_one_grid(tiny_vit, digits, tmp_path, f"sqlite:///{tmp_path / 'grid.db'}")


@pytest.mark.slow  # as several machines share a grid: through a server (tests/postgres.py starts a real one)
def test_two_processes_share_one_grid_on_postgresql(tiny_vit, digits, tmp_path, postgres_url):
    share_one_grid(tiny_vit, digits, tmp_path, postgres_url)


def test_another_grid_under_the_same_name_is_refused(tiny_vit, digits, tmp_path):
    storage = f"sqlite:///{tmp_path / 'grid.db'}"
    args = grid_args(tiny_vit, digits, tmp_path, tmp_path / "a", storage)
    run_cli(*args, "--report-only", in_process=True)  # creates the study and its grid, trains nothing
    other = [a if a != "head_only,full" else "full" for a in grid_args(tiny_vit, digits, tmp_path, tmp_path / "b", storage)]
    proc = run_cli(*other, check=False)
    assert proc.returncode != 0 and "runs another grid (4 cells, this command's has 2)" in proc.stderr


@pytest.mark.slow  # a killed process, the heartbeat's grace period
def test_a_dead_process_cell_is_retried_and_resumed(tiny_vit, digits, tmp_path):
    storage, out = f"sqlite:///{tmp_path / 'grid.db'}", tmp_path / "shared-disk"
    args = [a if a != "head_only,full" else "full" for a in grid_args(tiny_vit, digits, tmp_path, out, storage)]
    args = [*args, "train.epochs=2"]
    env = {**os.environ, "HFTL_SEARCH_HEARTBEAT": "1", "HFTL_FAULT_KILL_AFTER_EPOCH": "1", "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "hftl.cli", *args]
    killed = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=REPO, timeout=600)
    assert killed.returncode != 0 and (out / "full" / "seed-42" / "checkpoints").is_dir()  # died after epoch 1
    time.sleep(3.5)  # past the heartbeat's grace period (3 x 1 s): the dead cell is stale
    del env["HFTL_FAULT_KILL_AFTER_EPOCH"]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=REPO, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "(a retry)" in proc.stdout and "resuming from" in proc.stdout  # the same folder, from its checkpoint
    rows = json.loads((out / "study.json").read_text())["rows"]
    assert rows[0]["runs"] == 2  # both seeds finished, one after a resume
