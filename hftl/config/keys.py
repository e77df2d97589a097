"""Dotted keys and their values: YAML sections and `key=value` overrides turned into a `Config`.

Keys are dotted (`train.epochs`), a unique field name (`epochs`), a section shorthand (`strategy=lora`)
or a modality-flavoured alias (`data.text_column`). Values are coerced to the field's type; an unknown
key or a bad value is a ConfigError naming the key, with the closest allowed key.

Example:
    >>> cfg = Config()
    >>> set_value(cfg, "epochs", "5", from_text=True)
    >>> cfg.train.epochs
    5
"""

from __future__ import annotations

import dataclasses
import difflib
import functools
import types
import typing
from typing import Any, Union

import yaml

from hftl.config.schema import _SECTION_SHORTHAND, KEY_ALIASES, TASK_KEY_ALIASES, Config
from hftl.utils.errors import ConfigError


def override_items(overrides: list[str] | dict[str, Any] | None) -> list[tuple[str, Any]]:
    if overrides is None:
        return []
    if isinstance(overrides, dict):
        return list(overrides.items())
    items = []
    for text in overrides:
        key, sep, value = text.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"override {text!r} must look like key=value, e.g. train.epochs=3")
        items.append((key.strip(), value))
    return items


def from_dict(raw: dict[str, Any], origin: str, task: str | None = None) -> Config:
    """A Config from a (nested) mapping; `task` (else the mapping's own) settles task-dependent aliases."""
    cfg = Config()
    items = _flatten(raw)
    task = task or raw.get("task") or cfg.task
    check_conflicts([key for key, _ in items], task, origin)
    for key, value in items:
        _assign(cfg, canonical_key(key, task).split("."), value, from_text=False, origin=origin)
    return cfg


def canonical_key(key: str, task: str) -> str:
    """The dotted key a written key sets: shorthands, unique names and aliases resolved for `task`.

    Example:
        >>> canonical_key("text_column", "speech-recognition"), canonical_key("text_column", "text-classification")
        ('data.label_column', 'data.input_column')
    """
    key = _resolve_key(key)
    return TASK_KEY_ALIASES.get((task, key)) or KEY_ALIASES.get(key, key)


def check_conflicts(keys: list[str], task: str, origin: str) -> None:
    """Refuse two different keys of one source that set the same value (`audio_column` and `text_column`
    on a speech-recognition run used to let the later one win silently)."""
    seen: dict[str, str] = {}
    for key in keys:
        target = canonical_key(key, task)
        if target in seen and seen[target] != key:
            raise ConfigError(
                f"{seen[target]!r} and {key!r} both set {target} in {origin}; keep one"
                + (f" (for {task}, {key} means {target})" if (task, _resolve_key(key)) in TASK_KEY_ALIASES else "")
            )
        seen[target] = key


def _flatten(raw: dict[str, Any], prefix: str = "") -> list[tuple[str, Any]]:
    items: list[tuple[str, Any]] = []
    for key, value in raw.items():
        dotted = f"{prefix}{key}"
        target = _field_type_at(dotted)
        if isinstance(value, dict) and target is not None and dataclasses.is_dataclass(target):
            items.extend(_flatten(value, dotted + "."))
        else:
            items.append((dotted, value))
    return items


def _field_type_at(dotted: str) -> Any:
    cls: Any = Config
    for part in dotted.split("."):
        if not dataclasses.is_dataclass(cls):
            return None
        hints = _hints(cls)
        if part not in hints:
            return None
        cls = hints[part]
    return cls


def set_value(cfg: Config, key: str, value: Any, from_text: bool = False, task: str | None = None) -> None:
    """Set one (possibly shortened) key on `cfg`, coercing and checking the value's type; aliases are read
    for `task` (default: `cfg.task`)."""
    _assign(cfg, canonical_key(key, task or cfg.task).split("."), value, from_text=from_text, origin="the overrides")


@functools.cache
def _hints(cls: Any) -> dict[str, Any]:
    """A dataclass's resolved field types; cached: resolving them is slow, and every key asks."""
    return typing.get_type_hints(cls)


@functools.cache
def leaf_keys(cls: Any = Config, prefix: str = "") -> tuple[str, ...]:
    """Every dotted leaf key a config accepts, in schema order.

    Example:
        >>> leaf_keys()[:2]
        ('task', 'model.name_or_path')
    """
    keys = []
    for f in dataclasses.fields(cls):
        hint = _hints(cls)[f.name]
        if dataclasses.is_dataclass(hint):
            keys.extend(leaf_keys(hint, f"{prefix}{f.name}."))
        else:
            keys.append(f"{prefix}{f.name}")
    return tuple(keys)


def _resolve_key(key: str) -> str:
    if key in _SECTION_SHORTHAND:
        return f"{key}.{_SECTION_SHORTHAND[key]}"
    leaves = [*leaf_keys(), *KEY_ALIASES]
    if "." in key or key in leaves:
        return key
    matches = [leaf for leaf in leaves if leaf.rsplit(".", 1)[-1] == key]
    if len(matches) == 1:
        return matches[0]
    if len(matches) > 1:
        raise ConfigError(f"key {key!r} is ambiguous: write one of {', '.join(matches)}")
    return key  # unknown: _assign reports it with suggestions


def _assign(cfg: Config, parts: list[str], value: Any, from_text: bool, origin: str) -> None:
    obj: Any = cfg
    for i, part in enumerate(parts):
        names = [f.name for f in dataclasses.fields(obj)]
        dotted = ".".join(parts[: i + 1])
        if part not in names:
            section = ".".join(parts[:i]) or "the top level"
            hint = difflib.get_close_matches(part, names, n=1)
            close = ".".join(parts[:i] + [hint[0]]) if hint else (_close_leaf(part) if len(parts) == 1 else None)
            suggestion = f" Did you mean {close!r}?" if close else ""
            raise ConfigError(f"unknown key {dotted!r} in {origin}.{suggestion} Allowed keys in {section}: {', '.join(names)}")
        hint_type = _hints(type(obj))[part]
        if i < len(parts) - 1:
            obj = getattr(obj, part)
            if not dataclasses.is_dataclass(obj):
                raise ConfigError(f"{'.'.join(parts[: i + 1])!r} is a value, not a section (in {origin})")
            continue
        if dataclasses.is_dataclass(hint_type):
            raise ConfigError(
                f"{dotted!r} is a section; set its keys instead, e.g. {dotted}.{dataclasses.fields(hint_type)[0].name}=..."
            )
        try:
            setattr(obj, part, _coerce(value, hint_type, dotted, from_text))
        except ConfigError as e:
            raise ConfigError(f"{e} (in {origin})") from None


def _close_leaf(key: str) -> str | None:
    """The full key a misspelt short key probably meant: `epoch` -> `train.epochs`."""
    leaves = {leaf.rsplit(".", 1)[-1]: leaf for leaf in leaf_keys()}
    leaves.update({name: name for name in _SECTION_SHORTHAND})
    hint = difflib.get_close_matches(key, list(leaves), n=1)
    return leaves[hint[0]] if hint else None


def _coerce_mapping(value: Any, key: str, from_text: bool) -> dict[str, float]:
    """A {name: number} mapping (train.class_weights); on the command line written as YAML, `{a: 2, b: 1}`."""
    if from_text and isinstance(value, str) and value.strip().startswith("{"):
        try:
            value = yaml.safe_load(value)
        except yaml.YAMLError:
            raise ConfigError(f"{key} must be a mapping such as {{a: 2.0, b: 1.0}}; got {value!r}") from None
    if not isinstance(value, dict):
        raise ConfigError(f"{key} must be a mapping such as {{a: 2.0, b: 1.0}}, got {value!r}")
    out = {}
    for k, v in value.items():
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            raise ConfigError(f"{key}: the value of {k!r} must be a number, got {v!r}")
        out[str(k)] = float(v)
    return out


def _coerce(value: Any, hint: Any, key: str, from_text: bool) -> Any:
    """Turn `value` into `hint`'s type or raise a ConfigError naming the key."""
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin in (Union, types.UnionType):
        is_null = value is None or (from_text and str(value).strip().lower() in ("null", "none", "~", ""))
        if is_null and type(None) in args:
            return None
        list_hint = next((a for a in args if typing.get_origin(a) is list), None)
        if list_hint and from_text and isinstance(value, str) and (value.strip().startswith("[") or "," in value):
            try:  # `a,b` and `[a, b]` on the command line are lists, not one string that happens to hold commas
                return _coerce(value, list_hint, key, from_text)
            except ConfigError:
                pass  # e.g. a regex such as `[qv]_proj`: keep it as a string
        errors = []
        for arg in (a for a in args if a is not type(None)):
            try:
                return _coerce(value, arg, key, from_text)
            except ConfigError as e:
                errors.append(str(e))
        raise ConfigError(errors[0] if errors else f"{key} cannot be null")
    if value is None:
        raise ConfigError(f"{key} cannot be null; give it a value, or leave it out to use the default")
    if origin is dict:
        return _coerce_mapping(value, key, from_text)
    if origin is list:
        if from_text and isinstance(value, str):
            if not value.strip().startswith("["):
                value = [v.strip() for v in value.split(",") if v.strip()]
            else:
                try:
                    value = yaml.safe_load(value)
                except yaml.YAMLError:
                    raise ConfigError(f"{key} must be a list such as [a, b] or a,b; got {value!r}") from None
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise ConfigError(f"{key} must be a list of strings, got {value!r}")
        return value
    if hint is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.strip().lower() in ("true", "false", "yes", "no", "1", "0", "on", "off"):
            return value.strip().lower() in ("true", "yes", "1", "on")
        raise ConfigError(f"{key} must be true or false, got {value!r}")
    if hint is int:
        if isinstance(value, bool):
            raise ConfigError(f"{key} must be an integer, got {value!r}")
        if isinstance(value, int):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        if isinstance(value, str):
            try:
                return int(value.strip())
            except ValueError:
                pass
        raise ConfigError(f"{key} must be an integer, got {value!r}")
    if hint is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):  # YAML reads 5e-5 as a string; accept it
            try:
                return float(value.strip())
            except ValueError:
                pass
        raise ConfigError(f"{key} must be a number, got {value!r}")
    if hint is str:
        if isinstance(value, (dict, list)):
            raise ConfigError(f"{key} must be a string, got {value!r}")
        return str(value)
    return value
