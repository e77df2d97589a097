"""What hftl refuses to run rather than run differently from what was asked: FSDP where Accelerate cannot
shard (CPUs); and checkpoints written under FSDP are not resumed without it. A run that does not shard
does not import DeepSpeed. (DeepSpeed runs: test_deepspeed.py.)"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch
import yaml

from tests.conftest import REPO, require, run_cli
from tests.text_data import sentiment_rows, write_csv


def test_fsdp_on_cpus_is_refused(tiny_bert, tmp_path):
    if torch.cuda.is_available():
        pytest.skip("with a GPU, FSDP runs (scripts/gpu_checks.py)")
    variable = "ACCELERATE_USE_FSDP"
    message = "this launch asked for FSDP, but Accelerate runs FSDP on GPUs only and this machine has none"
    data = write_csv(tmp_path / "d.csv", sentiment_rows(16))
    config = {"task": "text-classification", "model": {"name_or_path": str(tiny_bert)}, "data": {"train": str(data)}}
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(config))
    # What `accelerate launch --config_file configs/accelerate/fsdp.yaml` sets for the processes.
    proc = run_cli("train", str(tmp_path / "c.yaml"), f"output_dir={tmp_path / 'run'}", env={variable: "true"}, check=False)
    assert proc.returncode == 2 and message in proc.stderr and "Traceback" not in proc.stderr
    assert "torchrun" in proc.stderr  # says what to use instead
    assert not (tmp_path / "run").exists()  # refused before the data loaded and the run folder was claimed


def test_an_fsdp_checkpoint_is_not_resumed_without_fsdp():
    from accelerate import Accelerator

    from hftl.backends import backend_for
    from hftl.utils.errors import HftlError

    model = torch.nn.Linear(2, 2)
    optimizer = torch.optim.AdamW(model.parameters())
    # Under FSDP the optimizer state is gathered keyed by parameter name, not by position.
    by_name = {"state": {}, "param_groups": [{**optimizer.state_dict()["param_groups"][0], "params": ["weight", "bias"]}]}
    with pytest.raises(HftlError, match="written with FSDP; resume it the same way"):
        backend_for(Accelerator(cpu=True)).load_optimizer_state(model, optimizer, by_name)


def test_a_run_without_deepspeed_never_imports_it(tiny_vit, digits, tmp_path):
    """Accelerate's unwrap (and transformers' save_pretrained through it) imports DeepSpeed when it is
    installed. That import sets PYTORCH_NVML_BASED_CUDA_CHECK=1, after which every optimizer step on a
    machine without a GPU tries to load NVML. A LoRA run (peft's save and merge included) must not."""
    require("deepspeed")  # installed with the test extra; imported here, not in the run below
    config = {
        "task": "image-classification",
        "model": {"name_or_path": str(tiny_vit)},
        "data": {"train": str(digits), "augment": False, "validation_split": 0.2},
        "strategy": {"name": "lora"},
        "train": {"epochs": 1, "batch_size": 16, "report_to": "none"},
        "output_dir": str(tmp_path / "run"),
    }
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(config))
    script = (
        "import os, sys\n"
        "from hftl.cli import main\n"
        f"code = main(['train', {str(tmp_path / 'c.yaml')!r}])\n"
        "print('RESULT', code, 'deepspeed' in sys.modules, os.environ.get('PYTORCH_NVML_BASED_CUDA_CHECK'))\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "PYTORCH_NVML_BASED_CUDA_CHECK"}
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=REPO, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.splitlines()[-1] == "RESULT 0 False None", proc.stdout[-2000:]
    assert (tmp_path / "run" / "model" / "model.safetensors").exists() and (tmp_path / "run" / "adapter").is_dir()
