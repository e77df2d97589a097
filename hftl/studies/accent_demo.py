"""The speech-recognition half of `hftl demo --task speech`: Whisper base on an accent it was not fine-tuned on.

Three numbers on the same held-out accent's test clips (speakers never heard in any training):

1. **zero-shot**: the pretrained checkpoint as it is, at its own 30-second window;
2. **other accents**: the decoder fine-tuned (head_only: the encoder frozen, its outputs cached after the
   first epoch) on clips of several other English accents;
3. **a few target clips**: the same, on a few dozen clips of the held-out accent itself.

Fine-tuned runs use `model.window_seconds` (clips are short), which cuts the encoder's cost about
tenfold; the zero-shot score keeps the full window, where the pretrained model is at its best (a cut
window makes the untrained decoder ramble). Each run is an ordinary run folder, reused when it is finished.

Example:
    >>> rows = accent_study("runs/demo-speech")  # doctest: +SKIP
"""

from __future__ import annotations

import copy
import json
import time
from pathlib import Path
from typing import Any

from hftl.config import load_config
from hftl.run_folder.layout import read_metrics
from hftl.utils.errors import HftlError

ACCENTS = "builtin:spoken-accents"
ASR_CONFIG: dict[str, Any] = {
    "task": "speech-recognition",
    "model": {"name_or_path": "builtin:whisper-base", "window_seconds": 5},
    "data": {
        "train": f"{ACCENTS}/source", "test": f"{ACCENTS}/target/test", "language": "en", "task": "transcribe",
        "augment": False,
    },
    "strategy": {"name": "head_only"},
    "train": {
        "epochs": 2, "batch_size": 8, "learning_rate": 1e-4, "head_learning_rate": 1e-4, "generation_max_length": 48,
        "metric_for_best": "wer", "report_to": "none",
    },
}  # fmt: skip
ARMS = {
    "other accents": {"data": {"max_train_samples": 240}},
    "a few target clips": {"data": {"train": f"{ACCENTS}/target/train", "validation_split": 0.2}, "train": {"epochs": 4}},
}


def accent_study(output_dir: str | Path, epochs: int | None = None) -> list[dict[str, Any]]:
    """Zero-shot, other-accent and few-target-clip WER of Whisper base on the held-out accent; written to
    `output_dir/speech-recognition.{json,md}` and returned as table rows."""
    from hftl.runs.inference import evaluate_checkpoint

    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    rows = []
    zero_shot = _config(out / "asr-zero-shot", {"model": {"window_seconds": None}}, epochs)
    metrics = _cached(out / "asr-zero-shot" / "metrics.json", lambda: evaluate_checkpoint(zero_shot, zero_shot.data.test))
    rows.append(_row("zero-shot (no training)", "-", metrics, metrics["seconds"]))
    for name, changes in ARMS.items():
        cfg = _config(out / f"asr-{name.replace(' ', '-')}", changes, epochs)
        result = _finished_or_train(cfg)
        rows.append(_row(f"decoder fine-tuned on {name}", result["train_examples"], result["test"], result["seconds"]))
    (out / "speech-recognition.json").write_text(json.dumps(rows, indent=2))
    (out / "speech-recognition.md").write_text(format_rows(rows) + "\n")
    return rows


def format_rows(rows: list[dict[str, Any]]) -> str:
    """The accent table in markdown."""
    lines = [
        "| Whisper base | training clips | target-accent WER | target-accent CER | seconds |",
        "|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(f"| {r['model']} | {r['training clips']} | {r['wer']:.3f} | {r['cer']:.3f} | {r['seconds']:.0f} |")
    return "\n".join(lines)


def _config(run_dir: Path, changes: dict[str, Any], epochs: int | None) -> Any:
    raw = copy.deepcopy(ASR_CONFIG)
    for section, values in changes.items():
        raw[section].update(values)
    if epochs is not None and "epochs" not in changes.get("train", {}):  # an arm's own epochs stand
        raw["train"]["epochs"] = epochs
    raw["output_dir"] = str(run_dir)
    return load_config(raw)


def _cached(path: Path, compute: Any) -> dict[str, Any]:
    if path.is_file():
        return json.loads(path.read_text())
    start = time.perf_counter()
    metrics = {**compute(), "seconds": time.perf_counter() - start}
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(metrics, indent=2))
    return metrics


def _finished_or_train(cfg: Any) -> dict[str, Any]:
    from hftl.runs.finetune import run

    run_dir = Path(cfg.output_dir)
    if not (run_dir / "metrics.json").is_file():
        run(cfg)
    metrics = read_metrics(run_dir)
    if not metrics.get("test"):
        raise HftlError(f"{run_dir}/metrics.json has no test metrics; delete the folder to redo the run")
    return {"test": metrics["test"], "train_examples": metrics["data"]["train_examples"], "seconds": metrics["train_seconds"]}


def _row(model: str, clips: Any, metrics: dict[str, Any], seconds: float) -> dict[str, Any]:
    return {"model": model, "training clips": clips, "wer": metrics["wer"], "cer": metrics["cer"], "seconds": seconds}
