"""What a finished run leaves: `model/` (pipeline-ready), `adapter/` (LoRA), the model card, metrics.

Directories are written beside their final name and renamed into place, so a crash never leaves a
half-written `model/` where a reader would trust it.

Example:
    >>> export_model(model, processor, run_dir, get_strategy("lora"))   # doctest: +SKIP
    >>> pipeline("image-classification", model=str(run_dir / "model"))  # doctest: +SKIP
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from huggingface_hub import EvalResult, ModelCard, ModelCardData
from torch import nn

from hftl.config import PIPELINE_TASKS, Config, best_metric_name, metric_names
from hftl.models.strategies import Strategy, get_strategy
from hftl.run_folder.layout import CARD_FILE, EXAMPLES_FILE, METRICS_FILE, MODEL_DIR
from hftl.utils.faults import IN_EXPORT, disk_full, fault
from hftl.utils.files import atomic_write_text, disk_full_guard, replace_dir


def export_model(
    model: nn.Module, processor: Any, run_dir: Path, strategy: Strategy, finalize: Callable[[nn.Module], None] | None = None
) -> nn.Module:
    """Save `model/` (pipeline-ready, with the processor) after the strategy's own export step (LoRA:
    `adapter/` written, adapters merged); return the saved model. `finalize` edits the model first (config
    settings, a regression head's scaling), so `adapter/` and `model/` agree."""
    if finalize is not None:
        finalize(model)
    if strategy.export is not None:
        model = strategy.export(model, run_dir)
    tmp = run_dir / f".{MODEL_DIR}.tmp-{uuid.uuid4().hex}"
    intact = f"The run's checkpoints in {run_dir / 'checkpoints'} are intact: resume=true exports from them"
    with disk_full_guard(run_dir, f"{MODEL_DIR}/", tmp, intact):
        model.save_pretrained(str(tmp), safe_serialization=True)
        disk_full("model", tmp)
        processor.save_pretrained(str(tmp))
    fault(IN_EXPORT, 1)
    replace_dir(tmp, run_dir / MODEL_DIR)
    return model


def write_example_tables(run_dir: Path, tables: dict[str, dict[str, Any]]) -> None:
    """eval_examples.json: per split, the evaluator's per-example table, written before metrics.json marks the run
    finished. `hftl compare` resamples it for paired confidence intervals (same examples, two runs)."""
    if tables:
        atomic_write_text(run_dir / EXAMPLES_FILE, json.dumps(tables, separators=(",", ":")))


def write_metrics(run_dir: Path, metrics: dict[str, Any]) -> None:
    """metrics.json, written last and atomically: its presence marks the run as finished."""
    atomic_write_text(run_dir / METRICS_FILE, json.dumps(metrics, indent=2))


def _is_hub_id(name: str) -> bool:
    return not Path(name).expanduser().exists() and name.count("/") <= 1 and not name.startswith((".", "/", "~"))


def _fmt(value: Any) -> str:
    return f"{value:.4f}" if isinstance(value, float) else str(value)


def write_model_card(run_dir: Path, cfg: Config, summary: dict[str, Any]) -> None:
    """README.md: base model, data, strategy and what was frozen, hyperparameters, metrics (model-index)."""
    base = cfg.model.name_or_path
    data_name = cfg.data.train if _is_hub_id(cfg.data.train or "") else Path(cfg.data.train or "data").name
    results = [
        EvalResult(
            task_type=PIPELINE_TASKS.get(cfg.task, cfg.task),  # the Hub's task names are the pipelines'
            task_name=PIPELINE_TASKS.get(cfg.task, cfg.task),
            dataset_type=data_name,
            dataset_name=data_name,
            dataset_split=split,
            metric_type=name,
            metric_value=round(value, 6),
        )
        for split, metrics in (
            ("target_test", summary.get("target_test")),
            ("validation", summary["validation"]),
            ("test", summary.get("test")),
        )
        if metrics
        for name, value in metrics.items()
        if name in metric_names(cfg.task, cfg.data.problem) and name != "loss"
    ]
    card_data = ModelCardData(
        base_model=base if _is_hub_id(base) else None,
        datasets=[cfg.data.train] if _is_hub_id(cfg.data.train or "") else None,
        library_name="transformers",
        pipeline_tag=PIPELINE_TASKS.get(cfg.task, cfg.task),
        tags=["hftl", "transfer-learning", cfg.strategy.name, cfg.task],
        model_name=Path(cfg.output_dir).name,
        eval_results=results or None,
        license=cfg.license or _base_license(base) or "other",
    )
    card = ModelCard.from_template(card_data, template_str="---\n{{ card_data }}\n---\n{{ body }}", body=_card_body(cfg, summary))
    atomic_write_text(run_dir / CARD_FILE, str(card))


def _base_license(base: str) -> str | None:
    """The license a local base checkpoint's own card declares, if any (a Hub id is not fetched for it)."""
    readme = Path(base).expanduser() / "README.md"
    if not readme.is_file():
        return None
    try:
        return ModelCard.load(readme).data.license
    except Exception:  # noqa: BLE001 - a card without valid metadata has no license to take
        return None


def framework_versions() -> dict[str, str]:
    """Versions of the libraries that made the model, for the card (as the Trainer's cards list them)."""
    import importlib.metadata

    out = {}
    for name in ("hftl", "transformers", "torch", "datasets", "accelerate", "peft", "timm"):
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    return out


def _card_data(cfg: Config, s: dict[str, Any]) -> list[str]:
    """The card's data section: sources and sizes, the labels (or targets), the threshold, skipped files."""
    d = s["data"]
    lines = ["", "## Data", "", f"- train: `{d['sources']['train']}` ({d['train_examples']} examples)"]
    lines.append(f"- validation: `{d['sources']['validation']}` ({d['validation_examples']} examples)")
    if d.get("test_examples"):
        lines.append(f"- test: `{d['sources']['test']}` ({d['test_examples']} examples)")
    labels = d["labels"]
    word = {"multi_label": "labels (several per example)", "regression": "regression targets"}.get(cfg.data.problem, "labels")
    if labels:
        lines.append(f"- {word} ({len(labels)}): {', '.join(labels[:50])}{' ...' if len(labels) > 50 else ''}")
    else:  # a speech encoder-decoder: its own tokenizer writes the labels
        prompt = f" with Whisper's prompt for language `{cfg.data.language}`, task `{cfg.data.task or 'transcribe'}`"
        lines.append(f"- transcripts: tokenized by the checkpoint's own tokenizer{prompt if cfg.data.language else ''}")
    if cfg.data.problem == "multi_label" and s.get("decision_threshold") is not None:
        lines.append(f"- decision threshold (chosen on validation; in `config.json`): {s['decision_threshold']}")
    if d["skipped_total"]:
        lines.append(f"- skipped unreadable or non-matching files: {d['skipped_total']} (listed in metrics.json)")
    return lines


def _adaptation_lines(cfg: Config, adapt: dict[str, Any] | None) -> list[str]:
    """The card's lines on domain adaptation: the method, the target data, the shift before and after."""
    if not adapt:
        return []
    lines = ["", f"Domain adaptation: `adapt.method={cfg.adapt.method}` to `{cfg.data.target}` (unlabelled)."]
    if adapt.get("shift_before") is not None:
        lines.append(
            f"Proxy A-distance between source validation and target at the head's input (0: alike, 2: apart): "
            f"{adapt['shift_before']:.3f} before training, {adapt.get('shift_after', float('nan')):.3f} after."
        )
    return lines


def _card_body(cfg: Config, s: dict[str, Any]) -> str:
    st, t = cfg.strategy, cfg.train
    name = Path(cfg.output_dir).name
    lines = [
        f"# {name}",
        "",
        f"`{cfg.model.name_or_path}` fine-tuned for **{cfg.task}** with hftl "
        f"using the **{st.name}** strategy"
        + (f" after {st.head_warmup_epochs} head-only warm-up epoch(s)." if st.head_warmup_epochs else "."),
    ]
    lines += _card_data(cfg, s)
    lines += [
        "",
        "## Strategy",
        "",
        f"- strategy: `{st.name}`; {s['strategy']['frozen_description']}",
        f"- trainable parameters: {s['trainable_parameters']:,} of {s['total_parameters']:,} "
        f"({100 * s['trainable_parameters'] / max(s['total_parameters'], 1):.2f}%)",
        f"- BatchNorm in frozen parts: `{st.batch_norm}`",
    ]
    card = get_strategy(st.name).card
    lines += card(st, s) if card is not None else []
    lines += ["", "| phase | epochs | trains |", "|---|---|---|"]
    lines += [f"| {p['name']} | {p['epochs']} | {p['trains']} |" for p in s["strategy"]["phases"]]
    lines += ["", "| part | trainable | total |", "|---|---:|---:|"]
    lines += [f"| {part} | {tr:,} | {tot:,} |" for part, tr, tot in s["strategy"]["parts"]]
    lines += ["", "## Training hyperparameters", "", "| key | value |", "|---|---|"]
    for key in (
        "epochs", "batch_size", "learning_rate", "head_learning_rate", "layer_lr_decay", "weight_decay",
        "scheduler", "warmup_ratio", "gradient_accumulation_steps", "max_grad_norm", "mixed_precision", "seed",
    ):  # fmt: skip
        value = getattr(t, key)
        found = (s.get("learning_rates_found") or {}).get(key.removesuffix("_learning_rate") if value == "auto" else "")
        lines.append(f"| {key} | {value} |" if found is None else f"| {key} | {value}: {found:g} |")
    lines.append(f"| augment | {cfg.data.augment} |")
    if s.get("launch"):
        lines.append(f"| launch | {s['launch']['text']} |")
    lines += ["", "## Results", "", f"Best epoch: {s['best_epoch']} (by validation {best_metric_name(cfg)}).", ""]
    metric_keys = [k for k in metric_names(cfg.task, cfg.data.problem) if k in (s.get("validation") or {})]
    lines += ["| split | " + " | ".join(metric_keys) + " |", "|---|" + "---|" * len(metric_keys)]
    for split in ("target_test", "validation", "test"):  # the target domain first: what adaptation is for
        m = s.get(split)
        if m:
            lines.append(f"| {split} | " + " | ".join(_fmt(m[k]) for k in metric_keys) + " |")
    lines += _adaptation_lines(cfg, s.get("adapt"))
    lines += per_class_table(s.get("per_class"), cfg.data.problem)
    lines += (
        ["", "| epoch | phase | " + " | ".join(k for k in s["history"][0] if k.startswith("eval_")) + " |"]
        if s["history"]
        else []
    )
    if s["history"]:
        keys = [k for k in s["history"][0] if k.startswith("eval_")]
        lines.append("|---|---|" + "---|" * len(keys))
        lines += [f"| {h['epoch']} | {h['phase']} | " + " | ".join(_fmt(h[k]) for k in keys) + " |" for h in s["history"]]
    lines += [
        "",
        "## Use",
        "",
        "```python",
        "from transformers import pipeline",
        f'pipe = pipeline("{PIPELINE_TASKS.get(cfg.task, cfg.task)}", model="{name}/model")',
        "```",
        "",
        "Training time: {:.1f} s, {:.1f} samples/s, peak memory {:.0f} MiB.".format(
            s["train_seconds"], s["samples_per_second"], s["peak_memory_mb"]
        ),
        "",
        "## Framework versions",
        "",
    ]
    lines += [f"- {name} {version}" for name, version in framework_versions().items()]
    return "\n".join(lines)


def per_class_table(per_class: dict[str, Any] | None, problem: str, limit: int = 50) -> list[str]:
    """Markdown lines: per class (label, target) of the best weights, validation then test.

    Example:
        >>> per_class_table({"validation": {"cat": {"f1": 0.667, "support": 2}}}, "single_label")[2]
        '| split | class | f1 | support |'
    """
    lines: list[str] = []
    for split, rows in (per_class or {}).items():
        if not rows:
            continue
        keys = list(next(iter(rows.values())))
        what = {"regression": "target", "multi_label": "label"}.get(problem, "class")
        if not lines:
            lines += ["", f"Per {what} (the best weights):", "| split | " + " | ".join([what, *keys]) + " |"]
            lines.append("|---|---|" + "---:|" * len(keys))
        for name, row in list(rows.items())[:limit]:
            lines.append(f"| {split} | {name} | " + " | ".join(_fmt(row[k]) if row[k] is not None else "-" for k in keys) + " |")
    return lines
