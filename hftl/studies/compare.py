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

import itertools
import json
import shutil
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hftl.config import Config, best_metric_name, load_config
from hftl.models.architecture_needs import check_architecture
from hftl.models.strategies import PRESETS, REGISTRY, preset_settings
from hftl.run_folder.layout import (
    CONFIG_FILE,
    METRICS_FILE,
    STUDY_FILE,
    is_finished,
    read_metrics,
    read_tables,
    saved_config_diff,
)
from hftl.runs.finetune import resolve_builtins, run
from hftl.studies.compare_report import write_report
from hftl.utils.errors import ConfigError, HftlError
from hftl.utils.files import atomic_write_text

# Study names for strategies: the registered ones plus the presets (the head-first hybrid).
STUDY_STRATEGIES = (*REGISTRY, *PRESETS)
DEFAULT_STRATEGIES = ("scratch", "head_only", "freeze", "lora", "full")


@dataclass
class RunRecord:
    """One cell of a study's grid (strategy x seed, and model, method, fold, label budget): where it ran and what it
    measured (None while unfinished)."""

    strategy: str
    seed: int
    run_dir: Path
    metrics: dict[str, Any] | None = None
    error: str | None = None
    reused: bool = False
    model: str | None = None  # a model study's name for the model; None: the config's model
    method: str | None = None  # an adaptation study's adapt.method; None: the config's
    fold: int | None = None  # --folds: the fold this run validates on
    size: int | None = None  # --train-sizes: the label budget (data.train_size)
    tables: dict[str, Any] | None = None  # eval_examples.json: per split, one row per example (the bootstrap's input)

    @property
    def arm(self) -> str:
        """What the report calls this run's row: the strategy, with `model / ` and `method / ` before it in model
        and adaptation studies, and ` @ N labels` after it in a label-budget study."""
        return arm_name(self.model, self.method, self.strategy, self.size)

    @property
    def block(self) -> str:
        """The evaluation set this run was scored on: runs of the same block saw the same validation examples."""
        return f"seed {self.seed}" + (f" / fold {self.fold}" if self.fold is not None else "")


def arm_name(model: str | None, method: str | None, strategy: str, size: int | None = None) -> str:
    """`model / method / strategy @ N labels`, leaving out what the study does not vary.

    Example:
        >>> arm_name(None, "dann", "full")
        'dann / full'
        >>> arm_name("lite0", None, "lora", 100)
        'lite0 / lora @ 100 labels'
    """
    return " / ".join(part for part in (model, method, strategy) if part) + (f" @ {size} labels" if size else "")


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
    folds: int | None = None  # --folds K: every arm runs once per fold
    sizes: list[int] = field(default_factory=list)  # --train-sizes: the label budgets, smallest first

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
    base: Config,
    strategy: str,
    seed: int,
    run_dir: Path,
    extra: list[str],
    model: str | None = None,
    method: str | None = None,
    data: dict[str, Any] | None = None,
) -> Config:
    """The config of one study run: the base config with its strategy, seed, folder (and model, adapt.method, and
    `data` keys: the fold and label budget)."""
    raw = base.to_dict()
    raw["output_dir"] = str(run_dir)
    if model is not None:
        raw["model"]["name_or_path"] = model
    if method is not None:
        raw["adapt"]["method"] = method
    raw["train"]["seed"] = seed
    raw["resume"], raw["overwrite"] = False, False
    raw["strategy"] = preset_settings(strategy, raw["strategy"])
    for key, value in (data or {}).items():
        raw["data"][key.split(".", 1)[1]] = value
    return load_config(raw, extra)


def compare(
    config: str | Path | dict | Config,
    strategies: list[str] | str = DEFAULT_STRATEGIES,
    seeds: int = 1,
    overrides: list[str] | None = None,
    output_dir: str | Path | None = None,
    models: list[str] | str | None = None,
    adapt: list[str] | str | None = None,
    folds: int | None = None,
    train_sizes: list[int] | str | None = None,
    storage: str | None = None,
    study_name: str | None = None,
    report_only: bool = False,
) -> Study:
    """Run every cell of the study's grid, reusing finished runs, then write the report.

    The grid is strategies x seeds, and x `models` (checkpoints: paths, Hub ids or `builtin:` names), x `adapt`
    (adapt.method values; a method refused for a strategy is listed with the reason), x `folds` (K-fold
    cross-validation, data.folds / data.fold) and x `train_sizes` (nested label budgets, data.train_size) when given.
    `overwrite=true` among the overrides redoes finished runs. `storage` and `study_name` share the grid with other
    processes through Optuna (`studies.study_grid`); `report_only` writes the report from what has finished.

    Example:
        >>> compare("configs/vision/vit-full.yaml", "head_only,full", folds=5, train_sizes="50,100,300")
        ... # doctest: +SKIP
    """
    names = parse_strategies(strategies)
    model_names = parse_models(models)
    sizes = parse_sizes(train_sizes)
    if seeds < 1:
        raise ConfigError(f"--seeds must be >= 1, got {seeds}")
    if folds is not None and folds < 2:
        raise ConfigError(f"--folds must be >= 2 (K-fold cross-validation), got {folds}")
    if study_name and not storage:
        raise ConfigError("--study-name names a study in --storage: give --storage URL too")
    shared, per = split_overrides(overrides or [], names)
    base = load_config(config, shared)
    if output_dir is not None:
        base.output_dir = str(output_dir)
    study_dir = Path(base.output_dir)
    resolve_builtins(base)
    seed_list = [base.train.seed + i for i in range(seeds)]
    methods = parse_methods(adapt)
    study = Study(
        study_dir, base.task, best_metric_name(base), names, seed_list, models=model_names, methods=methods,
        folds=folds, sizes=sizes,
    )  # fmt: skip
    cells = plan_grid(base, study, per)  # every run's config checked now: a typo in `lora:...` fails before an hour
    _claim_study_dir(study_dir, base, study, storage)
    study.runs = [record for record, _ in cells]
    if storage:
        from hftl.studies.study_grid import run_shared

        name = study_name or study_dir.name
        execute = lambda record, cfg: _execute(record, cfg, base.overwrite)  # noqa: E731
        done = run_shared(cells, storage, name, execute, lambda r: _cell_key(r, study_dir), report_only)
        if not done and not report_only:  # the last process to finish writes it, with every cell's numbers
            print("\nthis process is done; other processes still run cells of the grid. The last to finish writes the "
                  "report (any time: the same command with --report-only)")  # fmt: skip
            return study
    else:
        for i, (record, cfg) in enumerate(cells, 1):
            if report_only:
                _read_finished(record, cfg)
                continue
            print(f"\n=== [{i}/{len(cells)}] {record.arm} ({record.block}) -> {record.run_dir}", flush=True)
            _execute(record, cfg, base.overwrite)
    study.report_md, study.report_html = write_report(study)
    return study


def plan_grid(base: Config, study: Study, per: dict[str, list[str]]) -> list[tuple[RunRecord, Config | None]]:
    """Every cell of the grid as (record, config), seeds outermost; a config refused for an adaptation method is None
    and the record says why (the rest of the study can run). Folders: <model>/<method>/<strategy>/n-<size>/fold-<k>/
    seed-<s>, each part only when the study varies it."""
    cells, checked = [], set()
    dims = (
        study.seeds, list(study.models) or [None], study.methods or [None], study.sizes or [None],
        range(study.folds) if study.folds else [None], study.strategies,
    )  # fmt: skip
    for seed, model, method, size, fold, name in itertools.product(*dims):
        parts = [model, method, name, size and f"n-{size}", None if fold is None else f"fold-{fold}"]
        run_dir = study.output_dir.joinpath(*[p for p in parts if p is not None])
        run_dir = run_dir / f"seed-{seed}" if len(study.seeds) > 1 else run_dir
        record = RunRecord(name, seed, run_dir, model=model, method=method, fold=fold, size=size)
        data = {"data.train_size": size} if size else {}
        data |= {"data.folds": study.folds, "data.fold": fold} if study.folds else {}
        try:
            cfg = run_config(base, name, seed, run_dir, per[name], study.models.get(model), method, data)
        except ConfigError as e:
            if method is None:
                raise
            record.error, cfg = f"refused: {e}", None  # this pair cannot run; the others can
        if cfg is not None and (m := cfg.model).name_or_path not in checked:  # an architecture hftl refuses: now
            checked.add(m.name_or_path)
            check_architecture(cfg.task, m.name_or_path, m.revision, m.trust_remote_code)
        cells.append((record, cfg))
    return cells


def parse_sizes(text: str | list[int] | None) -> list[int]:
    """`--train-sizes 50,100,300` as a sorted list of distinct positive label budgets (empty when not given).

    Example:
        >>> parse_sizes("300, 50,100")
        [50, 100, 300]
    """
    items = [t.strip() for t in text.split(",")] if isinstance(text, str) else list(text or [])
    try:
        sizes = [int(t) for t in items if str(t)]
    except ValueError:
        raise ConfigError(f"--train-sizes takes whole numbers of training examples, e.g. 50,100,300; got {text!r}") from None
    if any(n < 1 for n in sizes) or len(set(sizes)) != len(sizes):
        raise ConfigError(f"--train-sizes must be distinct numbers >= 1, got {text!r}")
    return sorted(sizes)


def _cell_key(record: RunRecord, study_dir: Path) -> str:
    """A cell's name that is the same in every process of a shared grid: its run folder inside the study."""
    return record.run_dir.relative_to(study_dir).as_posix()


def _read_finished(record: RunRecord, cfg: Config | None) -> None:
    """--report-only: a finished run's results, else the record says it has not run."""
    if cfg is None:
        return
    if is_finished(record.run_dir):
        _check_reusable(cfg, record.run_dir)
        record.metrics, record.tables, record.reused = read_metrics(record.run_dir), read_tables(record.run_dir), True
    else:
        record.error = "not run yet"


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
        record.metrics, record.tables, record.reused = read_metrics(run_dir), read_tables(run_dir), True
        print(f"finished earlier: reusing {run_dir / METRICS_FILE}")
        return
    cfg.resume = (run_dir / CONFIG_FILE).exists()  # an interrupted run continues from its checkpoint
    try:
        run(cfg)
        record.metrics, record.tables = read_metrics(run_dir), read_tables(run_dir)
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


def _claim_study_dir(study_dir: Path, base: Config, study: Study, storage: str | None) -> None:
    """A study folder holds a study.json; refuse a folder that holds something else."""
    marker = study_dir / STUDY_FILE
    if study_dir.is_dir() and any(study_dir.iterdir()) and not marker.exists():
        raise HftlError(f"output_dir {study_dir} is not empty and holds no hftl study; choose a new or empty folder")
    study_dir.mkdir(parents=True, exist_ok=True)
    info: dict[str, Any] = {"task": base.task, "strategies": study.strategies, "seeds": study.seeds}
    info["base_config"] = base.to_dict()
    optional = {"models": study.models, "adapt": study.methods, "folds": study.folds, "train_sizes": study.sizes}
    info.update({key: value for key, value in optional.items() if value})
    if storage:
        from hftl.studies.optuna_storage import shown_url

        info["storage"] = shown_url(storage)
    atomic_write_text(marker, json.dumps(info, indent=2))  # processes sharing a grid write the same file


def _check_reusable(cfg: Config, run_dir: Path) -> None:
    """A finished run is reused only if it was made with the same settings."""
    diffs = saved_config_diff(cfg, run_dir)
    if diffs:
        raise HftlError(
            f"{run_dir} holds a finished run with other settings ({', '.join(diffs[:5])}). "
            "Use a new output_dir for the changed study, or delete that run folder to redo it"
        )
