"""One side (hftl or Trainer) of one case, run in a process of its own so its peak memory is its own.

`python -m benchmarks.worker SPEC.json` (or a forkserver child calling `main`) reads the case settings, runs
the side, and writes a result JSON: per-epoch training seconds, final validation accuracy, trainable
parameters, peak resident memory of the process (`ru_maxrss`) and, with CUDA, the GPU's max allocated.

The hftl side goes through the Python API (`hftl.finetune`), as a notebook user would. Its epoch times
come from `metrics.json` (`history[i]["epoch_seconds"]`) where hftl records them; otherwise from a timer
wrapped around hftl's trainer (the start of each epoch's training mode to the start of its validation).

Heavy imports happen inside functions, so the launcher can import this module cheaply; the forkserver
preloads them once (PRELOAD) so each run does not pay for them again.
"""

from __future__ import annotations

import dataclasses
import json
import os
import resource
import sys
import time
import traceback
from pathlib import Path
from typing import Any

from benchmarks.measure import peak_rss_mb, sync

# What a run imports: loaded once in the forkserver, inherited by every run it forks.
PRELOAD = [
    "torch",
    "transformers",
    "peft",
    "datasets",
    "hftl.runs.finetune",
    "hftl.data.modalities.image",
    "hftl.data.modalities.text",
    "hftl.data.modalities.audio",
    "hftl.data.modalities.speech",
    "hftl.studies.compare_report",
    "benchmarks.baseline",
]


class FallbackEpochTimer:
    """Epoch training time of an hftl run that does not record it: from each epoch's `set_train_mode`
    (called once at the start of every epoch) to the start of that epoch's validation."""

    def __init__(self) -> None:
        self.starts: list[float] = []
        self.ends: list[float] = []

    def install(self, module: Any) -> bool:
        """Wrap the module's functions; False when they are not there (a trainer that changed shape)."""
        mode, evaluate = getattr(module, "set_train_mode", None), getattr(module, "evaluate_loop", None)
        if mode is None or evaluate is None:
            return False

        def set_train_mode(*args: Any, **kwargs: Any) -> Any:
            out = mode(*args, **kwargs)
            sync()
            self.starts.append(time.perf_counter())
            return out

        def evaluate_loop(*args: Any, **kwargs: Any) -> Any:
            if kwargs.get("desc") == "validation" and len(self.ends) < len(self.starts):
                sync()
                self.ends.append(time.perf_counter())
            return evaluate(*args, **kwargs)

        module.set_train_mode, module.evaluate_loop = set_train_mode, evaluate_loop
        return True

    def seconds(self) -> list[float]:
        return [end - start for start, end in zip(self.starts, self.ends)]


class TrainingPeak:
    """Peak RSS up to the end of training: read as hftl's `finish_run` (export, model card, plots) starts.

    The Trainer side reads the same in `on_train_end`; its run ends there (it saves nothing), so the two
    figures cover the same work.
    """

    def __init__(self) -> None:
        self.mb: float | None = None

    def install(self, module: Any) -> None:
        finish = getattr(module, "finish_run", None)
        if finish is None:  # an hftl without it: the process peak is the only figure
            return

        def finish_run(*args: Any, **kwargs: Any) -> Any:
            self.mb = peak_rss_mb()
            return finish(*args, **kwargs)

        module.finish_run = finish_run


def hftl_config(s: dict[str, Any], out_dir: Path) -> dict[str, Any]:
    """The hftl config of a case: the same settings as the Trainer side, augmentation off, no trackers."""
    from hftl.config import TrainConfig

    train: dict[str, Any] = {
        "epochs": s["epochs"],
        "batch_size": s["batch_size"],
        "learning_rate": s["learning_rate"],
        "weight_decay": s["weight_decay"],
        "max_grad_norm": s["max_grad_norm"],
        "scheduler": "linear",
        "warmup_ratio": 0.0,
        "mixed_precision": s["mixed_precision"],
        "seed": s["seed"],
        "logging_steps": s["logging_steps"],
        "report_to": "none",
        "metric_for_best": "accuracy",
        "load_best_at_end": False,  # end on the last epoch, as the Trainer side does
        "save_total_limit": 1,  # hftl checkpoints every epoch (no switch to turn it off): keep one
    }
    known = {f.name for f in dataclasses.fields(TrainConfig)}
    if "feature_cache" in known:  # the frozen-prefix cache, where this hftl has it
        train["feature_cache"] = s["feature_cache"]
    if "feature_cache_dir" in known:  # a fresh cache per run: its first epoch pays for filling it
        train["feature_cache_dir"] = str(out_dir / "feature-cache")
    data: dict[str, Any] = {"train": s["train"], "validation": s["validation"], "augment": False, "num_workers": s["num_workers"]}
    if s["task"] == "text-classification":
        data["max_length"] = s["max_length"]
    if s["task"] == "audio-classification":
        data["max_duration_seconds"] = s["max_duration"]
    lora = {"r": s["lora"]["r"], "alpha": s["lora"]["alpha"], "dropout": s["lora"]["dropout"], "target_modules": "auto"}
    return {
        "task": s["task"],
        "model": {"name_or_path": s["model_dir"]},
        "data": data,
        "strategy": {"name": s["strategy"], "trainable_blocks": s["trainable_blocks"], "lora": lora},
        "train": train,
        "output_dir": str(out_dir / "run"),
    }


def run_hftl(s: dict[str, Any], out_dir: Path) -> dict[str, Any]:
    """Train one case with `hftl.finetune`; epoch times, final accuracy and parameter counts."""
    import hftl.training.trainer
    from hftl import finetune

    os.environ["HFTL_FEATURE_CACHE"] = str(out_dir / "feature-cache")  # in case the key is not there but the variable is
    timer = FallbackEpochTimer()
    timer.install(hftl.training.trainer)
    trained = TrainingPeak()
    trained.install(hftl.runs.finetune)
    cfg = hftl_config(s, out_dir)
    result = finetune(cfg)
    metrics = json.loads((result.output_dir / "metrics.json").read_text())
    history = result.history
    if history and all("epoch_seconds" in h for h in history):
        seconds, source = [h["epoch_seconds"] for h in history], "hftl metrics.json history epoch_seconds"
    elif len(timer.seconds()) == len(history):
        seconds, source = timer.seconds(), "timer around hftl.training.trainer (set_train_mode .. validation)"
    else:  # neither: the total training time, spread evenly (first and later epochs then look alike)
        seconds = [result.train_seconds / max(len(history), 1)] * len(history)
        source = "hftl train_seconds / epochs (no per-epoch times available)"
    return {
        "epoch_seconds": seconds,
        "epoch_source": source,
        "accuracy": history[-1]["eval_accuracy"],
        "accuracy_per_epoch": [h["eval_accuracy"] for h in history],
        "train_examples": metrics["data"]["train_examples"],
        "validation_examples": metrics["data"]["validation_examples"],
        "trainable_parameters": result.trainable_parameters,
        "feature_cache": metrics.get("feature_cache") or cfg["train"].get("feature_cache", "not in this hftl"),
        "peak_rss_training_mb": trained.mb,
    }


def _peak_gpu_mb() -> float | None:
    import torch

    if torch.cuda.is_available() and torch.cuda.is_initialized():
        return torch.cuda.max_memory_allocated() / 2**20
    return None


def execute(spec: dict[str, Any]) -> int:
    """Run the side named in `spec`, write its result JSON, return an exit status."""
    out_dir = Path(spec["out_dir"])
    out_dir.mkdir(parents=True, exist_ok=True)
    sys.stdout.flush()
    sys.stderr.flush()
    with open(out_dir / "log.txt", "w") as log:  # the run's own output, kept beside its result
        os.dup2(log.fileno(), 1)
        os.dup2(log.fileno(), 2)
    if os.environ.pop("HFTL_BENCH_NVML_CHECK_SET", None):  # set by run.py for the forkserver, not by the user
        os.environ.pop("PYTORCH_NVML_BASED_CUDA_CHECK", None)
    import torch

    s = spec["settings"]
    if s["threads"]:
        torch.set_num_threads(s["threads"])
    threads_at_start = torch.get_num_threads()
    started = time.perf_counter()
    status = 0
    try:
        if spec["side"] == "hftl":
            result = run_hftl(s, out_dir)
        else:
            from benchmarks.baseline import run_trainer

            result = run_trainer(s, out_dir / "trainer")
    except Exception:  # noqa: BLE001 - reported in the result, the suite goes on with the next run
        traceback.print_exc()
        result, status = {"error": traceback.format_exc(limit=8)}, 1
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    result.update(
        side=spec["side"],
        case=s["case"],
        repeat=spec["repeat"],
        process_seconds=time.perf_counter() - started,
        peak_rss_mb=peak_rss_mb(),  # the whole process, end-of-run work included
        dataloader_workers_peak_rss_mb=children.ru_maxrss / 1024 if s["num_workers"] else None,
        peak_gpu_mb=_peak_gpu_mb(),
        torch_threads=threads_at_start,
        torch_threads_at_end=torch.get_num_threads(),  # a library that changes it would show here
        device=torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu",
        # Importing DeepSpeed (Accelerate's unwrap does when it is installed) makes torch's CUDA check load
        # NVML on every call on a machine without a GPU: it costs the side that did it time per step.
        deepspeed_imported="deepspeed" in sys.modules,
    )
    tmp = Path(spec["result"]).with_suffix(".tmp")
    tmp.write_text(json.dumps(result, indent=1, default=str))
    os.replace(tmp, spec["result"])
    sys.stdout.flush()
    return status


def main(argv: list[str] | None = None) -> int:
    """Entry point: `python -m benchmarks.worker SPEC.json`."""
    args = sys.argv[1:] if argv is None else argv
    return execute(json.loads(Path(args[0]).read_text()))


def forked(spec_path: str) -> None:
    """Target of a forkserver child: run and exit with the run's status."""
    sys.exit(main([spec_path]))


if __name__ == "__main__":
    sys.exit(main())
