"""What `hftl search` varies: a default space per strategy, or the user's own in YAML.

A space maps config keys to distributions:

```yaml
train.learning_rate: {type: float, low: 1.0e-5, high: 1.0e-3, log: true}
strategy.trainable_blocks: {type: int, low: 1, high: 6}
strategy.lora.r: {type: categorical, choices: [4, 8, 16, 32]}
```

Keys are checked against the config schema (any spelling `hftl train` accepts: `learning_rate`,
`train.learning_rate`), so a typo fails before the first trial.

Example:
    >>> sorted(default_space("lora"))
    ['strategy.lora.r', 'train.head_learning_rate', 'train.learning_rate', 'train.warmup_ratio', 'train.weight_decay']
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from hftl.utils.errors import ConfigError

TYPES = ("float", "int", "categorical")
_RATE = {"type": "float", "log": True}
_COMMON = {
    "train.weight_decay": {"type": "float", "low": 1e-6, "high": 0.1, "log": True},
    "train.warmup_ratio": {"type": "float", "low": 0.0, "high": 0.2},
}
DEFAULT_SPACES: dict[str, dict[str, dict[str, Any]]] = {
    "head_only": {"train.head_learning_rate": {**_RATE, "low": 1e-4, "high": 0.3}, **_COMMON},
    "freeze": {
        "train.learning_rate": {**_RATE, "low": 1e-5, "high": 1e-3},
        "train.head_learning_rate": {**_RATE, "low": 1e-4, "high": 0.1},
        "strategy.trainable_blocks": {"type": "int", "low": 1, "high": 4},
        "train.layer_lr_decay": {"type": "float", "low": 0.6, "high": 1.0},
        **_COMMON,
    },
    "lora": {
        "train.learning_rate": {**_RATE, "low": 1e-5, "high": 5e-3},
        "train.head_learning_rate": {**_RATE, "low": 1e-4, "high": 0.1},
        "strategy.lora.r": {"type": "categorical", "choices": [4, 8, 16, 32]},
        **_COMMON,
    },
    "full": {
        "train.learning_rate": {**_RATE, "low": 1e-6, "high": 1e-4},
        "train.head_learning_rate": {**_RATE, "low": 1e-5, "high": 1e-2},
        "train.layer_lr_decay": {"type": "float", "low": 0.6, "high": 1.0},
        **_COMMON,
    },
    "scratch": {"train.learning_rate": {**_RATE, "low": 1e-5, "high": 1e-2}, **_COMMON},
}


def default_space(strategy: str) -> dict[str, dict[str, Any]]:
    """The default space of `strategy` (a hybrid searches as full: its later phase trains everything)."""
    space = DEFAULT_SPACES.get(strategy, DEFAULT_SPACES["full"])
    return {k: _check_distribution(k, v, "default space") for k, v in space.items()}


def load_space(path: str | Path, task: str) -> dict[str, dict[str, Any]]:
    """A space from YAML, checked: known keys (canonical spelling), known types, sensible bounds."""
    try:
        raw = yaml.safe_load(Path(path).read_text())
    except (OSError, yaml.YAMLError) as e:
        raise ConfigError(f"--space {path}: cannot read it ({str(e).splitlines()[0]})") from None
    if not isinstance(raw, dict) or not raw:
        raise ConfigError(f"--space {path}: expected a mapping of config keys to distributions, e.g. {__doc__.split('```')[1]}")
    return check_space(raw, task, str(path))


def check_space(raw: dict[str, Any], task: str, where: str = "space") -> dict[str, dict[str, Any]]:
    """Every entry's key made canonical and its distribution checked (raises ConfigError naming the key).

    Example:
        >>> check_space({"learning_rate": {"type": "float", "low": 1e-5, "high": 1e-3, "log": True}}, "text-classification")
        {'train.learning_rate': {'type': 'float', 'low': 1e-05, 'high': 0.001, 'log': True}}
    """
    from hftl.config.keys import canonical_key

    space = {}
    for key, spec in raw.items():
        try:
            name = canonical_key(str(key), task)
        except ConfigError as e:
            raise ConfigError(f"{where}: {e}") from None
        space[name] = _check_distribution(name, spec, where)
    return space


def _check_distribution(key: str, spec: Any, where: str) -> dict[str, Any]:
    if not isinstance(spec, dict) or spec.get("type") not in TYPES:
        raise ConfigError(f"{where}: {key} needs a type, one of {', '.join(TYPES)} (e.g. {{type: float, low: 0.0, high: 1.0}})")
    if spec["type"] == "categorical":
        if not isinstance(spec.get("choices"), list) or not spec["choices"]:
            raise ConfigError(f"{where}: {key} (categorical) needs choices: [a, b, ...]")
        return {"type": "categorical", "choices": spec["choices"]}
    try:
        low, high = float(spec["low"]), float(spec["high"])
    except (KeyError, TypeError, ValueError):
        raise ConfigError(f"{where}: {key} ({spec['type']}) needs numbers low and high") from None
    log = bool(spec.get("log", False))
    if not low < high or (log and low <= 0):
        raise ConfigError(f"{where}: {key} needs low < high{' and low > 0 (log scale)' if log else ''}, got {low} and {high}")
    if spec["type"] == "int":
        return {"type": "int", "low": int(low), "high": int(high), "log": log}
    return {"type": "float", "low": low, "high": high, "log": log}


def suggest(trial: Any, space: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """One value per key from an Optuna trial."""
    values = {}
    for key, spec in space.items():
        if spec["type"] == "categorical":
            values[key] = trial.suggest_categorical(key, spec["choices"])
        elif spec["type"] == "int":
            values[key] = trial.suggest_int(key, spec["low"], spec["high"], log=spec["log"])
        else:
            values[key] = trial.suggest_float(key, spec["low"], spec["high"], log=spec["log"])
    return values
