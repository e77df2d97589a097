"""Resumable checkpoints, written so a crash mid-write leaves the previous one usable.

A checkpoint is built in `checkpoints/.tmp-*` and renamed to `checkpoints/step-NNNNNNN` in one atomic
step; only complete directories ever carry the `step-` name. Each carries `manifest.json`, every file's
size and SHA-256 at write time, so a checkpoint altered or truncated later (a disk fault, a copy cut
short) is recognised and the one before it resumed instead.
Weights are safetensors; optimizer, scheduler and RNG state are plain tensors and containers written
with `torch.save` and read back with `weights_only=True`.

Example:
    >>> save_checkpoint(run / "checkpoints", 120, tensors, optimizer, scheduler, state)  # doctest: +SKIP
    >>> latest_checkpoint(run / "checkpoints")                                            # doctest: +SKIP
    PosixPath('runs/x/checkpoints/step-0000120')
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import random
import shutil
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from hftl.utils.faults import IN_CHECKPOINT, disk_full, fault
from hftl.utils.files import disk_full_guard, fsync_dir, replace_dir

PREFIX = "step-"
WEIGHTS = "weights.safetensors"
STATE = "trainer_state.json"
MANIFEST = "manifest.json"


def rng_state() -> dict[str, Any]:
    """Every RNG a training step draws from, as tensors and plain containers (weights_only-safe)."""
    np_state = np.random.get_state()
    state = {
        "python": random.getstate(),
        "numpy": [np_state[0], torch.from_numpy(np_state[1].copy()), *np_state[2:]],
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def gather_rng_states() -> list[dict[str, Any]]:
    """Every process's `rng_state()`, in rank order, on every process (the state alone without a process group).

    Each state travels as `torch.save` bytes: `all_gather_object` on tensors fails to unpickle them in torch 2.14.
    """
    from accelerate.utils import gather_object

    buffer = io.BytesIO()
    torch.save(rng_state(), buffer)
    return [torch.load(io.BytesIO(b), weights_only=True) for b in gather_object([buffer.getvalue()])]


def set_rng_state(state: dict[str, Any]) -> None:
    python = state["python"]
    random.setstate((python[0], tuple(python[1]), python[2]))
    kind, keys, *rest = state["numpy"]
    np.random.set_state((kind, keys.numpy(), *rest))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_checkpoint(
    directory: Path,
    step: int,
    tensors: dict[str, torch.Tensor],
    optimizer_state: dict,
    scheduler_state: dict,
    trainer_state: dict[str, Any],
    rng_states: list[dict[str, Any]],
    keep: int,
    tmp: Path | None = None,
) -> Path:
    """Write one checkpoint atomically, then prune to the newest `keep`.

    `tmp`: a `.tmp-*` folder in `directory` where other processes already wrote their files (DeepSpeed's
    optimizer shards); it becomes the checkpoint with the rest.
    """
    directory.mkdir(parents=True, exist_ok=True)
    if tmp is None:
        tmp = directory / f".tmp-{uuid.uuid4().hex}"
        tmp.mkdir()
    # Named for the message only: latest_checkpoint would re-hash it on every save.
    previous = next(reversed(list_checkpoints(directory)), None)
    intact = f"The previous checkpoint ({previous}) is intact" if previous else "No earlier checkpoint was written"
    with disk_full_guard(directory, f"the checkpoint of step {step}", tmp, intact):
        _write_files(tmp, step, tensors, optimizer_state, scheduler_state, trainer_state, rng_states)
    final = directory / f"{PREFIX}{step:07d}"
    replace_dir(tmp, final)  # the same step written again (an epoch's end right after a step save) replaces it
    fsync_dir(directory)
    for old in list_checkpoints(directory)[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
    for stale in directory.glob(".tmp-*"):  # left by a crash mid-write
        if stale != tmp:
            shutil.rmtree(stale, ignore_errors=True)
    return final


def _write_files(
    tmp: Path,
    step: int,
    tensors: dict[str, torch.Tensor],
    optimizer_state: dict,
    scheduler_state: dict,
    trainer_state: dict[str, Any],
    rng_states: list[dict[str, Any]],
) -> None:
    """A checkpoint's files and their manifest, synced to disk."""
    save_file({k: v.detach().contiguous().cpu() for k, v in tensors.items()}, str(tmp / WEIGHTS))
    torch.save(optimizer_state, tmp / "optimizer.pt")
    fault(IN_CHECKPOINT, step)  # the crash tests: weights and optimizer written, the rest not, nothing renamed
    disk_full("checkpoint", tmp, step)
    torch.save(scheduler_state, tmp / "scheduler.pt")
    for rank, state in enumerate(rng_states):
        torch.save(state, tmp / f"rng_{rank}.pt")
    (tmp / STATE).write_text(json.dumps(trainer_state, indent=2))
    manifest = {f.name: _fingerprint(f) for f in sorted(tmp.iterdir()) if f.is_file()}
    (tmp / MANIFEST).write_text(json.dumps(manifest, indent=1))
    for f in tmp.iterdir():
        with open(f, "rb") as handle:
            os.fsync(handle.fileno())
    fsync_dir(tmp)


def list_checkpoints(directory: Path) -> list[Path]:
    """Complete checkpoints, oldest first.

    Ordered by samples trained on, then step: a run resumed on more processes continues at a lower
    step number (steps are bigger), so an older checkpoint can carry a higher one.
    """
    if not directory.is_dir():
        return []
    found = [p for p in directory.iterdir() if p.is_dir() and p.name.startswith(PREFIX) and (p / STATE).is_file()]
    return sorted(found, key=lambda p: (_samples_seen(p), int(p.name[len(PREFIX) :])))


def _samples_seen(path: Path) -> int:
    try:
        return int(json.loads((path / STATE).read_text()).get("samples_seen", 0))
    except (OSError, ValueError, AttributeError):
        return 0  # unreadable: ordered by step among its peers, and never preferred over a readable one


def latest_checkpoint(directory: Path, notes: list[str] | None = None) -> Path | None:
    """The newest checkpoint whose files are as they were written; each one passed over adds a line to `notes`."""
    for path in reversed(list_checkpoints(directory)):
        problem = damage(path)
        if problem is None:
            return path
        if notes is not None:
            notes.append(f"checkpoint {path} is damaged ({problem}): passed over for the one before it")
    return None


def _fingerprint(path: Path) -> dict[str, Any]:
    with open(path, "rb") as f:
        return {"size": path.stat().st_size, "sha256": hashlib.file_digest(f, "sha256").hexdigest()}


def damage(path: Path) -> str | None:
    """What differs from the checkpoint's manifest (a missing, truncated or altered file), or None.

    Checkpoints from before manifests were written pass unchecked.
    """
    try:
        manifest = json.loads((path / MANIFEST).read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError):
        return f"{MANIFEST} unreadable"
    for name, expected in manifest.items():
        file = path / name
        if not file.is_file():
            return f"{name} missing"
        if file.stat().st_size != expected["size"]:
            return f"{name} is {file.stat().st_size} bytes, written as {expected['size']}"
        if _fingerprint(file)["sha256"] != expected["sha256"]:
            return f"{name} differs from what was written (SHA-256)"
    return None


def load_checkpoint(path: Path, rank: int = 0, processes: int = 1) -> dict[str, Any]:
    """Everything `save_checkpoint` wrote, loaded without unpickling arbitrary objects.

    `rng` is this rank's RNG state when the checkpoint was written by as many processes (one
    `rng_<rank>.pt` each), else rank 0's, and `rng_exact` says which: a fresh run seeds every rank
    alike, so rank 0's state is the closest stand-in for a process count the run never had.
    """
    saved = len(list(path.glob("rng_*.pt")))
    exact = saved == processes
    return {
        "tensors": load_file(str(path / WEIGHTS)),
        "optimizer": torch.load(path / "optimizer.pt", weights_only=True),
        "scheduler": torch.load(path / "scheduler.pt", weights_only=True),
        "rng": torch.load(path / f"rng_{rank if exact else 0}.pt", weights_only=True),
        "rng_exact": exact,
        "state": json.loads((path / STATE).read_text()),
    }
