"""What a run folder holds, and the rules for claiming, reading and reusing one.

A run folder is claimed by `config.yaml` (written when training starts) and marked finished by
`metrics.json` (written last, after `model/` and the card). A study folder is claimed by `study.json`.
A finished run is never overwritten unless asked; an unfinished one resumes only with the settings it
was started with.

Example:
    >>> resumed = prepare_run_dir(cfg, Path(cfg.output_dir))   # doctest: +SKIP
    >>> cfg, model_dir = load_run("runs/vit-lora")              # doctest: +SKIP
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import yaml

from hftl.config import Config, config_diff, load_config
from hftl.run_folder.lock import LOCK_FILE
from hftl.utils.errors import ConfigError, HftlError

CONFIG_FILE = "config.yaml"  # the resolved config: its presence makes a folder a run
METRICS_FILE = "metrics.json"  # written last: its presence marks the run as finished
CARD_FILE = "README.md"
MODEL_DIR = "model"
ADAPTER_DIR = "adapter"
CHECKPOINTS_DIR = "checkpoints"
PLOTS_DIR = "plots"
STUDY_FILE = "study.json"  # marks a study folder (`hftl compare`)
EXAMPLES_FILE = "eval_examples.json"  # per split, one row per evaluated example: what a study's bootstrap resamples


def is_finished(run_dir: Path) -> bool:
    return (Path(run_dir) / METRICS_FILE).exists()


def prepare_run_dir(cfg: Config, run_dir: Path) -> bool:
    """Refuse to clobber a run; returns True when an unfinished run will be resumed."""
    finished = is_finished(run_dir)
    is_run = (run_dir / CONFIG_FILE).exists()
    has_other = run_dir.is_dir() and any(p.name != LOCK_FILE for p in run_dir.iterdir()) and not is_run
    if has_other:
        raise HftlError(f"output_dir {run_dir} is not empty and holds no hftl run; choose a new or empty folder")
    if cfg.overwrite and is_run:
        for entry in run_dir.iterdir():  # all but the lock this process holds
            if entry.name != LOCK_FILE:
                shutil.rmtree(entry) if entry.is_dir() and not entry.is_symlink() else entry.unlink()
    elif finished:
        raise HftlError(
            f"output_dir {run_dir} already holds a finished run ({run_dir / METRICS_FILE}). "
            "Choose another output_dir, or pass overwrite=true to replace it"
        )
    elif is_run and not cfg.resume:
        raise HftlError(
            f"output_dir {run_dir} holds an unfinished run. Pass resume=true to continue it from its last checkpoint, "
            "or overwrite=true to start again"
        )
    run_dir.mkdir(parents=True, exist_ok=True)
    if cfg.resume and is_run:
        diffs = saved_config_diff(cfg, run_dir)
        if diffs:
            raise ConfigError(
                f"resume=true, but the config differs from the run in {run_dir}: {', '.join(diffs)}. "
                "Resume with the same settings, or start a new output_dir"
            )
        return True
    if cfg.resume:
        print(f"resume=true but {run_dir} holds no run yet: starting from the beginning")
    return False


def saved_config(run_dir: str | Path) -> Config:
    """The resolved config a run was started with."""
    return load_config(yaml.safe_load((Path(run_dir) / CONFIG_FILE).read_text()))


def saved_config_diff(cfg: Config, run_dir: Path) -> list[str]:
    """`key (saved -> now)` for each setting in which `cfg` differs from the run's own config (run-control keys aside).

    The one same-config check: a resumed run and a study's reused run must have been made this way.
    """
    return config_diff(saved_config(run_dir), cfg)


def load_run(run_dir: str | Path) -> tuple[Config, Path]:
    """The resolved config and `model/` folder of a finished run, or a clear error."""
    run_dir = Path(run_dir)
    model_dir = run_dir / MODEL_DIR
    if not (run_dir / CONFIG_FILE).is_file() or not model_dir.is_dir():
        raise HftlError(f"{run_dir} is not a finished hftl run (expected config.yaml and model/); train one with `hftl train`")
    return saved_config(run_dir), model_dir


def read_metrics(run_dir: str | Path) -> dict[str, Any]:
    """A finished run's metrics.json: final metrics, history, data and strategy summary."""
    return json.loads((Path(run_dir) / METRICS_FILE).read_text())


def read_tables(run_dir: str | Path) -> dict[str, Any] | None:
    """A finished run's eval_examples.json (per split, one row per example), or None for a run from before it."""
    path = Path(run_dir) / EXAMPLES_FILE
    return json.loads(path.read_text()) if path.exists() else None
