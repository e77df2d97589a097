"""`hftl probe`: which pretrained model, and which of its blocks, transfers to this data, without fine-tuning.

Each model runs once, frozen, over the training and validation splits (`probe_features`: every block's
output pooled, kept in the feature cache so a later probe reads it back). Every block is then scored two
ways: a linear probe (a logistic regression, or ridge regression for regression targets, fitted on the
training split and scored on validation with the study's metric) and LogME (`hftl.studies.logme`, the evidence
of the training labels given the features, no validation data needed). Models are ranked by the score
at their last block (the features a fine-tuned head starts from), by LogME unless `rank_by="linear"`;
each model's best block is the one with the best linear-probe score. With `study=` (a `hftl compare
--models` folder of the same models), the ranking is set beside the fine-tuned one, with Kendall's tau.

Example:
    >>> result = probe("configs/vision/vit-head-only.yaml", "google/vit-base-patch16-224,microsoft/resnet-50")  # doctest: +SKIP
    >>> result.ranking  # doctest: +SKIP
    ['google/vit-base-patch16-224', 'microsoft/resnet-50']
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from hftl.config import CLASSIFICATION_TASKS, LOWER_IS_BETTER, Config, best_metric_name, load_config
from hftl.run_folder.layout import METRICS_FILE, STUDY_FILE
from hftl.studies.compare import parse_models
from hftl.studies.logme import logme
from hftl.utils.errors import ConfigError, HftlError
from hftl.utils.files import atomic_write_text

PROBE_FILE = "probe.json"
RANK_BY = ("logme", "linear")
CLASSIFICATION_METRICS = ("f1", "accuracy", "precision", "recall")
REGRESSION_METRICS = ("r2", "rmse", "mae")


@dataclass
class BlockScore:
    """One block's scores: the linear probe's validation metric, LogME on train, and the seconds both took."""

    block: int  # 1-based, bottom first
    linear: float  # on the mean over positions
    logme: float
    seconds: float
    # The linear probe on the first position alone (the token a BERT pooler or a ViT classifier reads; a head
    # that reads it sees little of what the mean shows below the top); None where the block has no positions.
    first_token: float | None = None


@dataclass
class ModelProbe:
    """One model's probe: its scores per block and what running it cost."""

    name: str
    checkpoint: str
    blocks: list[BlockScore]
    forward_seconds: float  # the frozen pass over train and validation (0 when read from the cache)
    reused: bool
    best_block: int = 0  # 1-based: the best linear-probe score (the lower block of equals)
    fine_tuned: float | None = None  # the model's best fine-tuned validation score in `study`, if given


@dataclass
class ProbeResult:
    output_dir: Path
    task: str
    metric: str
    rank_by: str
    models: list[ModelProbe]
    ranking: list[str]  # checkpoints, best first
    kendall_tau: dict[str, float] = field(default_factory=dict)  # by rank key, against the fine-tuned ranking
    report_md: Path | None = None
    report_html: Path | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "task": self.task, "metric": self.metric, "rank_by": self.rank_by, "ranking": self.ranking,
            "kendall_tau": self.kendall_tau,
            "models": {m.name: {**asdict(m), "blocks": [asdict(b) for b in m.blocks]} for m in self.models},
        }  # fmt: skip


def probe(
    config: str | Path | dict | Config,
    models: str | list[str],
    overrides: list[str] | None = None,
    output_dir: str | Path | None = None,
    study: str | Path | None = None,
    rank_by: str = "logme",
) -> ProbeResult:
    """Probe every model of `models` (paths, Hub ids, `builtin:` names) on the config's data; see the module doc.

    Example:
        >>> probe("configs/text/bert-head-only.yaml", ["bert-base-uncased", "roberta-base"], ["data.train=a.csv"])
        ... # doctest: +SKIP
    """
    if rank_by not in RANK_BY:
        raise ConfigError(f"--rank-by must be one of {', '.join(RANK_BY)}, got {rank_by!r}")
    named = parse_models(models)
    if not named:
        raise ConfigError("--models: name at least one checkpoint to probe")
    base = load_config(config, overrides or [])
    if output_dir is not None:
        base.output_dir = str(output_dir)
    out = Path(base.output_dir)
    _claim(out)
    from hftl.data.modalities import get_modality
    from hftl.data.sources import load_splits
    from hftl.runs.finetune import resolve_builtins

    resolve_builtins(base)
    base.data.augment = False  # the features of the examples themselves
    modality = get_modality(base.task, base)
    splits = load_splits(base.data, modality, base.train.seed)
    problem = _check_supported(base, splits)
    metric = _probe_metric(base, problem)
    result = ProbeResult(out, base.task, metric, rank_by, [], [])
    for name, checkpoint in named.items():
        print(f"\n=== probing {name} ({checkpoint})", flush=True)
        result.models.append(_probe_model(base, modality, splits, name, checkpoint, metric, problem))
    result.ranking = [m.checkpoint for m in _ranked(result.models, rank_by, metric)]
    if study is not None:
        _compare_with_study(result, Path(study))
    return _write(result)


def _claim(out: Path) -> None:
    """The probe's folder: new, empty, or an earlier probe's; never a run's or a study's."""
    if not out.is_dir() or not any(out.iterdir()) or (out / PROBE_FILE).exists():
        out.mkdir(parents=True, exist_ok=True)
        return
    what = "a finished run" if (out / METRICS_FILE).exists() else "a study" if (out / STUDY_FILE).exists() else "other files"
    raise HftlError(f"output_dir {out} holds {what}; give the probe a new or empty folder (output_dir=...)")


def _check_supported(cfg: Config, splits: Any) -> str:
    problem = splits.labels.problem
    if cfg.task not in CLASSIFICATION_TASKS or problem == "multi_label":
        what = cfg.task if cfg.task not in CLASSIFICATION_TASKS else "multi-label classification"
        raise ConfigError(
            f"hftl probe scores single-label classification and regression; {what} is not supported yet "
            "(compare fine-tuned models with `hftl compare --models` instead)"
        )
    return problem


def _probe_metric(cfg: Config, problem: str) -> str:
    """The study's metric where a probe can score it; else F1 (classification) or r2 (regression)."""
    wanted = best_metric_name(cfg)
    allowed = REGRESSION_METRICS if problem == "regression" else CLASSIFICATION_METRICS
    return wanted if wanted in allowed else allowed[0]


def _probe_model(cfg: Config, modality: Any, splits: Any, name: str, checkpoint: str, metric: str, problem: str) -> ModelProbe:
    """Load one model frozen, pool its blocks over train and validation, score every block."""
    from accelerate import PartialState
    from accelerate.utils import set_seed

    from hftl.data.sources import LABELS, column_values
    from hftl.models.loading import setup_model
    from hftl.runs.finetune import resolve_builtins, setup_data
    from hftl.studies.probe_features import block_features

    run_cfg = load_config(cfg.to_dict(), {"model.name_or_path": checkpoint, "strategy.name": "head_only"})
    resolve_builtins(run_cfg)
    set_seed(cfg.train.seed)
    model, processor, layer_map, _ = setup_model(run_cfg, modality, splits.labels)
    model.to(PartialState().device)
    data = setup_data(run_cfg, modality, processor, splits)
    settings = {k: getattr(cfg.data, k) for k in ("max_length", "max_duration_seconds", "text_pair_column")}
    found = {
        split: block_features(
            model,
            layer_map,
            ds,
            data.collate,
            processor,
            {"model": name, "split": f"{split} (probe)"},
            settings,
            batch_size=cfg.train.batch_size,
        )  # fmt: skip
        for split, ds in (("train", data.train), ("validation", data.validation))
    }
    del model
    y_train = np.asarray(column_values(splits.train, LABELS))
    y_val = np.asarray(column_values(splits.validation, LABELS))
    blocks = []
    tr, va = found["train"], found["validation"]
    for i, (train, val, train_first, val_first) in enumerate(zip(tr.blocks, va.blocks, tr.first, va.first, strict=True), 1):
        started = time.perf_counter()
        linear = linear_probe(train, y_train, val, y_val, metric, problem)
        evidence = logme(train, _logme_targets(y_train, problem), regression=problem == "regression")
        first = None if train_first is None else linear_probe(train_first, y_train, val_first, y_val, metric, problem)
        blocks.append(BlockScore(i, linear, evidence, time.perf_counter() - started, first))
        at_first = "" if first is None else f" (first token {first:.4f})"
        print(
            f"  block {i}/{len(found['train'].blocks)}: linear {metric} {linear:.4f}{at_first}, LogME {evidence:.4f}", flush=True
        )
    reused = all(f.reused for f in found.values())
    seconds = sum(f.seconds for f in found.values())
    result = ModelProbe(name, checkpoint, blocks, seconds, reused)
    result.best_block = _best_block(blocks, metric)
    return result


def _logme_targets(y: np.ndarray, problem: str) -> np.ndarray:
    """Class ids as they are; regression targets standardised (LogME's evidence depends on their scale)."""
    if problem != "regression":
        return y
    y = y.reshape(len(y), -1).astype(np.float64)
    return (y - y.mean(axis=0)) / np.where(y.std(axis=0) > 0, y.std(axis=0), 1.0)


def linear_probe(train: np.ndarray, y_train: np.ndarray, val: np.ndarray, y_val: np.ndarray, metric: str, problem: str) -> float:
    """`metric` on validation of a linear model (L2-regularised) fitted on the train features: logistic regression
    for classes, ridge regression for targets (scored in the data's units). The features are centred and divided
    by one factor, their typical magnitude (`magnitude_scale`), not standardised dimension by dimension: a
    direction that barely varies next to a large constant part stays as small as a head on the network sees it.

    Example:
        >>> x = np.r_[np.zeros((10, 2)), np.ones((10, 2))]; y = np.r_[np.zeros(10), np.ones(10)].astype(int)
        >>> linear_probe(x, y, x, y, "accuracy", "single_label")
        1.0
    """
    from sklearn.linear_model import LogisticRegression, Ridge

    train, val = magnitude_scale(train, val)
    if problem == "regression":
        fitted = Ridge(alpha=1.0).fit(train, y_train.reshape(len(y_train), -1))
        return _regression_score(fitted.predict(val), y_val.reshape(len(y_val), -1), metric)
    from hftl.data.metrics import classification_metrics

    if len(np.unique(y_train)) < 2:
        raise HftlError("the linear probe needs at least two classes in the training split")
    fitted = LogisticRegression(max_iter=2000).fit(train, y_train)
    return float(classification_metrics(fitted.predict(val).tolist(), y_val.tolist())[metric])


def magnitude_scale(train: np.ndarray, val: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Both centred on train's mean and divided by train's root-mean-square coordinate (uncentred). Per-dimension
    standardising would blow up variations of 1e-4 on a near-constant token (MiniLM's first token below its top
    layers) into a perfect-looking probe, where a head, and fine-tuning, find nothing (docs/guides/studies.md, keep_blocks).

    Example:
        >>> a, b = magnitude_scale(np.array([[10.0, 0.0], [10.0, 2.0]]), np.array([[10.0, 1.0]]))
        >>> b.tolist()
        [[0.0, 0.0]]
    """
    mean = train.mean(axis=0)
    scale = float(np.sqrt(np.mean(np.square(train, dtype=np.float64)))) or 1.0
    return (train - mean) / scale, (val - mean) / scale


def _regression_score(pred: np.ndarray, true: np.ndarray, metric: str) -> float:
    from sklearn.metrics import r2_score

    if metric == "r2":
        return float(r2_score(true, pred))
    errors = pred - true
    return float(np.sqrt(np.mean(errors**2)) if metric == "rmse" else np.mean(np.abs(errors)))


def _best_block(blocks: list[BlockScore], metric: str) -> int:
    sign = -1 if metric in LOWER_IS_BETTER else 1
    return max(blocks, key=lambda b: (sign * b.linear, -b.block)).block


def _score(m: ModelProbe, key: str, metric: str) -> float:
    """The model's score at its last block, higher is better."""
    last = m.blocks[-1]
    if key == "logme":
        return last.logme
    return -last.linear if metric in LOWER_IS_BETTER else last.linear


def _ranked(models: list[ModelProbe], key: str, metric: str) -> list[ModelProbe]:
    return sorted(models, key=lambda m: -_score(m, key, metric))


def _compare_with_study(result: ProbeResult, study_dir: Path) -> None:
    """Each model's best fine-tuned score in the study, and Kendall's tau between that ranking and the probe's."""
    from scipy.stats import kendalltau

    marker = study_dir / STUDY_FILE
    if not marker.is_file():
        raise HftlError(f"--study {study_dir}: no {STUDY_FILE} there; point it at a `hftl compare --models` folder")
    info = json.loads(marker.read_text())
    key = f"validation_{result.metric}"
    by_checkpoint = {ckpt: label for label, ckpt in (info.get("models") or {}).items()}
    for m in result.models:
        label = by_checkpoint.get(m.checkpoint)
        scores = [r[key] for r in info.get("rows", []) if r.get("model") == label and key in r]
        if scores:
            m.fine_tuned = min(scores) if result.metric in LOWER_IS_BETTER else max(scores)
    matched = [m for m in result.models if m.fine_tuned is not None]
    if len(matched) < 2:
        raise HftlError(
            f"--study {study_dir}: fine-tuned {result.metric} found for {len(matched)} of the probed models; "
            "the rank correlation needs at least two (run `hftl compare --models` with the same checkpoints)"
        )
    sign = -1 if result.metric in LOWER_IS_BETTER else 1
    tuned = [sign * m.fine_tuned for m in matched]
    for rank_key in RANK_BY:
        tau = kendalltau([_score(m, rank_key, result.metric) for m in matched], tuned).statistic
        result.kendall_tau[rank_key] = float(tau) if np.isfinite(tau) else 0.0


def _write(result: ProbeResult) -> ProbeResult:
    from hftl.studies.probe_report import write_probe_report

    result.report_md, result.report_html = write_probe_report(result)
    atomic_write_text(result.output_dir / PROBE_FILE, json.dumps(result.to_dict(), indent=2))
    return result
