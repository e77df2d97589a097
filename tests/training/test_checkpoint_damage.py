"""A checkpoint altered or truncated after it was written is recognised from the sizes and SHA-256 hashes
its manifest recorded, and the one before it is resumed instead; the run still ends on the uninterrupted
run's weights."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import load_file

from hftl.training.checkpoint_files import MANIFEST, damage
from hftl.utils.faults import AFTER_STEP
from tests.conftest import REPO, run_cli


def args(tmp_path: Path, model: Path, data: Path, name: str, *extra: str) -> list[str]:
    base = ["train", str(REPO / "configs/vision/vit-full.yaml"), f"model.name_or_path={model}", f"data.train={data}"]
    base += [f"output_dir={tmp_path / name}", "train.batch_size=16", "train.epochs=2", "train.report_to=none"]
    return [*base, "train.save_steps=2", "train.save_total_limit=3", *extra]


def test_a_damaged_checkpoint_is_passed_over_for_the_one_before(tiny_vit, digits, tmp_path):
    run_cli(*args(tmp_path, tiny_vit, digits, "clean"), in_process=True)
    killed = run_cli(*args(tmp_path, tiny_vit, digits, "run"), env={AFTER_STEP: "9"}, check=False)
    assert killed.returncode != 0
    checkpoints = tmp_path / "run" / "checkpoints"
    newest, before = checkpoints / "step-0000008", checkpoints / "step-0000006"
    manifest = json.loads((newest / MANIFEST).read_text())
    assert {"weights.safetensors", "optimizer.pt", "trainer_state.json"} <= set(manifest)
    assert damage(newest) is None and damage(before) is None
    weights = newest / "weights.safetensors"
    data = bytearray(weights.read_bytes())
    data[len(data) - 100] ^= 1  # one flipped bit deep in the tensors: the file still loads, with a wrong weight
    weights.write_bytes(bytes(data))
    assert damage(newest) == "weights.safetensors differs from what was written (SHA-256)"

    resumed = run_cli(*args(tmp_path, tiny_vit, digits, "run", "resume=true"), in_process=True)
    assert f"checkpoint {newest} is damaged (weights.safetensors differs" in resumed.stdout
    assert f"resuming from {before}" in resumed.stdout
    clean, run = (load_file(str(tmp_path / n / "model" / "model.safetensors")) for n in ("clean", "run"))
    assert all(torch.equal(clean[k], run[k]) for k in clean)

    # A copy cut short: the size says so before any hashing.
    kept = sorted(checkpoints.glob("step-*"))[-1]
    optimizer = kept / "optimizer.pt"
    size = optimizer.stat().st_size
    optimizer.write_bytes(optimizer.read_bytes()[: size // 2])
    assert damage(kept) == f"optimizer.pt is {size // 2} bytes, written as {size}"
