"""Run configuration: dataclasses that mirror the YAML, dotted overrides, validation.

Example:
    >>> cfg = load_config({"model": {"name_or_path": "m"}, "data": {"train": "d"}}, ["train.epochs=2"])
    >>> cfg.train.epochs
    2
"""

from __future__ import annotations

import dataclasses
import difflib
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Union

import yaml

from hftl.errors import ConfigError

TASKS = ("image-classification", "text-classification", "token-classification", "audio-classification", "speech-recognition")
STRATEGIES = ("head_only", "freeze", "full", "lora", "scratch")
_CLASSIFICATION_METRICS = ("f1", "accuracy", "precision", "recall", "loss")
# Validation metrics per task; the first is the default train.metric_for_best.
TASK_METRICS = {
    "image-classification": _CLASSIFICATION_METRICS,
    "text-classification": _CLASSIFICATION_METRICS,
    "audio-classification": _CLASSIFICATION_METRICS,
    "token-classification": ("f1", "precision", "recall", "accuracy", "loss"),  # entity-level (seqeval)
    "speech-recognition": ("wer", "cer", "loss"),
}
# transformers.pipeline task names, where they differ from hftl's.
PIPELINE_TASKS = {"speech-recognition": "automatic-speech-recognition"}
LOWER_IS_BETTER = frozenset({"loss", "wer", "cer"})
# Experiment trackers Accelerate supports (its LoggerType, less "all"); train.report_to takes any of them.
TRACKERS = ("tensorboard", "wandb", "mlflow", "comet_ml", "aim", "clearml", "dvclive", "swanlab", "trackio")
# Modality-flavoured names for the generic data keys, accepted in YAML and overrides.
KEY_ALIASES = {
    "data.text_column": "data.input_column",
    "data.tokens_column": "data.input_column",
    "data.audio_column": "data.input_column",
    "data.tags_column": "data.label_column",
    "data.transcript_column": "data.label_column",
}


def _help(text: str, choices: tuple[str, ...] | None = None) -> dict[str, Any]:
    return {"help": text, "choices": choices}


@dataclass
class ModelConfig:
    name_or_path: str = field(default="", metadata=_help("Hub id or local directory of the checkpoint."))
    revision: str | None = field(default=None, metadata=_help("Hub revision (branch, tag or commit)."))
    trust_remote_code: bool = field(
        default=False, metadata=_help("Run model code shipped with the checkpoint. Off unless you trust it.")
    )
    blocks: str | None = field(
        default=None,
        metadata=_help("Dotted path of the backbone's block list (e.g. 'encoder.layer'); found automatically."),
    )


@dataclass
class DataConfig:
    train: str | None = field(default=None, metadata=_help("imagefolder dir, csv/json/jsonl/parquet file or Hub id."))
    validation: str | None = field(default=None, metadata=_help("Validation data; split off train when null."))
    test: str | None = field(default=None, metadata=_help("Optional held-out test data, evaluated once at the end."))
    validation_split: float = field(default=0.1, metadata=_help("Fraction of train held out (stratified)."))
    input_column: str | None = field(
        default=None,
        metadata=_help("Column with the inputs (alias text_column / tokens_column / audio_column); auto-detected when null."),
    )
    label_column: str | None = field(
        default=None,
        metadata=_help("Column with the labels, tags or transcripts (alias tags_column / transcript_column); auto when null."),
    )
    text_pair_column: str | None = field(default=None, metadata=_help("Text classification: second text of a pair."))
    max_length: int | None = field(
        default=None, metadata=_help("Text: truncate to this many tokens; the tokenizer's limit (at most 512) when null.")
    )
    max_duration_seconds: float | None = field(
        default=None, metadata=_help("Audio: random crop on train, centre crop on eval, to this length; no cut when null.")
    )
    group_by_length: bool = field(
        default=False, metadata=_help("Batch examples of similar length together (less padding for text and audio).")
    )
    augment: bool = field(default=True, metadata=_help("Modality-appropriate augmentation on train only."))
    on_bad_file: str = field(
        default="skip", metadata=_help("What to do with unreadable files: skip (counted, reported) or error.", ("skip", "error"))
    )
    max_train_samples: int | None = field(default=None, metadata=_help("Use at most this many training examples."))
    num_workers: int | None = field(
        default=None,
        metadata=_help("DataLoader worker processes; null: none without a GPU (they would compete with it), else up to 8."),
    )


@dataclass
class LoraConfig:
    r: int = field(default=8, metadata=_help("Rank of the low-rank update."))
    alpha: int = field(default=16, metadata=_help("Scaling numerator (update scaled by alpha / r)."))
    dropout: float = field(default=0.1, metadata=_help("Dropout on the LoRA input."))
    target_modules: str | list[str] = field(
        default="auto", metadata=_help("'auto' (per architecture), or module names / a regex for peft.")
    )


@dataclass
class StrategyConfig:
    name: str = field(default="full", metadata=_help("How the pretrained weights are used.", STRATEGIES))
    trainable_blocks: int = field(default=2, metadata=_help("freeze: how many top backbone blocks train."))
    head_warmup_epochs: int = field(
        default=0, metadata=_help("Hybrid: epochs (out of train.epochs) that train the head alone first.")
    )
    freeze_feature_encoder: bool = field(
        default=True,
        metadata=_help("Speech: keep the convolutional feature encoder frozen (every strategy but scratch)."),
    )
    batch_norm: str = field(
        default="freeze_stats",
        metadata=_help(
            "BatchNorm in frozen parts: keep running statistics as loaded, or update them.", ("freeze_stats", "train")
        ),
    )
    lora: LoraConfig = field(default_factory=LoraConfig)


@dataclass
class TrainConfig:
    epochs: int = field(default=3, metadata=_help("Training epochs (head warm-up included)."))
    max_steps: int | None = field(default=None, metadata=_help("Stop after this many optimizer steps."))
    batch_size: int = field(default=32, metadata=_help("Examples per device per step."))
    eval_batch_size: int | None = field(default=None, metadata=_help("Defaults to batch_size."))
    learning_rate: float = field(default=5e-5, metadata=_help("Peak learning rate of the backbone's top block."))
    head_learning_rate: float | None = field(default=None, metadata=_help("Head learning rate; learning_rate if null."))
    layer_lr_decay: float = field(
        default=1.0, metadata=_help("Discriminative LR: each block below the top gets this factor once more.")
    )
    weight_decay: float = field(default=0.01, metadata=_help("AdamW decay on weight matrices (not biases or norms)."))
    scheduler: str = field(default="linear", metadata=_help("Learning-rate schedule.", ("linear", "cosine", "constant")))
    warmup_ratio: float = field(default=0.0, metadata=_help("Fraction of each phase's steps spent warming up."))
    gradient_accumulation_steps: int = field(default=1, metadata=_help("Micro-batches per optimizer step."))
    max_grad_norm: float | None = field(default=1.0, metadata=_help("Gradient clipping norm; null turns it off."))
    mixed_precision: str = field(default="no", metadata=_help("Accelerate mixed precision.", ("no", "fp16", "bf16")))
    early_stopping_patience: int | None = field(
        default=None, metadata=_help("Stop after this many epochs without a better metric_for_best.")
    )
    metric_for_best: str | None = field(
        default=None,
        metadata=_help("Validation metric that picks the best epoch; the task's default (f1, or wer for speech) when null."),
    )
    load_best_at_end: bool = field(
        default=True, metadata=_help("End on the best epoch's weights (by metric_for_best); false keeps the last.")
    )
    seed: int = field(default=42, metadata=_help("Seed for init, shuffling, augmentation and dropout."))
    save_steps: int | None = field(default=None, metadata=_help("Also checkpoint every N optimizer steps."))
    save_total_limit: int = field(default=2, metadata=_help("Resumable checkpoints kept (the newest)."))
    logging_steps: int = field(default=10, metadata=_help("Log training loss every N optimizer steps."))
    report_to: str = field(
        default="tensorboard",
        metadata=_help(f"Accelerate tracker(s), comma-separated ({', '.join(TRACKERS)}), 'all' (every installed one) or 'none'."),
    )
    feature_cache: str = field(
        default="auto",
        metadata=_help(
            "Train head_only / freeze on cached outputs of the frozen part: auto (where it reproduces uncached "
            "training), on (refuse to run uncached), off.",
            ("auto", "on", "off"),
        ),
    )
    torch_compile: bool = field(
        default=False, metadata=_help("Compile the model with torch.compile (inductor); the feature cache is then off.")
    )
    feature_cache_dir: str | None = field(
        default=None, metadata=_help("Feature cache folder; $HFTL_FEATURE_CACHE or ~/.cache/hftl/features when null.")
    )
    feature_cache_max_gb: float = field(
        default=50.0,
        metadata=_help(
            "Size cap of the feature cache folder: after a fill, least recently used entries idle for an hour are "
            "deleted to stay under it (0 = no cap). `hftl cache list` shows the folder, `hftl cache clear` empties it."
        ),
    )


@dataclass
class Config:
    task: str = field(default="image-classification", metadata=_help("What the model does.", TASKS))
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    strategy: StrategyConfig = field(default_factory=StrategyConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    output_dir: str = field(default="runs/run", metadata=_help("Run folder."))
    resume: bool = field(default=False, metadata=_help("Continue the unfinished run in output_dir."))
    overwrite: bool = field(default=False, metadata=_help("Replace a finished run in output_dir."))
    push_to_hub: bool = field(
        default=False, metadata=_help("Push the finished run to hub_repo_id (token: HF_TOKEN / hf auth login).")
    )
    hub_repo_id: str | None = field(default=None, metadata=_help("OWNER/NAME of the Hub repo push_to_hub creates or updates."))
    hub_private: bool = field(default=False, metadata=_help("Create the Hub repo private."))

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def save(self, path: str | Path) -> None:
        """Write the resolved config as YAML (no secrets live in the config)."""
        Path(path).write_text(yaml.safe_dump(self.to_dict(), sort_keys=False))


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
            if isinstance(a[key], dict):
                walk(a[key], b[key], f"{prefix}{key}.")
            elif a[key] != b[key] and f"{prefix}{key}" not in RUN_CONTROL_KEYS:
                diffs.append(f"{prefix}{key} ({a[key]!r} -> {b[key]!r})")

    walk(saved.to_dict(), now.to_dict(), "")
    return diffs


def best_metric_name(cfg: Config) -> str:
    """train.metric_for_best, or the task's default metric when it is null."""
    return cfg.train.metric_for_best or TASK_METRICS[cfg.task][0]


# Top-level keys that take a bare value for their section's main field: `strategy=lora`, `model=DIR`.
_SECTION_SHORTHAND = {"strategy": "name", "model": "name_or_path"}
# Run-control keys that do not change what is trained (ignored when comparing a resumed config).
# Keys that do not change what a run computes (the feature cache reproduces uncached training), so a
# different value neither blocks resume nor the reuse of a finished run in a study.
RUN_CONTROL_KEYS = (
    "resume", "overwrite", "push_to_hub", "hub_repo_id", "hub_private", "train.feature_cache", "train.feature_cache_dir",
    "train.feature_cache_max_gb",
)  # fmt: skip


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
    if isinstance(source, Config):
        cfg = _from_dict(source.to_dict(), origin)
    elif isinstance(source, dict):
        cfg = _from_dict(source, origin)
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
        cfg = _from_dict(raw, origin)
    for key, value in _override_items(overrides):
        set_value(cfg, key, value, from_text=isinstance(value, str) and isinstance(overrides, list))
    validate(cfg)
    return cfg


def _override_items(overrides: list[str] | dict[str, Any] | None) -> list[tuple[str, Any]]:
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


def _from_dict(raw: dict[str, Any], origin: str) -> Config:
    cfg = Config()
    for key, value in _flatten(raw):
        _assign(cfg, key.split("."), value, from_text=False, origin=origin)
    return cfg


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
        hints = typing.get_type_hints(cls)
        if part not in hints:
            return None
        cls = hints[part]
    return cls


def set_value(cfg: Config, key: str, value: Any, from_text: bool = False) -> None:
    """Set one (possibly shortened) key on `cfg`, coercing and checking the value's type."""
    _assign(cfg, _resolve_key(key).split("."), value, from_text=from_text, origin="the overrides")


def _leaf_keys(cls: Any = Config, prefix: str = "") -> list[str]:
    keys = []
    for f in dataclasses.fields(cls):
        hint = typing.get_type_hints(cls)[f.name]
        if dataclasses.is_dataclass(hint):
            keys.extend(_leaf_keys(hint, f"{prefix}{f.name}."))
        else:
            keys.append(f"{prefix}{f.name}")
    return keys


def _resolve_key(key: str) -> str:
    if key in _SECTION_SHORTHAND:
        return f"{key}.{_SECTION_SHORTHAND[key]}"
    leaves = _leaf_keys() + list(KEY_ALIASES)
    if "." in key or key in leaves:
        return key
    matches = [leaf for leaf in leaves if leaf.rsplit(".", 1)[-1] == key]
    if len(matches) == 1:
        return matches[0]
    if len(matches) > 1:
        raise ConfigError(f"key {key!r} is ambiguous: write one of {', '.join(matches)}")
    return key  # unknown: _assign reports it with suggestions


def _assign(cfg: Config, parts: list[str], value: Any, from_text: bool, origin: str) -> None:
    parts = KEY_ALIASES.get(".".join(parts), ".".join(parts)).split(".")
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
        hint_type = typing.get_type_hints(type(obj))[part]
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
    leaves = {leaf.rsplit(".", 1)[-1]: leaf for leaf in _leaf_keys()}
    leaves.update({name: name for name in _SECTION_SHORTHAND})
    hint = difflib.get_close_matches(key, list(leaves), n=1)
    return leaves[hint[0]] if hint else None


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


def _check_choices(obj: Any, prefix: str) -> None:
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        if dataclasses.is_dataclass(value):
            _check_choices(value, f"{prefix}{f.name}.")
            continue
        choices = f.metadata.get("choices")
        if choices and value not in choices:
            raise ConfigError(f"{prefix}{f.name} must be one of {', '.join(choices)}; got {value!r}")


def tracker_names(report_to: str) -> list[str]:
    """train.report_to as a list of tracker names: [] for none, ["all"] for all; a ConfigError for unknown names.

    Example:
        >>> tracker_names("tensorboard, mlflow")
        ['tensorboard', 'mlflow']
    """
    names = [n.strip().lower() for n in report_to.split(",") if n.strip()]
    allowed = f"use none, all, or one or more of {', '.join(TRACKERS)} separated by commas (e.g. tensorboard,mlflow)"
    for name in names:
        if name not in (*TRACKERS, "all", "none"):
            hint = difflib.get_close_matches(name, TRACKERS, n=1)
            close = f" (did you mean {hint[0]!r}?)" if hint else ""
            raise ConfigError(f"train.report_to={report_to!r}: unknown tracker {name!r}{close}; {allowed}")
    if not names or names == ["none"]:
        return []
    if len(names) > 1 and ("none" in names or "all" in names):
        raise ConfigError(f"train.report_to={report_to!r}: 'none' and 'all' stand alone; {allowed}")
    return list(dict.fromkeys(names))


def _require(ok: bool, message: str) -> None:
    if not ok:
        raise ConfigError(message)


def validate(cfg: Config) -> None:
    """Check values and their combinations; raise ConfigError naming the key and the fix."""
    _check_choices(cfg, "")
    t, s, d = cfg.train, cfg.strategy, cfg.data
    metrics = TASK_METRICS[cfg.task]
    _require(
        t.metric_for_best is None or t.metric_for_best in metrics,
        f"train.metric_for_best={t.metric_for_best!r} is not a {cfg.task} metric; use one of {', '.join(metrics)}",
    )
    _require(bool(cfg.model.name_or_path), "model.name_or_path is required: a Hub id or a local checkpoint directory")
    _require(bool(d.train), "data.train is required: an imagefolder directory, a csv/jsonl/parquet file or a Hub id")
    _require(t.epochs >= 1, f"train.epochs must be >= 1, got {t.epochs}")
    _require(t.max_steps is None or t.max_steps >= 1, f"train.max_steps must be >= 1 or null, got {t.max_steps}")
    _require(t.batch_size >= 1, f"train.batch_size must be >= 1, got {t.batch_size}")
    _require(t.eval_batch_size is None or t.eval_batch_size >= 1, "train.eval_batch_size must be >= 1 or null")
    _require(t.learning_rate > 0, f"train.learning_rate must be > 0, got {t.learning_rate}")
    _require(t.head_learning_rate is None or t.head_learning_rate > 0, "train.head_learning_rate must be > 0 or null")
    _require(0 < t.layer_lr_decay <= 1, f"train.layer_lr_decay must be in (0, 1], got {t.layer_lr_decay}")
    _require(t.weight_decay >= 0, f"train.weight_decay must be >= 0, got {t.weight_decay}")
    _require(t.feature_cache_max_gb >= 0, f"train.feature_cache_max_gb must be >= 0 (0 = no cap), got {t.feature_cache_max_gb}")
    _require(0 <= t.warmup_ratio < 1, f"train.warmup_ratio must be in [0, 1), got {t.warmup_ratio}")
    _require(t.gradient_accumulation_steps >= 1, "train.gradient_accumulation_steps must be >= 1")
    _require(t.max_grad_norm is None or t.max_grad_norm > 0, "train.max_grad_norm must be > 0 or null")
    _require(t.save_steps is None or t.save_steps >= 1, "train.save_steps must be >= 1 or null")
    _require(t.save_total_limit >= 1, "train.save_total_limit must be >= 1")
    _require(t.logging_steps >= 1, "train.logging_steps must be >= 1")
    tracker_names(t.report_to)
    _require(
        t.early_stopping_patience is None or t.early_stopping_patience >= 1, "train.early_stopping_patience must be >= 1 or null"
    )
    _require(0 < d.validation_split < 1, f"data.validation_split must be between 0 and 1, got {d.validation_split}")
    _require(d.max_train_samples is None or d.max_train_samples >= 1, "data.max_train_samples must be >= 1 or null")
    _require(d.num_workers is None or d.num_workers >= 0, "data.num_workers must be >= 0, or null for automatic")
    _require(d.max_length is None or d.max_length >= 2, f"data.max_length must be >= 2 or null, got {d.max_length}")
    _require(
        d.max_duration_seconds is None or d.max_duration_seconds > 0,
        f"data.max_duration_seconds must be > 0 or null, got {d.max_duration_seconds}",
    )
    _require(
        d.text_pair_column is None or cfg.task == "text-classification",
        f"data.text_pair_column is for task text-classification, not {cfg.task}; remove it",
    )
    _require(s.trainable_blocks >= 0, f"strategy.trainable_blocks must be >= 0, got {s.trainable_blocks}")
    _require(s.head_warmup_epochs >= 0, "strategy.head_warmup_epochs must be >= 0")
    _require(
        s.head_warmup_epochs < t.epochs,
        f"strategy.head_warmup_epochs ({s.head_warmup_epochs}) must be smaller than train.epochs ({t.epochs}): "
        "the warm-up epochs are part of the run's epochs",
    )
    _require(
        not (s.head_warmup_epochs and s.name == "head_only"),
        "strategy.head_warmup_epochs has no effect with strategy.name=head_only (it already trains the head alone); set it to 0",
    )
    _require(s.lora.r >= 1 and s.lora.alpha >= 1, "strategy.lora.r and strategy.lora.alpha must be >= 1")
    _require(0 <= s.lora.dropout < 1, "strategy.lora.dropout must be in [0, 1)")
    _require(not (cfg.resume and cfg.overwrite), "resume=true and overwrite=true contradict each other; pick one")
    _require(not cfg.push_to_hub or bool(cfg.hub_repo_id), "push_to_hub=true needs hub_repo_id=OWNER/NAME")
    if cfg.hub_repo_id:
        from hftl.hub import check_repo_id

        try:
            check_repo_id(cfg.hub_repo_id)
        except Exception as e:  # noqa: BLE001 - re-raised as a config error naming the key
            raise ConfigError(f"hub_repo_id: {e}") from None
