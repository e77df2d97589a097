"""DeepSpeed ZeRO-2 and ZeRO-3 on two CPU processes (gloo), launched with the repo's accelerate configs:
trained like one plain process, frozen weights untouched, fp32 weights exported, killed and resumed
exactly; and the DeepSpeed configs hftl refuses, before any work, with what to do instead."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path
from subprocess import CompletedProcess

import deepspeed  # noqa: F401  (a hard import: CI installs hftl[test], which brings DeepSpeed)
import pytest
import torch
import yaml
from safetensors.torch import load_file

from hftl.config import load_config
from hftl.utils.errors import ConfigError, HftlError
from tests.config.test_config import launcher_env
from tests.conftest import REPO, run_cli
from tests.text_data import sentiment_rows, write_csv

ACCELERATE = REPO / "configs" / "accelerate"


def launch(stage: int, *args: str, processes: int = 2, env: dict | None = None, check: bool = True) -> CompletedProcess:
    """`accelerate launch --config_file configs/accelerate/deepspeed_zero{stage}.yaml -m hftl.cli train ...` on CPUs."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cmd = [
        sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(ACCELERATE / f"deepspeed_zero{stage}.yaml"),
        "--num_processes", str(processes), "--main_process_port", str(port), "-m", "hftl.cli", "train", *args,
    ]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1", **(env or {})}
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO, env=env, timeout=600)
    assert proc.returncode == 0 or not check, f"{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}"
    return proc


@pytest.fixture(scope="module")
def still_bert(tiny_bert, tmp_path_factory) -> Path:
    """The tiny BERT without dropout: 2 processes x 8 then compute exactly what 1 process x 16 does."""
    from transformers import AutoTokenizer, BertForSequenceClassification

    folder = tmp_path_factory.mktemp("still-bert")
    BertForSequenceClassification.from_pretrained(
        tiny_bert, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0
    ).save_pretrained(folder)
    AutoTokenizer.from_pretrained(tiny_bert).save_pretrained(folder)
    return folder


def write_config(folder: Path, model: Path, strategy: dict, data: dict | None = None, **train: object) -> Path:
    """A run config; by default sentiment sentences, 48 to train on and 16 to validate."""
    config = {
        "task": "text-classification" if data is None else "image-classification",
        "model": {"name_or_path": str(model)},
        "data": data or {"train": str(write_csv(folder / "d.csv", sentiment_rows(64))), "validation_split": 0.25},
        "strategy": strategy,
        "train": {"epochs": 2, "batch_size": 8, "learning_rate": 1e-3, "report_to": "none", "logging_steps": 1, **train},
    }
    path = folder / "c.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def files(run: Path) -> list[str]:
    """What a run folder holds, the checkpoints' per-process files (RNG states, DeepSpeed's optimizer shards) aside."""
    return sorted(str(p.relative_to(run)) for p in run.rglob("*") if p.is_file() and not p.name.startswith(("rng_", "zero_")))


def assert_same_run(ds: dict, plain: dict, loss: float, flipped: int = 0) -> None:
    """The same steps, learning rates and validation numbers (`flipped`: validation examples that may differ)."""
    assert ds["global_step"] == plain["global_step"]
    # The schedule drives DeepSpeed's learning rate step by step as it drives a plain run's.
    assert [e["lr"] for e in ds["log_history"]] == [e["lr"] for e in plain["log_history"]]
    examples = ds["data"]["validation_examples"]
    assert sum(map(sum, ds["confusion_matrix"])) == examples  # each validation example once, none twice
    assert abs(ds["validation"]["accuracy"] - plain["validation"]["accuracy"]) * examples <= flipped + 1e-6
    assert flipped or ds["confusion_matrix"] == plain["confusion_matrix"]
    assert abs(ds["validation"]["loss"] - plain["validation"]["loss"]) < loss, (ds["validation"], plain["validation"])
    assert ds["trainable_parameters"] == plain["trainable_parameters"] and ds["total_parameters"] == plain["total_parameters"]


def head_trained(run: Path) -> bool:
    """Whether the head moved between the run's two kept checkpoints (their weights: the fp32 masters)."""
    first, last = (load_file(str(c / "weights.safetensors")) for c in sorted((run / "checkpoints").glob("step-*")))
    # The head's weight; under LoRA peft's trained copy (modules_to_save), not the original.
    head = next(k for k in first if "classifier" in k and k.endswith("weight") and "original_module" not in k)
    return not torch.equal(first[head], last[head])


def max_difference(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    assert a.keys() == b.keys()
    return max((a[k].float() - b[k].float()).abs().max().item() for k in a)


def test_zero2_trains_like_one_plain_process(still_bert, tmp_path):
    """fp32, freeze (top block + head train), accumulation 2 and clipping 0.5 from the hftl config."""
    config = write_config(tmp_path, still_bert, {"name": "freeze", "trainable_blocks": 1}, gradient_accumulation_steps=2)
    ds, plain = tmp_path / "ds", tmp_path / "plain"
    proc = launch(2, str(config), f"output_dir={ds}", "train.batch_size=4", "train.max_grad_norm=0.5")
    # DeepSpeed's own engine reports hftl's values: 2 processes x 4 x 2 accumulation = the plain run's 16.
    assert "DeepSpeed ZeRO-2: batch 4 per process x 2 accumulation x 2 processes = 16, gradient clipping 0.5, fp32" in proc.stdout
    assert proc.stdout.count('"output_dir"') == 1  # the summary comes from the main process only
    run_cli("train", str(config), f"output_dir={plain}", "train.batch_size=8", "train.max_grad_norm=0.5", in_process=True)

    ds_metrics, plain_metrics = (json.loads((run / "metrics.json").read_text()) for run in (ds, plain))
    assert_same_run(ds_metrics, plain_metrics, loss=1e-5)
    assert files(ds) == files(plain)  # one run folder, written once by the main process
    per_process = sorted(p.name for p in (ds / "checkpoints" / "step-0000006").glob("*_*.pt"))
    assert per_process == ["rng_0.pt", "rng_1.pt", "zero_optimizer_rank0.pt", "zero_optimizer_rank1.pt"]

    pretrained = load_file(str(still_bert / "model.safetensors"))
    got, expected = (load_file(str(run / "model" / "model.safetensors")) for run in (ds, plain))
    assert max_difference(got, expected) < 1e-6  # the same weights as one process (float sums in another order)
    frozen = [k for k in got if k.startswith(("bert.embeddings.", "bert.encoder.layer.0."))]
    assert len(frozen) == 21 and all(torch.equal(got[k], pretrained[k]) for k in frozen)
    top = "bert.encoder.layer.1.output.dense.weight"
    assert not torch.equal(got[top], pretrained[top]) and head_trained(ds)

    from transformers import pipeline

    assert pipeline("text-classification", model=str(ds / "model"))("a good film")[0]["label"] in {"pos", "neg"}


@pytest.fixture(scope="module")
def zero3_lora(tiny_vit, digits, tmp_path_factory) -> tuple[Path, Path, CompletedProcess]:
    """A ZeRO-3 LoRA run of the tiny ViT on digits in bf16, checkpointing every step (config, run folder, output)."""
    folder = tmp_path_factory.mktemp("zero3-lora")
    data = {"train": str(digits), "validation_split": 0.25, "augment": False}  # 66 to train on, 24 to validate
    strategy = {"name": "lora", "lora": {"dropout": 0.0}}
    config = write_config(folder, tiny_vit, strategy, data, mixed_precision="bf16", save_steps=1)
    return config, folder / "run", launch(3, str(config), f"output_dir={folder / 'run'}")


def test_zero3_lora_in_bf16_exports_fp32_weights_and_keeps_frozen_ones(zero3_lora, tiny_vit, tmp_path):
    config, run, proc = zero3_lora
    assert "DeepSpeed ZeRO-3: batch 8 per process x 1 accumulation x 2 processes = 16" in proc.stdout and "bf16" in proc.stdout
    plain = tmp_path / "plain"
    single = run_cli("train", str(config), f"output_dir={plain}", "train.batch_size=16", "train.save_steps=null", in_process=True)
    counts = next(line for line in single.stdout.splitlines() if line.startswith("all "))
    assert counts in proc.stdout  # whole parameters counted, not this process's ZeRO-3 partitions
    # DeepSpeed's bf16 runs the whole model in bf16 (pixels cast too) where a plain run autocasts: close, not equal.
    assert_same_run(*(json.loads((r / "metrics.json").read_text()) for r in (run, plain)), loss=0.01, flipped=1)

    pretrained = load_file(str(tiny_vit / "model.safetensors"))
    merged = load_file(str(run / "model" / "model.safetensors"))
    adapted = [k for k in merged if k.endswith(("query.weight", "value.weight"))]
    assert len(adapted) == 4 and all(merged[k].dtype == torch.float32 for k in merged)
    # DeepSpeed trained with bf16 copies of every weight; model/ holds the pretrained fp32 ones where frozen...
    frozen = [k for k in merged if k not in adapted and not k.startswith("classifier.")]
    assert len(frozen) > 20 and all(torch.equal(merged[k], pretrained[k]) for k in frozen)
    # ... and the fp32 masters where trained: the merged LoRA update and the new head, not rounded to bf16.
    for key in adapted:
        assert not torch.equal(merged[key], pretrained[key])
    assert head_trained(run)
    for key in [*adapted, "classifier.weight"]:
        assert not torch.equal(merged[key].bfloat16().float(), merged[key])
    plain_merged = load_file(str(plain / "model" / "model.safetensors"))
    assert max_difference(merged, plain_merged) < 0.02  # bf16 compute against autocast, 10 steps at lr 1e-3

    from PIL import Image
    from transformers import pipeline

    assert (run / "adapter" / "adapter_model.safetensors").is_file()
    predicted = pipeline("image-classification", model=str(run / "model"))(Image.new("RGB", (32, 32)))[0]["label"]
    assert predicted in {"0", "1", "2"}


@pytest.mark.slow
def test_zero3_killed_and_resumed_ends_with_the_uninterrupted_weights(zero3_lora, tmp_path):
    config, reference, _ = zero3_lora
    run = tmp_path / "run"
    train = (str(config), f"output_dir={run}")
    killed = launch(3, *train, env={"HFTL_FAULT_KILL_AFTER_STEP": "7"}, check=False)  # 5 steps an epoch: in epoch 2
    assert killed.returncode != 0 and not (run / "metrics.json").exists()
    checkpoint = run / "checkpoints" / "step-0000007"
    assert (checkpoint / "zero_optimizer_rank0.pt").is_file() and (checkpoint / "zero_optimizer_rank1.pt").is_file()

    # The optimizer state is split across 2 processes: not resumed on 1, nor without DeepSpeed.
    one = launch(3, *train, "resume=true", processes=1, check=False)
    assert one.returncode != 0 and "written under DeepSpeed ZeRO-3 on 2 process(es)" in one.stderr
    assert "--config_file configs/accelerate/deepspeed_zero3.yaml --num_processes 2" in one.stderr
    plain = run_cli("train", *train, "resume=true", check=False, in_process=True)
    assert plain.returncode == 2 and "this checkpoint was written under DeepSpeed ZeRO-3 on 2 process(es)" in plain.stderr

    resumed = launch(3, *train, "resume=true")
    assert "resuming from" in resumed.stdout and "step-0000007" in resumed.stdout
    expected, got = (load_file(str(r / "model" / "model.safetensors")) for r in (reference, run))
    assert max_difference(expected, got) == 0.0  # bitwise on CPU
    ref_history, got_history = (json.loads((r / "metrics.json").read_text())["log_history"] for r in (reference, run))
    assert got_history[-2:] == ref_history[-2:]


def deepspeed_env(monkeypatch: pytest.MonkeyPatch, stage: int = 2, **extra: str) -> None:
    """What `accelerate launch --config_file configs/accelerate/deepspeed_zero{stage}.yaml` gives each process."""
    for key, value in {**launcher_env(ACCELERATE / f"deepspeed_zero{stage}.yaml"), **extra}.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("WORLD_SIZE", "2")


def cfg(**overrides: object):
    return load_config({"task": "text-classification", "model": {"name_or_path": "m"}, "data": {"train": "d.csv"}}, overrides)


@pytest.mark.parametrize("stage", [2, 3])
def test_hftl_fills_the_deepspeed_config_from_its_own(stage, monkeypatch):
    from accelerate.utils import DeepSpeedPlugin

    from hftl.backends.zero import configure

    deepspeed_env(monkeypatch, stage)
    plugin = DeepSpeedPlugin()  # as the Accelerator builds it from the launch
    config = cfg(**{"train.batch_size": 4, "train.gradient_accumulation_steps": 3, "train.max_grad_norm": None})
    configure(plugin.deepspeed_config, config, processes=2)
    ds = plugin.deepspeed_config
    assert ds["zero_optimization"]["stage"] == stage
    assert (ds["train_micro_batch_size_per_gpu"], ds["gradient_accumulation_steps"], ds["train_batch_size"]) == (4, 3, 24)
    assert ds["gradient_clipping"] == 0.0  # max_grad_norm null: no clipping (Accelerate's default would be 1.0)


@pytest.mark.parametrize(
    ("env", "overrides", "message"),
    [
        (
            {"ACCELERATE_GRADIENT_CLIPPING": "1.0"},
            {"train.max_grad_norm": 0.5},
            "gradient_clipping=1.0 in the DeepSpeed config, but train.max_grad_norm (null: 0.0, no clipping) gives 0.5",
        ),
        (
            {"ACCELERATE_GRADIENT_ACCUMULATION_STEPS": "4"},
            {},
            "gradient_accumulation_steps=4 in the DeepSpeed config, but train.gradient_accumulation_steps gives 1",
        ),
        ({}, {"strategy.head_warmup_epochs": 1}, "strategy.head_warmup_epochs=1 (a hybrid run) cannot run under DeepSpeed"),
        ({"ACCELERATE_DEEPSPEED_ZERO_STAGE": "0"}, {}, "hftl runs ZeRO stages 1, 2 and 3 (stage 0 is plain data parallel"),
    ],
    ids=["clipping", "accumulation", "hybrid", "stage-0"],
)
def test_deepspeed_configs_hftl_would_not_follow_are_refused(env, overrides, message, monkeypatch):
    from hftl.backends import check_launch

    deepspeed_env(monkeypatch, 2, **env)
    with pytest.raises(ConfigError) as refused:
        check_launch(cfg(**overrides))
    assert message in str(refused.value)
    if "hybrid" in message:
        assert "configs/accelerate/multi_gpu.yaml" in str(refused.value)  # what to use instead
    elif "stage 0" not in message:
        assert "Leave these keys out of the accelerate / DeepSpeed config" in str(refused.value)


def test_a_deepspeed_config_file_with_its_own_optimizer_is_refused(monkeypatch, tmp_path):
    from hftl.backends import check_launch

    ds_config = {"zero_optimization": {"stage": 2}, "optimizer": {"type": "AdamW", "params": {"lr": 1e-3}}}
    (tmp_path / "ds.json").write_text(json.dumps(ds_config))
    deepspeed_env(monkeypatch)
    for key in ("ACCELERATE_DEEPSPEED_ZERO_STAGE", "ACCELERATE_DEEPSPEED_OFFLOAD_OPTIMIZER_DEVICE"):
        monkeypatch.delenv(key)
    monkeypatch.setenv("ACCELERATE_CONFIG_DS_FIELDS", "deepspeed_config_file")
    monkeypatch.setenv("ACCELERATE_DEEPSPEED_CONFIG_FILE", str(tmp_path / "ds.json"))
    with pytest.raises(ConfigError, match="the DeepSpeed config has a 'optimizer' section; hftl builds AdamW"):
        check_launch(cfg())


def test_a_deepspeed_launch_without_deepspeed_installed_says_how_to_install(tiny_bert, monkeypatch, tmp_path):
    data = write_csv(tmp_path / "d.csv", sentiment_rows(16))
    config = {"task": "text-classification", "model": {"name_or_path": str(tiny_bert)}, "data": {"train": str(data)}}
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(config))
    deepspeed_env(monkeypatch)
    monkeypatch.setitem(sys.modules, "deepspeed", None)  # what `import deepspeed` meets where it is not installed
    proc = run_cli("train", str(tmp_path / "c.yaml"), f"output_dir={tmp_path / 'run'}", check=False, in_process=True)
    assert proc.returncode == 2 and "this launch asked for DeepSpeed, but it cannot be imported" in proc.stderr
    assert "pip install 'hftl[deepspeed]'" in proc.stderr
    assert not (tmp_path / "run").exists()  # refused before the data loaded and the run folder was claimed


def test_a_deepspeed_checkpoint_is_not_resumed_without_deepspeed():
    from accelerate import Accelerator

    from hftl.backends import backend_for

    model = torch.nn.Linear(2, 2)
    optimizer = torch.optim.AdamW(model.parameters())
    with pytest.raises(HftlError) as refused:
        backend_for(Accelerator(cpu=True)).load_optimizer_state(model, optimizer, {"deepspeed_zero_stage": 2, "processes": 4})
    assert "written under DeepSpeed ZeRO-2 on 4 process(es); resume it with accelerate launch" in str(refused.value)
    assert "configs/accelerate/deepspeed_zero2.yaml --num_processes 4" in str(refused.value)


def test_optimizer_shards_are_read_without_unpickling_anything_else(tmp_path):
    from deepspeed.runtime.fp16.loss_scaler import DynamicLossScaler

    from hftl.backends.zero import read_shard

    # What ZeRO's state dict holds under fp16 (not run on CPUs): the dynamic loss scaler, with its scale.
    scaler = DynamicLossScaler(2.0**16, 1000, 1, 2, False, dtype=torch.float16)
    scaler.cur_scale = 1024.0
    torch.save({"loss_scaler": scaler, "fp32_flat_groups": [torch.ones(3)]}, tmp_path / "shard.pt")
    shard = read_shard(tmp_path / "shard.pt")
    assert shard["loss_scaler"].cur_scale == 1024.0 and torch.equal(shard["fp32_flat_groups"][0], torch.ones(3))

    torch.save({"loss_scaler": scaler, "other": HftlError("any class")}, tmp_path / "other.pt")
    with pytest.raises(Exception, match="Weights only load failed"):
        read_shard(tmp_path / "other.pt")
