"""Run configuration: dataclasses that mirror the YAML, dotted overrides, validation.

`schema` holds the dataclasses and the names they allow, `keys` turns YAML and `key=value` overrides
into them, `checks` refuses bad values; this module puts them together.

Example:
    >>> cfg = load_config({"model": {"name_or_path": "m"}, "data": {"train": "d"}}, ["train.epochs=2"])
    >>> cfg.train.epochs
    2
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from hftl.config.checks import check_repo_id, metric_names, tracker_names, validate
from hftl.config.keys import check_conflicts, from_dict, override_items, set_value
from hftl.config.schema import (
    ADAPT_METHODS,
    CLASSIFICATION_TASKS,
    KEY_ALIASES,
    LOWER_IS_BETTER,
    PIPELINE_TASKS,
    PROBLEM_METRICS,
    PROBLEMS,
    RUN_CONTROL_KEYS,
    STRATEGIES,
    TASK_METRICS,
    TASKS,
    TRACKERS,
    AdaptConfig,
    Config,
    DataConfig,
    LoraConfig,
    ModelConfig,
    StrategyConfig,
    TrainConfig,
)
from hftl.utils.errors import ConfigError

__all__ = [
    "ADAPT_METHODS", "AdaptConfig", "CLASSIFICATION_TASKS",
    "KEY_ALIASES", "LOWER_IS_BETTER", "PIPELINE_TASKS", "PROBLEMS", "PROBLEM_METRICS",
    "RUN_CONTROL_KEYS", "STRATEGIES", "TASKS", "TASK_METRICS",
    "TRACKERS", "Config", "DataConfig", "LoraConfig", "ModelConfig", "StrategyConfig", "TrainConfig", "best_metric_name",
    "better", "check_repo_id", "config_diff", "load_config", "metric_names", "set_value", "tracker_names", "validate",
]  # fmt: skip


def load_config(
    source: str | Path | dict[str, Any] | Config | None = None,
    overrides: list[str] | dict[str, Any] | None = None,
) -> Config:
    """Build a validated `Config` from a YAML path, a dict or a Config, then apply overrides.

    Overrides are `key=value` strings (CLI) or a dict (Python). Keys are dotted (`train.epochs`),
    a unique field name (`epochs`), or a section shorthand (`strategy=lora`).

    Example:
        >>> load_config("configs/vision/vit-lora.yaml", ["train.epochs=1", "strategy=full"])  # doctest: +SKIP
    """
    origin = "the config"
    items = override_items(overrides)
    # The task settles aliases (text_column is the transcript in speech recognition): an override's, else the source's.
    task = next((str(v) for k, v in reversed(items) if k.strip() == "task"), None)
    if isinstance(source, Config):
        cfg = from_dict(source.to_dict(), origin, task)
    elif isinstance(source, dict):
        cfg = from_dict(source, origin, task)
    elif source is None:
        cfg = Config()
    else:
        path = Path(source)
        origin = str(path)
        if not path.is_file():
            raise ConfigError(f"config file {path} does not exist (pass a YAML file, e.g. configs/vision/vit-full.yaml)")
        try:
            raw = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as e:
            raise ConfigError(f"{path} is not valid YAML: {e}") from None
        if not isinstance(raw, dict):
            raise ConfigError(f"{path} must hold a mapping of config keys, got {type(raw).__name__}")
        cfg = from_dict(raw, origin, task)
    task = task or cfg.task
    check_conflicts([key for key, _ in items], task, "the overrides")
    for key, value in items:
        set_value(cfg, key, value, from_text=isinstance(value, str) and isinstance(overrides, list), task=task)
    validate(cfg)
    return cfg


def config_diff(saved: Config, now: Config) -> list[str]:
    """`key (old -> new)` for every setting that differs, run-control keys (resume, overwrite) aside.

    Example:
        >>> a = load_config({"model": {"name_or_path": "m"}, "data": {"train": "d"}})
        >>> config_diff(a, load_config(a, ["epochs=5"]))
        ['train.epochs (3 -> 5)']
    """
    diffs: list[str] = []

    def walk(a: dict, b: dict, prefix: str) -> None:
        for key in a:
            dotted = f"{prefix}{key}"
            if isinstance(a[key], dict) and isinstance(b[key], dict) and a[key].keys() == b[key].keys():
                walk(a[key], b[key], f"{dotted}.")  # a section (or a mapping value such as class_weights)
            elif a[key] != b[key] and dotted not in RUN_CONTROL_KEYS and not _resolved(dotted, a[key], b[key]):
                diffs.append(f"{dotted} ({a[key]!r} -> {b[key]!r})")

    walk(saved.to_dict(), now.to_dict(), "")
    return diffs


def _resolved(key: str, a: Any, b: Any) -> bool:
    """data.problem=auto against the shape it resolved to: the same data resolves it the same way."""
    return key == "data.problem" and "auto" in (a, b)


def better(metric: str, a: float, b: float) -> bool:
    """Whether `a` is a better value of `metric` than `b` (error rates and loss: lower is better).

    Example:
        >>> better("wer", 0.2, 0.3), better("f1", 0.2, 0.3)
        (True, False)
    """
    return a < b if metric in LOWER_IS_BETTER else a > b


def best_metric_name(cfg: Config) -> str:
    """train.metric_for_best, or the default metric of the task and label shape when it is null."""
    return cfg.train.metric_for_best or metric_names(cfg.task, cfg.data.problem)[0]
