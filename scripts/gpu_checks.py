"""GPU checks for hftl: bf16 and fp16 training, and FSDP2 and DeepSpeed ZeRO-2/3 through `accelerate launch`,
on tiny models built here with save_pretrained (no Hub, no network). One line per case, and gpu_checks.json.

    python scripts/gpu_checks.py                      # every case; those needing CUDA skip without it
    python scripts/gpu_checks.py --cases fp32,bf16 --out /tmp/checks

Each case is an ordinary `hftl train` (FSDP: `accelerate launch --config_file configs/accelerate/fsdp.yaml
--num_processes 1`; DeepSpeed: `.../deepspeed_zero{2,3}.yaml` on every visible GPU) in its own process,
with a forward hook on every Linear layer that records the dtype its outputs had in training. Reported: the
exit status, whether every logged loss is finite, validation metrics, the dtypes seen, peak memory (CUDA max
allocated on a GPU) and whether `model/` reloads in a transformers pipeline. Needs torch, transformers,
accelerate, peft, datasets, evaluate, hftl (and deepspeed for the zero* cases).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # hftl from this checkout, installed or not
WORDS = {"pos": ["good", "great", "fine"], "neg": ["bad", "awful", "dull"]}
FILLER = ["the", "a", "movie", "was", "and", "plot", "is", "very"]


@dataclass
class Case:
    model: str = "bert"  # bert (text) or vit (digits images)
    precision: str = "no"
    strategy: str = "full"
    fsdp: bool = False
    deepspeed: int = 0  # ZeRO stage (2 or 3), 0 for none; needs pip install 'hftl[deepspeed]'
    kill_after_step: int | None = None  # killed there (SIGKILL), then resumed with resume=true
    needs_cuda: bool = False


CASES = {
    "fp32": Case(),
    "bf16": Case(precision="bf16"),
    "fp16": Case(precision="fp16", needs_cuda=True),
    "lora-bf16": Case(precision="bf16", strategy="lora", needs_cuda=True),
    "vit-fp16": Case(model="vit", precision="fp16", needs_cuda=True),
    "fsdp": Case(fsdp=True, precision="bf16", needs_cuda=True),
    "fsdp-lora": Case(fsdp=True, precision="bf16", strategy="lora", needs_cuda=True),
    "fsdp-resume": Case(fsdp=True, precision="bf16", kill_after_step=4, needs_cuda=True),
    "zero2": Case(deepspeed=2, precision="bf16", needs_cuda=True),
    "zero3": Case(deepspeed=3, precision="bf16", needs_cuda=True),
    "zero3-lora": Case(deepspeed=3, precision="bf16", strategy="lora", needs_cuda=True),
    "zero3-vit": Case(model="vit", deepspeed=3, precision="bf16", needs_cuda=True),  # pixels cast to bf16
    "zero2-resume": Case(deepspeed=2, precision="bf16", kill_after_step=4, needs_cuda=True),
}


def tiny_bert(folder: Path) -> Path:
    """A 2-layer BERT (hidden 64) whose WordPiece vocabulary holds the sentiment set's words."""
    from transformers import BertConfig, BertForSequenceClassification, BertTokenizer

    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *FILLER, *WORDS["pos"], *WORDS["neg"]]
    config = BertConfig(
        vocab_size=len(vocab), hidden_size=64, num_hidden_layers=2, num_attention_heads=2, intermediate_size=128,
        max_position_embeddings=32, num_labels=2,
    )  # fmt: skip
    BertForSequenceClassification(config).save_pretrained(folder)
    BertTokenizer(vocab={w: i for i, w in enumerate(vocab)}).save_pretrained(folder)
    return folder


def tiny_vit(folder: Path) -> Path:
    from transformers import ViTConfig, ViTForImageClassification, ViTImageProcessor

    config = ViTConfig(
        image_size=32, patch_size=8, hidden_size=64, num_hidden_layers=2, num_attention_heads=2, intermediate_size=128
    )
    ViTForImageClassification(config).save_pretrained(folder)
    ViTImageProcessor(size={"height": 32, "width": 32}).save_pretrained(folder)
    return folder


def sentiment_csv(path: Path, n: int = 96) -> Path:
    """`text,label`: filler words around one sentiment word, balanced."""
    rng = random.Random(0)
    lines = ["text,label"]
    for i in range(n):
        label = "pos" if i % 2 else "neg"
        words = rng.choices(FILLER, k=4)
        words.insert(rng.randrange(5), rng.choice(WORDS[label]))
        lines.append(f"{' '.join(words)},{label}")
    path.write_text("\n".join(lines) + "\n")
    return path


def write_config(out: Path, name: str, case: Case, sources: dict[str, Path]) -> Path:
    import yaml

    task = "text-classification" if case.model == "bert" else "image-classification"
    config = {
        "task": task,
        "model": {"name_or_path": str(sources[case.model])},
        "data": {"train": str(sources[f"{case.model}-data"]), "validation_split": 0.25},
        "strategy": {"name": case.strategy},
        "train": {
            "epochs": 6, "batch_size": 8, "learning_rate": 2e-3, "warmup_ratio": 0.1, "mixed_precision": case.precision,
            "logging_steps": 1, "save_steps": 2, "report_to": "tensorboard", "seed": 0,
        },
        "output_dir": str(out / "runs" / name),
    }  # fmt: skip
    path = out / f"{name}.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def command(case: Case, config: Path, *extra: str) -> list[str]:
    worker = [str(Path(__file__).resolve()), "--worker", "train", str(config), *extra]
    if not case.fsdp and not case.deepspeed:
        return [sys.executable, *worker]
    import torch

    name, processes = ("fsdp.yaml", 1) if case.fsdp else (f"deepspeed_zero{case.deepspeed}.yaml", torch.cuda.device_count())
    accelerate = str(REPO / "configs" / "accelerate" / name)
    launch = [sys.executable, "-m", "accelerate.commands.launch", "--config_file", accelerate, "--num_processes", str(processes)]
    return [*launch, "--main_process_port", str(free_port()), *worker]


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_case(name: str, case: Case, out: Path, sources: dict[str, Path]) -> dict:
    import torch

    if case.needs_cuda and not torch.cuda.is_available():
        return {"case": name, "status": "skipped (needs CUDA)"}
    config = write_config(out, name, case, sources)
    run_dir = out / "runs" / name
    shutil.rmtree(run_dir, ignore_errors=True)  # from an earlier check run
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    env["HFTL_GPU_CHECKS_SEEN"] = str(out / f"{name}.seen.json")
    started = time.perf_counter()
    log = []
    if case.kill_after_step:
        killed = subprocess.run(command(case, config), env={**env, "HFTL_FAULT_KILL_AFTER_STEP": str(case.kill_after_step)},
                                capture_output=True, text=True)  # fmt: skip
        log.append(killed.stdout + killed.stderr)
        if killed.returncode == 0 or (run_dir / "metrics.json").exists():
            return {"case": name, "status": "FAILED: the run was not killed", "log": log[-1][-2000:]}
    proc = subprocess.run(command(case, config, *(["resume=true"] if case.kill_after_step else [])), env=env,
                          capture_output=True, text=True)  # fmt: skip
    log.append(proc.stdout + proc.stderr)
    (out / f"{name}.log").write_text("\n\n".join(log))
    if proc.returncode != 0:
        return {"case": name, "status": f"FAILED (exit {proc.returncode})", "log": proc.stderr[-3000:]}
    return summarize(name, case, run_dir, out, time.perf_counter() - started, proc.stdout)


def summarize(name: str, case: Case, run_dir: Path, out: Path, seconds: float, stdout: str) -> dict:
    metrics = json.loads((run_dir / "metrics.json").read_text())
    losses = [e["loss"] for e in metrics["log_history"]]
    seen_file = out / f"{name}.seen.json"
    seen = json.loads(seen_file.read_text()) if seen_file.exists() else {}
    result = {
        "case": name,
        "status": "ok",
        "precision": case.precision,
        "distributed_type": seen.get("distributed_type"),
        "global_step": metrics["global_step"],
        "losses_finite": bool(losses) and all(math.isfinite(x) for x in losses),
        "validation": {k: round(v, 4) for k, v in metrics["validation"].items()},
        "linear_output_dtypes": seen.get("dtypes", []),
        "peak_memory_mb": round(metrics["peak_memory_mb"], 1),
        "samples_per_second": round(metrics["samples_per_second"], 1),
        "seconds": round(seconds, 1),
        "resumed": "resuming from" in stdout,
        "reloads": reloads(run_dir / "model", "text-classification" if case.model == "bert" else "image-classification"),
    }
    if not result["losses_finite"]:
        result["status"] = "FAILED: a logged loss is not finite"
    return result


def reloads(model_dir: Path, task: str) -> bool:
    """Whether model/ loads in a transformers pipeline and predicts one of its labels."""
    from transformers import pipeline

    if task == "text-classification":
        prediction = pipeline(task, model=str(model_dir), device=-1)("the movie was good")[0]
    else:
        from PIL import Image

        prediction = pipeline(task, model=str(model_dir), device=-1)(Image.new("RGB", (32, 32)))[0]
    return prediction["label"] in {"pos", "neg", *map(str, range(10))}


def worker(args: list[str]) -> int:
    """`hftl <args>` with a hook recording the dtype of every Linear layer's output in training, and the
    distributed type Accelerate set up (main process only)."""
    import torch
    from accelerate.state import AcceleratorState

    from hftl.cli import main

    seen: set[str] = set()

    def record(module: torch.nn.Module, inputs: object, output: object) -> None:
        if isinstance(module, torch.nn.Linear) and isinstance(output, torch.Tensor) and module.training:
            seen.add(str(output.dtype).removeprefix("torch."))

    torch.nn.modules.module.register_module_forward_hook(record)
    code = main(args)
    if os.environ.get("RANK", "0") == "0" and os.environ.get("HFTL_GPU_CHECKS_SEEN"):
        kind = AcceleratorState().distributed_type.value
        Path(os.environ["HFTL_GPU_CHECKS_SEEN"]).write_text(json.dumps({"dtypes": sorted(seen), "distributed_type": kind}))
    return code


def table(results: list[dict]) -> str:
    header = f"{'case':<12} {'status':<8} {'type':<10} {'steps':>5} {'finite':>6} {'val_acc':>7} {'val_loss':>8} {'dtypes':<18} "
    header += f"{'peak_mb':>8} {'secs':>6} reload"
    lines = [header]
    for r in results:
        if r["status"] != "ok":
            lines.append(f"{r['case']:<12} {r['status']}")
            continue
        v, kind = r["validation"], r["distributed_type"] or "?"
        lines.append(
            f"{r['case']:<12} {r['status']:<8} {kind:<10} {r['global_step']:>5} {str(r['losses_finite']):>6} "
            f"{v['accuracy']:>7.3f} {v['loss']:>8.4f} {','.join(r['linear_output_dtypes']):<18} {r['peak_memory_mb']:>8.1f} "
            f"{r['seconds']:>6.1f} {r['reloads']}"
        )
    return "\n".join(lines)


def environment() -> dict:
    import accelerate
    import torch
    import transformers

    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    versions = {"torch": torch.__version__, "transformers": transformers.__version__, "accelerate": accelerate.__version__}
    return {**versions, "gpu": gpu}


def main() -> int:
    if sys.argv[1:2] == ["--worker"]:
        return worker(sys.argv[2:])
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", default=",".join(CASES), help=f"comma-separated, of: {', '.join(CASES)}")
    parser.add_argument("--out", default="gpu_checks", help="folder for the tiny models, runs, logs and gpu_checks.json")
    args = parser.parse_args()
    names = [c.strip() for c in args.cases.split(",") if c.strip()]
    unknown = [c for c in names if c not in CASES]
    if unknown:
        parser.error(f"unknown case(s) {', '.join(unknown)}; choose from {', '.join(CASES)}")
    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    sources = {"bert": out / "tiny-bert", "bert-data": out / "sentiment.csv", "vit": out / "tiny-vit", "vit-data": out / "digits"}
    if not sources["bert"].exists():
        tiny_bert(sources["bert"])
        sentiment_csv(sources["bert-data"])
    if any(CASES[n].model == "vit" for n in names) and not sources["vit"].exists():
        from hftl.builtin import write_digits_imagefolder

        tiny_vit(sources["vit"])
        write_digits_imagefolder(sources["vit-data"], per_class=12)
    results = []
    for name in names:
        results.append(run_case(name, CASES[name], out, sources))
        print(table(results[-1:]).splitlines()[-1], flush=True)
    report = {"environment": environment(), "results": results}
    (out / "gpu_checks.json").write_text(json.dumps(report, indent=2))
    print(f"\n{json.dumps(report['environment'])}\n{table(results)}\n(details: {out / 'gpu_checks.json'})")
    return 0 if all(r["status"] == "ok" or r["status"].startswith("skipped") for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
