"""A full disk while writing a checkpoint, the feature cache or model/: a clear error naming the folder and
its free space (the cache: a note, and the run goes on uncached), the partial write removed, and what was
there before still usable. The failure is injected at the write (HFTL_FAULT_ENOSPC_IN), as ENOSPC."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import load_file

from hftl.training.checkpoint_files import damage
from hftl.utils.faults import ENOSPC_IN
from tests.conftest import REPO, run_cli


def args(tmp_path: Path, model: Path, data: Path, name: str, *extra: str) -> list[str]:
    base = ["train", str(REPO / "configs/vision/vit-full.yaml"), f"model.name_or_path={model}", f"data.train={data}"]
    return [*base, f"output_dir={tmp_path / name}", "train.batch_size=16", "train.epochs=2", "train.report_to=none", *extra]


def test_full_disk_at_a_checkpoint_keeps_the_previous_one_and_resume_finishes(tiny_vit, digits, tmp_path, monkeypatch):
    run_cli(*args(tmp_path, tiny_vit, digits, "clean"), in_process=True)
    monkeypatch.setenv(ENOSPC_IN, "checkpoint:6")  # step 4's checkpoint is written, epoch 1's (step 6) fails
    out = run_cli(*args(tmp_path, tiny_vit, digits, "run", "train.save_steps=4"), in_process=True, check=False)
    monkeypatch.delenv(ENOSPC_IN)
    checkpoints = tmp_path / "run" / "checkpoints"
    assert out.returncode == 2
    assert f"no space left on the device of {checkpoints} while writing the checkpoint of step 6" in out.stderr
    assert "MiB free" in out.stderr and f"The previous checkpoint ({checkpoints / 'step-0000004'}) is intact" in out.stderr
    assert not list(checkpoints.glob(".tmp-*")) and damage(checkpoints / "step-0000004") is None
    run_cli(*args(tmp_path, tiny_vit, digits, "run", "train.save_steps=4", "resume=true"), in_process=True)
    clean, run = (load_file(str(tmp_path / n / "model" / "model.safetensors")) for n in ("clean", "run"))
    assert all(torch.equal(clean[k], run[k]) for k in clean)


def test_full_disk_at_export_leaves_no_model_and_resume_exports(tiny_vit, digits, tmp_path, monkeypatch):
    monkeypatch.setenv(ENOSPC_IN, "model")
    out = run_cli(*args(tmp_path, tiny_vit, digits, "run"), in_process=True, check=False)
    monkeypatch.delenv(ENOSPC_IN)
    run = tmp_path / "run"
    assert out.returncode == 2 and f"no space left on the device of {run} while writing model/" in out.stderr
    assert "resume=true exports from them" in out.stderr
    assert not (run / "model").exists() and not list(run.glob(".model.tmp-*")) and not (run / "metrics.json").exists()
    run_cli(*args(tmp_path, tiny_vit, digits, "run", "resume=true"), in_process=True)
    assert (run / "model" / "model.safetensors").is_file() and (run / "metrics.json").is_file()


def test_full_disk_in_the_feature_cache_runs_uncached(tiny_vit, digits, tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    monkeypatch.setenv("HFTL_FEATURE_CACHE", str(cache))
    monkeypatch.setenv(ENOSPC_IN, "cache")
    out = run_cli(*args(tmp_path, tiny_vit, digits, "run", "strategy=head_only"), in_process=True)
    assert f"feature cache: off (no space left on the device of {cache} while writing the" in out.stdout
    status = json.loads((tmp_path / "run" / "metrics.json").read_text())["feature_cache"]
    assert not status["train"] and "no space left" in status["note"]
    assert not [p for p in cache.iterdir() if ".partial-" in p.name]  # the half-filled entry is gone


def test_a_real_full_filesystem_is_recognised_whatever_the_writer_raises(tmp_path):
    """A 256 kB tmpfs: torch.save fails with "unexpected pos", safetensors with its own error; both read as a full disk."""
    import subprocess

    import pytest

    from hftl.training.checkpoint_files import latest_checkpoint, save_checkpoint
    from hftl.utils.errors import DiskFullError

    small = tmp_path / "small"
    small.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(small)], capture_output=True).returncode:
        pytest.skip("mounting a small tmpfs needs root")
    try:
        folder = small / "checkpoints"
        state = {"epoch": 0, "global_step": 1, "samples_seen": 8}
        save_checkpoint(folder, 1, {"w": torch.zeros(1000)}, {"s": torch.zeros(10)}, {}, state, [{}], keep=2)
        for tensors, optimizer in (({"w": torch.zeros(1000)}, {"s": torch.zeros(200_000)}), ({"w": torch.zeros(200_000)}, {})):
            with pytest.raises(DiskFullError, match=rf"no space left on the device of {folder} while writing the checkpoint"):
                save_checkpoint(folder, 2, tensors, optimizer, {}, {**state, "global_step": 2}, [{}], keep=2)
            assert latest_checkpoint(folder) == folder / "step-0000001" and not list(folder.glob(".tmp-*"))
    finally:
        subprocess.run(["umount", str(small)], check=True)
