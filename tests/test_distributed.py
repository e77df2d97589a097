"""Two CPU processes (torchrun, gloo) run the unchanged config end to end: one run folder written by the
main process, evaluation gathered without duplicated samples, metrics equal to one process."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import yaml

from .conftest import REPO, run_cli
from .text_data import sentiment_rows, write_csv


def torchrun(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "-m", "hftl.cli", *args]
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO, env=env, timeout=600)
    assert proc.returncode == 0, f"{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}"
    return proc


def test_two_processes_match_one(tiny_bert, tmp_path):
    data = write_csv(tmp_path / "d.csv", sentiment_rows(64))
    odd = write_csv(tmp_path / "odd.csv", sentiment_rows(15, seed=7))  # 15 rows: one process gets a padded batch
    config = {
        "task": "text-classification",
        "model": {"name_or_path": str(tiny_bert)},
        "data": {"train": str(data), "validation_split": 0.25},
        "train": {"epochs": 2, "batch_size": 8, "report_to": "none", "logging_steps": 1},
    }
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(config))

    two = tmp_path / "two"
    proc = torchrun("train", str(tmp_path / "c.yaml"), f"output_dir={two}")
    assert proc.stdout.count('"output_dir"') == 1  # the summary comes from the main process only
    metrics = json.loads((two / "metrics.json").read_text())
    assert metrics["global_step"] == 6  # 48 examples / (8 per process x 2 processes) x 2 epochs
    assert sum(map(sum, metrics["confusion_matrix"])) == 16  # every validation example once, none twice
    steps = sorted(p.name for p in (two / "checkpoints").iterdir() if p.name.startswith("step-"))
    assert steps == ["step-0000003", "step-0000006"]

    one = tmp_path / "one"
    run_cli("train", str(tmp_path / "c.yaml"), f"output_dir={one}", "train.batch_size=16", in_process=True)
    single = json.loads((one / "metrics.json").read_text())
    assert single["global_step"] == metrics["global_step"]  # the same global batch of 16
    assert abs(single["validation"]["loss"] - metrics["validation"]["loss"]) < 0.01  # dropout draws differ per rank

    # Evaluating one model: exactly the single-process numbers, the padded duplicate dropped.
    evaluated = torchrun("evaluate", str(two), "--data", str(odd), "--batch-size", "4")
    assert evaluated.stdout.count('"examples"') == 1
    distributed = json.loads(evaluated.stdout[evaluated.stdout.index("{") :])
    local = json.loads(run_cli("evaluate", str(two), "--data", str(odd), "--batch-size", "4", in_process=True).stdout)
    assert distributed["examples"] == local["examples"] == 15
    for key in ("accuracy", "f1", "loss"):
        assert abs(distributed[key] - local[key]) < 1e-6, (key, distributed, local)
    assert Path(two / "model" / "model.safetensors").is_file()
