"""`hftl search`: hyperparameter search on Optuna, every trial an ordinary run folder.

TPE samples the space (`search_space`: a default per strategy, or `--space SPACE.yaml`); each trial trains
into `output_dir/trial-<n>/` and reports its validation metric after every epoch, where the median pruner
stops trials that fall behind. The study lives in an Optuna RDB storage (default `output_dir/search.db`,
SQLite): a search started again continues it, and several `hftl search` processes (or machines) given the
same `--storage` and `--study-name` share the trials, Optuna's own way of scaling a search out. A trial
whose process died is failed by Optuna's heartbeat and retried with the same parameters, resuming its run
folder. head_only trials after the first read the feature cache the first one filled.

Output: `best.yaml` (the best trial's config, runnable by `hftl train`), `search.json` (every trial: number,
state, parameters, value, run folder), `report.md` / `report.html` (optimisation history, parameter
importances, the trials table).

Example:
    >>> result = search("configs/text/minilm-vader-head-only.yaml", trials=20)  # doctest: +SKIP
    >>> result.best_params                                                     # doctest: +SKIP
    {'train.head_learning_rate': 0.031, 'train.weight_decay': 2e-05, 'train.warmup_ratio': 0.04}
"""

from __future__ import annotations

import json
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hftl.config import LOWER_IS_BETTER, Config, best_metric_name, load_config
from hftl.run_folder.layout import METRICS_FILE, STUDY_FILE
from hftl.studies.optuna_storage import optuna_storage, shown_url
from hftl.studies.search_space import default_space, load_space, suggest
from hftl.utils.errors import ConfigError, DivergedError, HftlError
from hftl.utils.files import atomic_write_text

SEARCH_FILE = "search.json"
BEST_FILE = "best.yaml"


@dataclass
class SearchResult:
    output_dir: Path
    metric: str
    direction: str
    trials: list[dict[str, Any]] = field(default_factory=list)
    best_params: dict[str, Any] = field(default_factory=dict)
    best_value: float | None = None
    best_yaml: Path | None = None
    report_md: Path | None = None
    report_html: Path | None = None


def search(
    config: str | Path | dict | Config,
    trials: int,
    space: str | Path | dict | None = None,
    storage: str | None = None,
    study_name: str | None = None,
    overrides: list[str] | None = None,
    output_dir: str | Path | None = None,
) -> SearchResult:
    """Run the search until the study holds `trials` finished trials (from this and any other process)."""
    import optuna

    if trials < 1:
        raise ConfigError(f"--trials must be >= 1, got {trials}")
    base = load_config(config, overrides or [])
    if output_dir is not None:
        base.output_dir = str(output_dir)
    out = Path(base.output_dir)
    _claim(out)
    chosen = _space(base, space)
    metric = best_metric_name(base)
    direction = "minimize" if metric in LOWER_IS_BETTER else "maximize"
    optuna.logging.set_verbosity(optuna.logging.ERROR)  # hftl says what each trial did
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)  # heartbeats: stable since 2.8
    url = storage or f"sqlite:///{(out / 'search.db').resolve()}"
    study = optuna.create_study(
        study_name=study_name or out.name,
        storage=optuna_storage(url),
        sampler=optuna.samplers.TPESampler(seed=None if storage else base.train.seed, constant_liar=True),
        pruner=optuna.pruners.MedianPruner(n_startup_trials=2, n_warmup_steps=0),
        direction=direction,
        load_if_exists=True,
    )
    finished = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED, optuna.trial.TrialState.FAIL)
    done = optuna.study.MaxTrialsCallback(trials, states=finished)
    print(f"search: {trials} trials of {', '.join(chosen)} ({direction} validation {metric}); storage {shown_url(url)}")
    # A diverged trial fails and the search goes on; any other error (missing data, a bad key) is the same for
    # every trial and stops the search at once.
    study.optimize(_objective(base, chosen, out, metric), callbacks=[done], catch=(DivergedError,))
    return _finish(study, base, out, metric, direction)


def _claim(out: Path) -> None:
    if out.is_dir() and any(out.iterdir()) and not (out / SEARCH_FILE).exists() and not (out / "search.db").exists():
        what = "a finished run" if (out / METRICS_FILE).exists() else "a study" if (out / STUDY_FILE).exists() else "other files"
        raise HftlError(f"output_dir {out} holds {what}; give the search a new or empty folder (output_dir=...)")
    out.mkdir(parents=True, exist_ok=True)


def _space(base: Config, space: str | Path | dict | None) -> dict[str, dict[str, Any]]:
    """The space, each key tried on the config once now, so a key the config refuses fails before any trial."""
    from hftl.studies.search_space import check_space

    if space is None:
        chosen = default_space(base.strategy.name if not base.strategy.head_warmup_epochs else "full")
    elif isinstance(space, dict):
        chosen = check_space(space, base.task)
    else:
        chosen = load_space(space, base.task)
    for key, spec in chosen.items():
        sample = spec["choices"][0] if spec["type"] == "categorical" else spec["low"]
        load_config(base.to_dict(), {key: sample})
    return chosen


def _objective(base: Config, space: dict[str, dict[str, Any]], out: Path, metric: str) -> Any:
    import optuna

    from hftl.runs.finetune import run

    def objective(trial: optuna.Trial) -> float:
        params = suggest(trial, space)  # a retried trial gets the dead one's parameters back
        retried = trial.user_attrs.get("run_dir")  # the retry copies the dead trial's attributes: resume its folder
        run_dir = Path(retried) if retried else out / f"trial-{trial.number:04d}"
        trial.set_user_attr("run_dir", str(run_dir))
        cfg = load_config(base.to_dict(), {**params, "output_dir": str(run_dir), "overwrite": False})
        cfg.resume = (run_dir / "config.yaml").exists() and not (run_dir / METRICS_FILE).exists()
        print(f"\n=== trial {trial.number}{' (a retry, resumed)' if retried else ''}: {params} -> {run_dir}")

        def report(epoch: int, metrics: dict[str, float]) -> None:
            trial.report(metrics[metric], epoch)
            if trial.should_prune():
                print(f"trial {trial.number} pruned after epoch {epoch} ({metric} {metrics[metric]:.4f})")
                raise optuna.TrialPruned()

        try:
            result = run(cfg, on_epoch=report)
        except DivergedError as e:
            print(f"trial {trial.number} diverged ({str(e).splitlines()[0][:160]}): failed, the search goes on")
            raise
        return result.metrics[metric]

    return objective


def _finish(study: Any, base: Config, out: Path, metric: str, direction: str) -> SearchResult:
    from hftl.studies.search_report import write_search_report

    result = SearchResult(out, metric, direction)
    for t in study.trials:
        result.trials.append({
            "number": t.number, "state": t.state.name, "params": t.params, "value": t.value,
            "run_dir": t.user_attrs.get("run_dir"), "epochs_reported": len(t.intermediate_values),
            "seconds": t.duration.total_seconds() if t.duration else None,
        })  # fmt: skip
    complete = [t for t in study.trials if t.state.name == "COMPLETE"]
    if complete:
        best = study.best_trial
        result.best_params, result.best_value = best.params, best.value
        result.best_yaml = out / BEST_FILE
        cfg = load_config(base.to_dict(), {**best.params, "output_dir": str(out / "best")})
        cfg.save(result.best_yaml)
        print(f"\nbest: trial {best.number}, {metric} {best.value:.4f}: {best.params}\n`hftl train {result.best_yaml}` runs it")
    result.report_md, result.report_html = write_search_report(study, result)
    atomic_write_text(out / SEARCH_FILE, json.dumps({
        "metric": metric, "direction": direction, "best_params": result.best_params, "best_value": result.best_value,
        "trials": result.trials,
    }, indent=2, default=str))  # fmt: skip
    return result
