"""Medians, ratios and targets per case; the markdown table; the machine description.

Ratios read "how much better is hftl": speedup = Trainer seconds / hftl seconds (above 1: hftl is faster),
memory ratio = hftl MB / Trainer MB (below 1: hftl uses less), accuracy delta = hftl - Trainer in points.

Example:
    >>> median([3.0, 1.0, 2.0])
    2.0
    >>> target_of("head_only")
    'later epochs >= 10x, accuracy within 1 point'
"""

from __future__ import annotations

import os
import platform
import statistics
import subprocess
from importlib import metadata
from pathlib import Path
from typing import Any

# The targets (hftl vs Trainer, same machine, same run).
SPEEDUP_TARGET = {"head_only": 10.0, "freeze": 3.0, "full": 1.0, "lora": 1.0}
ACCURACY_POINTS = 1.0
SIDES = ("hftl", "trainer")


def median(values: list[float]) -> float | None:
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def target_of(strategy: str) -> str:
    if strategy in ("full", "lora"):
        return "all epochs >= 1.0x, memory <= 1.0x, accuracy within 1 point"
    return f"later epochs >= {SPEEDUP_TARGET[strategy]:g}x, accuracy within 1 point"


def side_summary(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Medians over the repeats of one side of one case."""
    ok = [r for r in runs if "error" not in r and r.get("epoch_seconds")]
    first = median([r["epoch_seconds"][0] for r in ok])
    later = median([median(r["epoch_seconds"][1:]) for r in ok if len(r["epoch_seconds"]) > 1])
    total = median([sum(r["epoch_seconds"]) for r in ok])
    n_train = ok[0]["train_examples"] if ok else None
    return {
        "repeats": len(ok),
        "errors": [r["error"].strip().splitlines()[-1] for r in runs if "error" in r],
        "first_epoch_s": first,
        "later_epoch_s": later,
        "all_epochs_s": total,
        "samples_per_s_later": n_train / later if n_train and later else None,
        "samples_per_s_first": n_train / first if n_train and first else None,
        "peak_rss_mb": median([r["peak_rss_mb"] for r in ok]),
        "peak_rss_training_mb": median([r.get("peak_rss_training_mb") for r in ok]),
        "peak_gpu_mb": median([r["peak_gpu_mb"] for r in ok]),
        "accuracy": median([r["accuracy"] for r in ok]),
        "trainable_parameters": ok[0]["trainable_parameters"] if ok else None,
        "epoch_source": ok[0]["epoch_source"] if ok else None,
        "feature_cache": ok[0].get("feature_cache") if ok else None,
        "train_examples": n_train,
    }


# The memory compared, first found on both sides: GPU max allocated; else the peak RSS up to the end of
# training (hftl's export, model card and plots come after, and the Trainer side does none of them);
# else, for results without it, the whole process's peak RSS.
MEMORY_MEASURES = ("peak_gpu_mb", "peak_rss_training_mb", "peak_rss_mb")
MEMORY_NAMES = {
    "peak_gpu_mb": "GPU max allocated",
    "peak_rss_training_mb": "peak RSS up to the end of training",
    "peak_rss_mb": "peak process RSS",
}


def _ratio(a: float | None, b: float | None) -> float | None:
    return a / b if a is not None and b else None


def case_summary(case: str, strategy: str, runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Both sides' medians, the ratios, and whether the issue's targets are met."""
    h, t = (side_summary([r for r in runs if r["side"] == side]) for side in SIDES)
    same = h["trainable_parameters"] == t["trainable_parameters"]  # the frozen sets agree
    memory = next(m for m in MEMORY_MEASURES if h[m] is not None and t[m] is not None or m == "peak_rss_mb")
    summary = {
        "case": case,
        "strategy": strategy,
        "hftl": h,
        "trainer": t,
        "speedup_first": _ratio(t["first_epoch_s"], h["first_epoch_s"]),
        "speedup_later": _ratio(t["later_epoch_s"], h["later_epoch_s"]),
        "speedup_all": _ratio(t["all_epochs_s"], h["all_epochs_s"]),
        "memory_measure": memory,
        "memory_ratio": _ratio(h[memory], t[memory]),
        "accuracy_delta_points": None if None in (h["accuracy"], t["accuracy"]) else (h["accuracy"] - t["accuracy"]) * 100,
        "same_trainable_parameters": same if h["repeats"] and t["repeats"] else None,
        "target": target_of(strategy),
    }
    summary["target_met"] = _target_met(summary)
    return summary


def _target_met(s: dict[str, Any]) -> bool | None:
    full_like = s["strategy"] in ("full", "lora")
    speed = s["speedup_all"] if full_like else s["speedup_later"]
    checks = [speed, s["accuracy_delta_points"]] + ([s["memory_ratio"]] if full_like else [])
    if any(c is None for c in checks):
        return None
    ok = speed >= SPEEDUP_TARGET[s["strategy"]] and abs(s["accuracy_delta_points"]) <= ACCURACY_POINTS
    return ok and (not full_like or s["memory_ratio"] <= 1.0)


def _f(value: float | None, digits: int = 2, suffix: str = "") -> str:
    if value is None:
        return "-"
    if abs(value) >= 100:
        return f"{value:.0f}{suffix}"
    return f"{value:.{digits}f}{suffix}"


def markdown_table(summaries: list[dict[str, Any]]) -> str:
    """One row per case: epoch times, speedups, throughput, memory, accuracy, target."""
    head = (
        "| case | epoch 1 s (hftl / Trainer) | later epochs s (hftl / Trainer) | speedup later | speedup all epochs "
        "| samples/s later (hftl / Trainer) | peak MB (hftl / Trainer) | memory ratio | process peak RSS MB (hftl / Trainer) "
        "| accuracy (hftl / Trainer) "
        "| Δ points | same trainable | target met |"
    )
    lines = [head, "|" + "---|" * head.count(" | ") + "---|"]
    for s in summaries:
        h, t = s["hftl"], s["trainer"]
        mem = s["memory_measure"]
        met = {True: "yes", False: "no", None: "-"}[s["target_met"]]
        errors = "; ".join(h["errors"] + t["errors"])
        lines.append(
            f"| {s['case']} | {_f(h['first_epoch_s'])} / {_f(t['first_epoch_s'])} "
            f"| {_f(h['later_epoch_s'])} / {_f(t['later_epoch_s'])} | {_f(s['speedup_later'], suffix='x')} "
            f"| {_f(s['speedup_all'], suffix='x')} | {_f(h['samples_per_s_later'], 0)} / {_f(t['samples_per_s_later'], 0)} "
            f"| {_f(h[mem], 0)} / {_f(t[mem], 0)} | {_f(s['memory_ratio'])} "
            f"| {_f(h['peak_rss_mb'], 0)} / {_f(t['peak_rss_mb'], 0)} "
            f"| {_f(h['accuracy'], 3)} / {_f(t['accuracy'], 3)} | {_f(s['accuracy_delta_points'], 1)} "
            f"| {({True: 'yes', False: 'NO', None: '-'})[s['same_trainable_parameters']]} | {met}"
            + (f" (failed: {errors[:120]})" if errors else "")
            + " |"
        )
    return "\n".join(lines)


def machine() -> dict[str, Any]:
    """CPU, cores, memory, GPU and library versions of this machine."""
    import torch

    cpu = _proc_field("/proc/cpuinfo", "model name") or platform.processor() or platform.machine()
    mem_kb = _proc_field("/proc/meminfo", "MemTotal")
    memory = f"{int(mem_kb.split()[0]) / 2**20:.0f} GiB" if mem_kb else "unknown"
    versions = {}
    for name in ("torch", "transformers", "accelerate", "peft", "datasets", "tokenizers", "huggingface_hub"):
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    gpu = None
    if torch.cuda.is_available():
        gpu = {"name": torch.cuda.get_device_name(0), "count": torch.cuda.device_count(), "cuda": torch.version.cuda}
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "usable_cores": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "memory": memory,
        "load_average_at_start": os.getloadavg() if hasattr(os, "getloadavg") else None,
        "gpu": gpu,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "versions": versions,
        "hftl_commit": _git_commit(),
    }


def _proc_field(path: str, name: str) -> str | None:
    """The value of the first `name: value` line of a /proc file, or None (no /proc: not Linux)."""
    try:
        with open(path) as f:
            return next((line.split(":", 1)[1].strip() for line in f if line.startswith(name)), None)
    except OSError:
        return None


def _git_commit() -> str | None:
    repo = Path(__file__).resolve().parents[1]
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=repo, capture_output=True, text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "hftl"], cwd=repo, capture_output=True, text=True).stdout.strip()
        return commit + (" (hftl/ modified)" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return None


def describe_machine(m: dict[str, Any]) -> str:
    gpu = f"{m['gpu']['name']} x{m['gpu']['count']} (CUDA {m['gpu']['cuda']})" if m["gpu"] else "none"
    load = ", ".join(f"{x:.2f}" for x in m["load_average_at_start"]) if m["load_average_at_start"] else "-"
    v = m["versions"]
    libs = ", ".join(f"{k} {val}" for k, val in v.items() if val)
    return (
        f"- CPU: {m['cpu']}, {m['usable_cores']} usable cores of {m['cores']}, {m['memory']} RAM "
        f"(load average at start: {load})\n- GPU: {gpu}\n- Python {m['python']}, {libs}\n- hftl commit: {m['hftl_commit']}"
    )


def _memory_names(summaries: list[dict[str, Any]]) -> str:
    used = dict.fromkeys(s["memory_measure"] for s in summaries) or {"peak_rss_training_mb": None}
    return ", ".join(MEMORY_NAMES[m] for m in used)


def markdown_report(result: dict[str, Any]) -> str:
    """The whole results.md: command, machine, settings, table, notes."""
    settings = result["suite_settings"]
    sizes = ", ".join(f"{name} {n_train} / {n_val}" for name, (n_train, n_val) in settings["data_sizes"].items())
    return "\n".join(
        [
            f"# hftl vs transformers.Trainer: suite `{result['suite']}`",
            "",
            f"Command: `{result['command']}`  ",
            f"Started {result['started']}, {result['repeats']} repeat(s) per side, alternating hftl / Trainer.",
            "",
            "## Machine",
            describe_machine(result["machine"]),
            "",
            "## Settings",
            f"- {settings['description']}",
            f"- epochs {settings['epochs']}, batch size {settings['batch_size']}, precision {result['mixed_precision']}, "
            f"dataloader workers {settings['num_workers']}, torch threads {settings['threads'] or 'default'}, "
            f"augmentation off, hftl feature cache: {result['feature_cache']}",
            f"- learning rates: {', '.join(f'{k} {v:g}' for k, v in settings['learning_rates'].items())}",
            f"- data (train / validation examples): {sizes}",
            "",
            "## Results (medians over repeats)",
            "",
            "Speedup = Trainer seconds / hftl seconds (> 1: hftl faster); memory ratio = hftl / Trainer "
            f"({_memory_names(result['summary'])}; < 1: hftl uses less); the process peak RSS includes what comes "
            "after training (hftl's export, model card and plots); "
            "Δ points = hftl - Trainer final validation accuracy.",
            "",
            markdown_table(result["summary"]),
            "",
        ]
    )
