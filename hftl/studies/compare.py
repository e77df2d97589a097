"""`hftl compare`: a study of several strategies (and models) on the same data, split, seed and budget, then one report.

Each strategy (and seed) is an ordinary run in its own folder under the study's output_dir, so every
run is resumable and loadable on its own. A finished run is reused when the study is started again;
an unfinished one resumes from its last checkpoint. With `models`, the grid is model x strategy, each
model's runs under `output_dir/<model>/<strategy>`.

Example:
    >>> study = compare("configs/text/minilm-vader-full.yaml", ["scratch", "head_only", "full"])  # doctest: +SKIP
    >>> study.report_md                                                                              # doctest: +SKIP
    PosixPath('runs/study/report.md')
"""

from __future__ import annotations

import json
import shutil
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hftl.config import Config, best_metric_name, load_config
from hftl.models.strategies import PRESETS, REGISTRY, preset_settings
from hftl.run_folder.layout import CONFIG_FILE, METRICS_FILE, STUDY_FILE, is_finished, read_metrics, saved_config_diff
from hftl.runs.finetune import resolve_builtins, run
from hftl.studies.compare_report import write_report
from hftl.utils.errors import ConfigError, HftlError

# Study names for strategies: the registered ones plus the presets (the head-first hybrid).
STUDY_STRATEGIES = (*REGISTRY, *PRESETS)
DEFAULT_STRATEGIES = ("scratch", "head_only", "freeze", "lora", "full")


@dataclass
class RunRecord:
    """One strategy x seed of a study: where it ran and what it measured (None while unfinished)."""

    strategy: str
    seed: int
    run_dir: Path
    metrics: dict[str, Any] | None = None
    error: str | None = None
    reused: bool = False
    model: str | None = None  # a model study's name for the model; None: the config's model
    method: str | None = None  # an adaptation study's adapt.method; None: the config's

    @property
    def arm(self) -> str:
        """What the report calls this run's row: the strategy, with `model / ` and `method / ` before it in model
        and adaptation studies."""
        return arm_name(self.model, self.method, self.strategy)


def arm_name(model: str | None, method: str | None, strategy: str) -> str:
    """`model / method / strategy`, leaving out what the study does not vary.

    Example:
        >>> arm_name(None, "dann", "full")
        'dann / full'
    """
    return " / ".join(part for part in (model, method, strategy) if part)


@dataclass
class Study:
    output_dir: Path
    task: str
    metric: str
    strategies: list[str]
    seeds: list[int]
    runs: list[RunRecord] = field(default_factory=list)
    report_md: Path | None = None
    report_html: Path | None = None
    models: dict[str, str] = field(default_factory=dict)  # a model study: name -> checkpoint (path or Hub id)
    methods: list[str] = field(default_factory=list)  # an adaptation study (--adapt): the adapt.method values

    @property
    def arms(self) -> list[tuple[str | None, str]]:
        """(model, strategy) of every row of the report, models outermost; model None outside model studies."""
        return [(m, s) for m in (list(self.models) or [None]) for s in self.strategies]


def parse_strategies(text: str | list[str]) -> list[str]:
    """`scratch,head_only,lora` as a checked list (order kept, duplicates refused).

    Example:
        >>> parse_strategies("scratch, head_only,lora")
        ['scratch', 'head_only', 'lora']
    """
    names = [s.strip() for s in text.split(",")] if isinstance(text, str) else list(text)
    names = [n.replace("-", "_") for n in names if n]
    unknown = [n for n in names if n not in STUDY_STRATEGIES]
    if unknown or not names:
        given = ", ".join(unknown) or "(none given)"
        raise ConfigError(f"--strategies: unknown {given}; choose from {', '.join(STUDY_STRATEGIES)}")
    if len(set(names)) != len(names):
        raise ConfigError(f"--strategies lists a strategy twice: {', '.join(names)}")
    return names


def split_overrides(overrides: list[str], strategies: list[str]) -> tuple[list[str], dict[str, list[str]]]:
    """Shared `key=value` overrides, and per-strategy ones written `STRATEGY:key=value`.

    Example:
        >>> split_overrides(["epochs=2", "lora:train.learning_rate=5e-4"], ["lora", "full"])
        (['epochs=2'], {'lora': ['train.learning_rate=5e-4'], 'full': []})
    """
    shared: list[str] = []
    per: dict[str, list[str]] = {s: [] for s in strategies}
    for item in overrides:
        head, sep, rest = item.partition(":")
        if sep and "=" not in head:
            name = head.strip().replace("-", "_")
            if name not in per:
                raise ConfigError(
                    f"override {item!r} is for strategy {name!r}, which the study does not run ({', '.join(strategies)})"
                )
            per[name].append(rest)
        else:
            shared.append(item)
    return shared, per


def parse_models(text: str | list[str] | None) -> dict[str, str]:
    """`--models M1,M2`: {short name: checkpoint}, the name the last part of a path or Hub id (made unique).

    Example:
        >>> parse_models("google/vit-base, ./ckpt/vit-base/,builtin:lite0")
        {'vit-base': 'google/vit-base', 'vit-base-2': './ckpt/vit-base/', 'lite0': 'builtin:lite0'}
    """
    names = [m.strip() for m in text.split(",")] if isinstance(text, str) else [str(m) for m in text or []]
    names = [n for n in names if n]
    if len(set(names)) != len(names):
        raise ConfigError(f"--models lists a model twice: {', '.join(names)}")
    models: dict[str, str] = {}
    for name in names:
        short = name.rstrip("/").replace("\\", "/").split("/")[-1].split(":")[-1] or "model"
        label, n = short, 1
        while label in models:
            n += 1
            label = f"{short}-{n}"
        models[label] = name
    return models


def run_config(
    base: Config, strategy: str, seed: int, run_dir: Path, extra: list[str], model: str | None = None, method: str | None = None
) -> Config:
    """The config of one study run: the base config with its strategy, seed, folder (and model, adapt.method)."""
    raw = base.to_dict()
    raw["output_dir"] = str(run_dir)
    if model is not None:
        raw["model"]["name_or_path"] = model
    if method is not None:
        raw["adapt"]["method"] = method
    raw["train"]["seed"] = seed
    raw["resume"], raw["overwrite"] = False, False
    raw["strategy"] = preset_settings(strategy, raw["strategy"])
    return load_config(raw, extra)


def compare(
    config: str | Path | dict | Config,
    strategies: list[str] | str = DEFAULT_STRATEGIES,
    seeds: int = 1,
    overrides: list[str] | None = None,
    output_dir: str | Path | None = None,
    models: list[str] | str | None = None,
    adapt: list[str] | str | None = None,
) -> Study:
    """Run every strategy (x seeds, x models) of the study, reusing finished runs, then write the report.

    `overwrite=true` among the overrides redoes finished runs instead of reusing them. `models` (checkpoints:
    paths, Hub ids or `builtin:` names) makes it a model study: every strategy of every model, one report.
    `adapt` (adapt.method values) makes it an adaptation study: every method with every strategy, the report
    led by the target test; a method refused for a strategy is listed with the reason.

    Example:
        >>> compare("configs/vision/vit-full.yaml", "head_only,full", models="google/vit-base-patch16-224,microsoft/resnet-50")
        ... # doctest: +SKIP
    """
    names = parse_strategies(strategies)
    model_names = parse_models(models)
    if seeds < 1:
        raise ConfigError(f"--seeds must be >= 1, got {seeds}")
    shared, per = split_overrides(overrides or [], names)
    base = load_config(config, shared)
    if output_dir is not None:
        base.output_dir = str(output_dir)
    study_dir = Path(base.output_dir)
    resolve_builtins(base)
    seed_list = [base.train.seed + i for i in range(seeds)]
    # Check every run's config before the first one starts: a typo in `lora:...` fails now, not in an hour.
    methods = parse_methods(adapt)
    plans = []
    for seed in seed_list:
        for model in list(model_names) or [None]:
            for method in methods or [None]:
                for name in names:
                    run_dir = study_dir / model if model else study_dir
                    run_dir = run_dir / method / name if method else run_dir / name
                    run_dir = run_dir if seeds == 1 else run_dir / f"seed-{seed}"
                    record = RunRecord(name, seed, run_dir, model=model, method=method)
                    try:
                        cfg = run_config(base, name, seed, run_dir, per[name], model_names.get(model), method)
                    except ConfigError as e:
                        if method is None:
                            raise
                        record.error, cfg = f"refused: {e}", None  # this pair cannot run; the rest of the study can
                    plans.append((record, cfg))
    _claim_study_dir(study_dir, base, names, seed_list, model_names, methods)

    study = Study(study_dir, base.task, best_metric_name(base), names, seed_list, models=model_names, methods=methods)
    for i, (record, cfg) in enumerate(plans, 1):
        study.runs.append(record)
        print(f"\n=== [{i}/{len(plans)}] {record.arm} (seed {record.seed}) -> {record.run_dir}", flush=True)
        _execute(record, cfg, base.overwrite)
    study.report_md, study.report_html = write_report(study)
    return study


def _execute(record: RunRecord, cfg: Config | None, overwrite: bool) -> None:
    """Run (or reuse, or resume) one run of the study, recording its metrics or why it failed or was refused."""
    name, run_dir = record.strategy, record.run_dir
    if cfg is None:  # refused when the plan was made
        print(record.error)
        return
    if is_finished(run_dir) and overwrite:  # overwrite=true redoes the study's finished runs
        shutil.rmtree(run_dir)
    if is_finished(run_dir):
        _check_reusable(cfg, run_dir)
        record.metrics, record.reused = read_metrics(run_dir), True
        print(f"finished earlier: reusing {run_dir / METRICS_FILE}")
        return
    cfg.resume = (run_dir / CONFIG_FILE).exists()  # an interrupted run continues from its checkpoint
    try:
        run(cfg)
        record.metrics = read_metrics(run_dir)
    except ConfigError as e:  # known once the model is loaded (AdaBN on a model without BatchNorm): nothing written
        record.error = f"refused: {e}" if record.method else str(e)
        print(f"{record.arm}: {record.error}" if record.method else f"{name} failed: {e}")
    except HftlError as e:  # a strategy that cannot run here (e.g. no LoRA target) must not sink the study
        record.error = str(e)
        print(f"{name} failed: {e}")
    except Exception as e:  # noqa: BLE001 - report, keep the other strategies' results
        record.error = f"{type(e).__name__}: {e}"
        print(f"{name} failed:\n{traceback.format_exc()}")


def parse_methods(text: str | list[str] | None) -> list[str]:
    """`--adapt none,adabn,dann` as a checked list (empty when not given).

    Example:
        >>> parse_methods("none, dann")
        ['none', 'dann']
    """
    from hftl.config import ADAPT_METHODS

    names = [m.strip() for m in text.split(",")] if isinstance(text, str) else list(text or [])
    names = [n for n in names if n]
    unknown = [n for n in names if n not in ADAPT_METHODS]
    if unknown:
        raise ConfigError(f"--adapt: unknown {', '.join(unknown)}; choose from {', '.join(ADAPT_METHODS)}")
    if len(set(names)) != len(names):
        raise ConfigError(f"--adapt lists a method twice: {', '.join(names)}")
    return names


def _claim_study_dir(
    study_dir: Path, base: Config, names: list[str], seeds: list[int], models: dict[str, str], methods: list[str]
) -> None:
    """A study folder holds a study.json; refuse a folder that holds something else."""
    marker = study_dir / STUDY_FILE
    if study_dir.is_dir() and any(study_dir.iterdir()) and not marker.exists():
        raise HftlError(f"output_dir {study_dir} is not empty and holds no hftl study; choose a new or empty folder")
    study_dir.mkdir(parents=True, exist_ok=True)
    info = {"task": base.task, "strategies": names, "seeds": seeds, "base_config": base.to_dict()}
    if models:
        info["models"] = models
    if methods:
        info["adapt"] = methods
    marker.write_text(json.dumps(info, indent=2))


def _check_reusable(cfg: Config, run_dir: Path) -> None:
    """A finished run is reused only if it was made with the same settings."""
    diffs = saved_config_diff(cfg, run_dir)
    if diffs:
        raise HftlError(
            f"{run_dir} holds a finished run with other settings ({', '.join(diffs[:5])}). "
            "Use a new output_dir for the changed study, or delete that run folder to redo it"
        )
