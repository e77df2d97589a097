"""Chaos: a hybrid run killed with SIGKILL at 20 moments drawn at random (after optimizer steps, inside
checkpoint writes, mid-way through the feature cache's fill, mid-export), resumed each time, ends bitwise
on the weights of a run never interrupted."""

from __future__ import annotations

import random
import signal

import pytest
import torch
from safetensors.torch import load_file

from hftl.utils.faults import AFTER_STEP, IN_CACHE_FILL, IN_CHECKPOINT, IN_EXPORT
from tests.conftest import REPO, run_cli


@pytest.mark.slow
def test_twenty_random_kills_of_a_hybrid_run_end_on_the_uninterrupted_weights(tiny_vit, digits, tmp_path):
    def args(name: str, *extra: str) -> list[str]:
        base = ["train", str(REPO / "configs/vision/vit-hybrid.yaml"), f"model.name_or_path={tiny_vit}", f"data.train={digits}"]
        base += [f"output_dir={tmp_path / name}", "train.batch_size=8", "train.epochs=3", "train.report_to=none"]
        return [*base, "train.save_steps=2", "data.augment=true", "strategy.head_warmup_epochs=1", *extra]

    run_cli(*args("clean"), in_process=True)
    total = 33  # 81 training images / 8 = 11 steps an epoch, 3 epochs
    rng = random.Random(19)
    steps = sorted(rng.sample(range(1, total), 14))
    checkpoint_steps = sorted(rng.sample(range(2, total, 2), 4))
    # At one step a checkpoint's write comes before the step's end: killed after it, the run resumes past it.
    moments = [(IN_CACHE_FILL, 1)] + sorted(
        [(AFTER_STEP, s) for s in steps] + [(IN_CHECKPOINT, s) for s in checkpoint_steps],
        key=lambda m: (m[1], m[0] != IN_CHECKPOINT),
    )
    moments.append((IN_EXPORT, 1))
    assert len(moments) == 20
    killed, cache = 0, tmp_path / "cache"
    for name, at in moments:
        # Its own feature cache: the clean run's would be reused, and the fill never killed.
        out = run_cli(*args("run", "resume=true"), env={name: str(at), "HFTL_FEATURE_CACHE": str(cache)}, check=False)
        assert out.returncode == -signal.SIGKILL, (name, at, out.stderr[-3000:])
        killed += 1
    assert killed == 20
    run_cli(*args("run", "resume=true"), in_process=True)  # killed mid-export: this one exports
    clean, run = (load_file(str(tmp_path / n / "model" / "model.safetensors")) for n in ("clean", "run"))
    assert all(torch.equal(clean[k], run[k]) for k in clean)
