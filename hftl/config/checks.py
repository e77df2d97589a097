"""Config values and their combinations checked before any work, each refusal naming the key and the fix.

Example:
    >>> tracker_names("tensorboard, mlflow")
    ['tensorboard', 'mlflow']
"""

from __future__ import annotations

import dataclasses
import difflib
import re
from typing import Any

from hftl.config.schema import CLASSIFICATION_TASKS, PROBLEM_METRICS, TASK_METRICS, TRACKERS, Config
from hftl.utils.errors import ConfigError

REPO_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,95}/[A-Za-z0-9][A-Za-z0-9._-]{0,95}$")


def check_repo_id(repo_id: str) -> str:
    """`OWNER/NAME` with the Hub's allowed characters, or an error showing the expected form.

    Example:
        >>> check_repo_id("me/bert-lora")
        'me/bert-lora'
    """
    if not isinstance(repo_id, str) or not REPO_ID.match(repo_id) or ".." in repo_id or repo_id.endswith((".git", ".")):
        raise ConfigError(
            f"hub repo id {repo_id!r} is malformed: use OWNER/NAME (letters, digits, '-', '_', '.'), e.g. my-user/bert-reviews"
        )
    return repo_id


def _check_choices(obj: Any, prefix: str) -> None:
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        if dataclasses.is_dataclass(value):
            _check_choices(value, f"{prefix}{f.name}.")
            continue
        choices = f.metadata.get("choices")
        if choices and value not in choices and not (value is None and f.default is None):  # null: unset
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


def metric_names(task: str, problem: str = "auto") -> tuple[str, ...]:
    """Validation metrics of `task` with label shape `problem`, the default metric_for_best first.

    Example:
        >>> metric_names("text-classification", "regression")[0]
        'rmse'
    """
    return PROBLEM_METRICS.get(problem, TASK_METRICS[task]) if task in CLASSIFICATION_TASKS else TASK_METRICS[task]


def _require(ok: bool, message: str) -> None:
    if not ok:
        raise ConfigError(message)


def _check_rates(t: Any) -> None:
    """train.learning_rate and train.head_learning_rate: a number > 0 or auto (the head's also null)."""
    rate = t.learning_rate
    _require(
        rate == "auto" or (isinstance(rate, float) and rate > 0),
        f"train.learning_rate must be auto or a number > 0, got {rate!r}",
    )
    head = t.head_learning_rate
    _require(
        head is None or head == "auto" or (isinstance(head, float) and head > 0),
        f"train.head_learning_rate must be auto, a number > 0 or null (train.learning_rate), got {head!r}",
    )


def validate(cfg: Config) -> None:
    """Check values and their combinations; raise ConfigError naming the key and the fix."""
    _check_choices(cfg, "")
    t, s, d = cfg.train, cfg.strategy, cfg.data
    metrics = metric_names(cfg.task, d.problem)
    if d.problem == "auto" and cfg.task in CLASSIFICATION_TASKS:  # the label shape is known once the data is read
        metrics = tuple(dict.fromkeys([*metrics, *(m for ms in PROBLEM_METRICS.values() for m in ms)]))
    shape = f" {d.problem}" if d.problem not in ("auto", "single_label") else ""
    _require(
        t.metric_for_best is None or t.metric_for_best in metrics,
        f"train.metric_for_best={t.metric_for_best!r} is not a {cfg.task}{shape} metric; use one of {', '.join(metrics)}",
    )
    _check_label_options(cfg)
    _check_adapt(cfg)
    _require(bool(cfg.model.name_or_path), "model.name_or_path is required: a Hub id or a local checkpoint directory")
    _require(bool(d.train), "data.train is required: an imagefolder directory, a csv/jsonl/parquet file or a Hub id")
    _require(t.epochs >= 1, f"train.epochs must be >= 1, got {t.epochs}")
    _require(t.max_steps is None or t.max_steps >= 1, f"train.max_steps must be >= 1 or null, got {t.max_steps}")
    _require(t.batch_size >= 1, f"train.batch_size must be >= 1, got {t.batch_size}")
    _require(t.eval_batch_size is None or t.eval_batch_size >= 1, "train.eval_batch_size must be >= 1 or null")
    _check_rates(t)
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
    _check_subsets(d)
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
    _require(
        (d.language is None and d.task is None) or cfg.task == "speech-recognition",
        f"data.language and data.task set Whisper's prompt for task speech-recognition, not {cfg.task}; remove them",
    )
    _require(
        t.generation_max_length is None or t.generation_max_length >= 2,
        f"train.generation_max_length must be >= 2 or null, got {t.generation_max_length}",
    )
    _require(t.generation_num_beams >= 1, f"train.generation_num_beams must be >= 1, got {t.generation_num_beams}")
    _require(s.trainable_blocks >= 0, f"strategy.trainable_blocks must be >= 0, got {s.trainable_blocks}")
    _require(s.keep_blocks is None or s.keep_blocks >= 1, f"strategy.keep_blocks must be >= 1 or null, got {s.keep_blocks}")
    w = cfg.model.window_seconds
    ok = w is None or (isinstance(w, int) and w >= 1)
    _require(ok, f"model.window_seconds must be a whole number of seconds >= 1, got {w!r}")
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
        try:
            check_repo_id(cfg.hub_repo_id)
        except ConfigError as e:  # re-raised naming the key
            raise ConfigError(f"hub_repo_id: {e}") from None


def _check_subsets(d: Any) -> None:
    """The keys that pick which labelled examples a run trains and validates on: data.max_train_samples,
    data.folds with data.fold, data.train_size and data.group_column."""
    _require(d.max_train_samples is None or d.max_train_samples >= 1, "data.max_train_samples must be >= 1 or null")
    _require(d.folds is None or d.folds >= 2, f"data.folds must be >= 2 (K-fold cross-validation) or null, got {d.folds}")
    _require(
        d.fold is None or d.folds is not None,
        f"data.fold={d.fold} picks one of data.folds' folds, but data.folds is null; set data.folds=K or remove data.fold",
    )
    _require(
        d.folds is None or d.fold is not None,
        f"data.folds={d.folds} needs data.fold: the fold this run validates on, 0 to {d.folds - 1 if d.folds else 'K-1'}",
    )
    _require(
        d.fold is None or d.folds is None or 0 <= d.fold < d.folds,
        f"data.fold must be between 0 and data.folds - 1 ({(d.folds or 1) - 1}), got {d.fold}",
    )
    _require(d.train_size is None or d.train_size >= 1, f"data.train_size must be >= 1 or null, got {d.train_size}")
    _require(
        d.group_column is None or (isinstance(d.group_column, str) and bool(d.group_column.strip())),
        f"data.group_column must name a column, or be null; got {d.group_column!r}",
    )


# Methods that align features the backbone produces: they need a strategy that trains it.
_ALIGNING = ("coral", "dann")
_BACKBONE_STRATEGIES = ("freeze", "full", "lora", "scratch")
TEXT_TASKS = ("text-classification", "token-classification")


def _check_adapt(cfg: Config) -> None:
    """adapt.method against data.target, the task and the strategy; its settings' ranges."""
    a, d, s = cfg.adapt, cfg.data, cfg.strategy
    if a.method == "none":
        return
    _require(
        bool(d.target),
        f"adapt.method={a.method} adapts to target-domain data: set data.target=PATH (inputs only; labels are never read)",
    )
    if a.method == "pretrain":
        _require(
            cfg.task in TEXT_TASKS,
            f"adapt.method=pretrain is masked language modelling, for text ({', '.join(TEXT_TASKS)}), not {cfg.task}; "
            "for images and audio use adabn, coral, dann or self_training",
        )
        _require(s.name != "scratch", "adapt.method=pretrain continues a pretrained model; strategy.name=scratch has none")
    else:
        _require(
            cfg.task in CLASSIFICATION_TASKS,
            f"adapt.method={a.method} adapts classifiers ({', '.join(CLASSIFICATION_TASKS)}), not {cfg.task}",
        )
    backbone_trains = s.name in _BACKBONE_STRATEGIES and not (s.name == "freeze" and s.trainable_blocks == 0)
    _require(
        a.method not in _ALIGNING or backbone_trains,
        f"adapt.method={a.method} aligns the features the backbone produces, so the backbone must train: use "
        f"strategy.name={', '.join(_BACKBONE_STRATEGIES)} (freeze with trainable_blocks >= 1), not {s.name}",
    )
    _require(a.coral_weight > 0, f"adapt.coral_weight must be > 0, got {a.coral_weight}")
    _require(a.dann_lambda > 0 and a.dann_gamma > 0, "adapt.dann_lambda and adapt.dann_gamma must be > 0")
    _require(a.dann_hidden >= 1, f"adapt.dann_hidden must be >= 1, got {a.dann_hidden}")
    _require(0 < a.threshold < 1, f"adapt.threshold must be in (0, 1), got {a.threshold}")
    _require(a.target_weight > 0, f"adapt.target_weight must be > 0, got {a.target_weight}")
    t = cfg.train
    _require(
        a.method != "self_training" or t.epochs >= 2,
        "adapt.method=self_training trains on the source alone in the first epoch, then on pseudo-labels: "
        f"train.epochs must be >= 2, got {t.epochs}",
    )
    _require(
        a.rounds is None or 1 <= a.rounds <= t.epochs - 1,
        f"adapt.rounds must be between 1 and train.epochs - 1 ({t.epochs - 1}), or null; got {a.rounds}",
    )
    _require(a.pretrain_epochs >= 1, f"adapt.pretrain_epochs must be >= 1, got {a.pretrain_epochs}")
    _require(0 < a.mlm_probability < 1, f"adapt.mlm_probability must be in (0, 1), got {a.mlm_probability}")


def _check_label_options(cfg: Config) -> None:
    """data.problem and the imbalance options: where they apply, and values that make sense."""
    t, d = cfg.train, cfg.data
    _require(
        d.problem in ("auto", "single_label") or cfg.task in CLASSIFICATION_TASKS,
        f"data.problem={d.problem} is for {', '.join(CLASSIFICATION_TASKS)}, not {cfg.task}; remove it",
    )
    _require(
        not isinstance(d.label_column, list) or d.problem == "regression",
        f"data.label_column={d.label_column} names several columns, which only regression takes (several targets); "
        "set data.problem=regression, or name one label column",
    )
    _require(bool(d.label_separator), "data.label_separator must not be empty; the default is '|'")
    _require(0 <= t.label_smoothing < 1, f"train.label_smoothing must be in [0, 1), got {t.label_smoothing}")
    if isinstance(t.class_weights, str):
        _require(
            t.class_weights in ("none", "balanced"),
            f"train.class_weights must be none, balanced or a mapping {{label: weight}}; got {t.class_weights!r}",
        )
    else:
        bad = {k: v for k, v in t.class_weights.items() if not v > 0}
        _require(not bad, f"train.class_weights: weights must be > 0; got {bad}")
    if isinstance(t.decision_threshold, str):
        _require(
            t.decision_threshold in ("auto", "per_label"),
            f"train.decision_threshold must be auto, per_label or a number in (0, 1); got {t.decision_threshold!r}",
        )
    else:
        _require(0 < t.decision_threshold < 1, f"train.decision_threshold must be in (0, 1), got {t.decision_threshold}")
    sequence = cfg.task not in CLASSIFICATION_TASKS
    for key, value, off in (
        ("train.class_weights", t.class_weights, "none"),
        ("data.sampler", d.sampler, "random"),
        ("train.label_smoothing", t.label_smoothing, 0.0),
    ):
        _require(
            not (sequence and value != off),
            f"{key} is for {', '.join(CLASSIFICATION_TASKS)}, not {cfg.task}; remove it",
        )
        _require(
            not (d.problem == "regression" and value != off),
            f"{key} applies to classes; data.problem=regression has none. Remove it",
        )
