"""One writer per run folder: a second process is refused while the first holds the folder's OS lock,
and the lock goes with its holder however it dies."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from hftl.run_folder.lock import LOCK_FILE, run_lock
from hftl.utils.errors import HftlError
from tests.conftest import REPO, run_cli

HOLD = "import sys, time; from pathlib import Path; from hftl.run_folder.lock import run_lock\n" + (
    "with run_lock(Path(sys.argv[1])):\n    print('held', flush=True); time.sleep(600)"
)


def hold(run_dir: Path) -> subprocess.Popen:
    """Another process holding the run folder's lock, as a training run does for its whole life."""
    proc = subprocess.Popen([sys.executable, "-c", HOLD, str(run_dir)], stdout=subprocess.PIPE, text=True, cwd=REPO)
    assert proc.stdout.readline().strip() == "held"
    return proc


def test_a_second_writer_is_refused_until_the_first_dies(tiny_vit, digits, tmp_path):
    run_dir = tmp_path / "run"
    holder = hold(run_dir)
    args = ["train", str(REPO / "configs/vision/vit-head-only.yaml"), f"model.name_or_path={tiny_vit}"]
    args += [f"data.train={digits}", f"output_dir={run_dir}", "train.epochs=1", "train.report_to=none", "resume=true"]
    try:
        out = run_cli(*args, in_process=True, check=False)
        assert out.returncode == 2
        assert f"is being written by another hftl process (pid {holder.pid} on host {socket.gethostname()}" in out.stderr
        assert not (run_dir / "config.yaml").exists()  # nothing of the run was written beside the holder
    finally:
        holder.send_signal(signal.SIGKILL)  # however it dies, the kernel drops its lock
        holder.wait()
    run_cli(*args, in_process=True)
    assert (run_dir / "metrics.json").is_file()
    assert json.loads((run_dir / LOCK_FILE).read_text())["pid"] == os.getpid()  # the last holder, for the record
    run_cli(*args[:-1], "overwrite=true", in_process=True)  # overwrite keeps the lock file it holds
    assert (run_dir / LOCK_FILE).is_file() and (run_dir / "metrics.json").is_file()


def test_only_the_launch_first_process_takes_the_lock(tmp_path, monkeypatch):
    holder = hold(tmp_path / "run")
    try:
        with pytest.raises(HftlError, match="is being written by"), run_lock(tmp_path / "run"):
            pass
        monkeypatch.setenv("RANK", "1")  # another rank of the holder's launch passes through
        with run_lock(tmp_path / "run"):
            time.sleep(0)
    finally:
        holder.kill()
        holder.wait()
