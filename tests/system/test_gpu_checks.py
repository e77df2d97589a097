"""scripts/gpu_checks.py, the GPU verification run, on what a CPU can do: its fp32 and bf16 cases train,
report finite losses, the dtype Linear layers computed in, and a reloadable model; CUDA cases skip."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from tests.conftest import REPO


def test_gpu_checks_runs_its_cpu_cases_and_skips_the_cuda_ones(tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, str(REPO / "scripts" / "gpu_checks.py"), "--cases", "fp32,bf16,fsdp,zero3", "--out", str(tmp_path)]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    report = json.loads((tmp_path / "gpu_checks.json").read_text())
    fp32, bf16, fsdp, zero3 = report["results"]
    for result in (fp32, bf16):
        assert result["status"] == "ok" and result["losses_finite"] and result["reloads"]
        assert result["global_step"] == 54  # 72 training examples / 8 x 6 epochs
        assert result["validation"]["accuracy"] >= 0.8  # the sentiment word is learnable; chance is 0.5
    assert fp32["linear_output_dtypes"] == ["float32"] and fp32["distributed_type"] == "NO"
    assert bf16["linear_output_dtypes"] == ["bfloat16"]  # autocast reached the training forward passes
    assert fsdp == {"case": "fsdp", "status": "skipped (needs CUDA)"}
    assert zero3 == {"case": "zero3", "status": "skipped (needs CUDA)"}
    assert "fp32" in proc.stdout and "skipped (needs CUDA)" in proc.stdout  # the summary table
