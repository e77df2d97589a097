"""`hftl compare --storage URL --study-name NAME`: one study's grid run by several processes or machines.

The grid's cells (models x strategies x seeds x folds x label budgets x adaptation methods) are the trials of one
Optuna study. The process that creates the study enqueues every cell once; each process then pops waiting cells,
which the storage hands out one at a time (a row lock), so no cell runs twice. A process that dies stops beating
its heart: Optuna fails its trial after three missed beats and enqueues a retry with the same cell, and the next
process to pop it resumes its run folder (on a shared disk) or starts it afresh. A finished cell stores its
metrics.json and eval_examples.json in the trial, so any process, on any machine, can write the report: the
last one to finish does, and `--report-only` does at any time.

Example:
    >>> run_shared(cells, "postgresql+psycopg2://hftl@db/studies", "digits-grid", execute)  # doctest: +SKIP
    True
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

from hftl.studies.optuna_storage import optuna_storage, shown_url
from hftl.utils.errors import ConfigError, HftlError

CELL = "cell"  # the trial parameter: the cell's index in the grid
GRID_ATTR = "hftl_grid"  # the study's user attribute: every cell's key, so a process with other arguments is refused
WAIT_FOR_GRID_SECONDS = 120


def _open(storage: str, study_name: str, keys: list[str]) -> Any:
    """The study, created with every cell enqueued once (by whichever process created it), or loaded and checked."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.ERROR)  # hftl says what each run did
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)  # heartbeats: stable since 2.8
    rdb = optuna_storage(storage)
    try:  # creation is atomic: exactly one process wins and fills the queue
        study = optuna.create_study(study_name=study_name, storage=rdb, direction="maximize")
        for i in range(len(keys)):
            study.enqueue_trial({CELL: i}, skip_if_exists=False)
        study.set_user_attr(GRID_ATTR, keys)
        return study
    except optuna.exceptions.DuplicatedStudyError:
        study = optuna.load_study(study_name=study_name, storage=rdb)
    deadline = time.monotonic() + WAIT_FOR_GRID_SECONDS
    while GRID_ATTR not in study.user_attrs:  # the creator is still enqueuing
        if time.monotonic() > deadline:
            raise HftlError(f"study {study_name!r} in {shown_url(storage)} holds no hftl grid; give a new --study-name")
        time.sleep(0.5)
    if study.user_attrs[GRID_ATTR] != keys:
        raise ConfigError(
            f"study {study_name!r} in {shown_url(storage)} runs another grid ({len(study.user_attrs[GRID_ATTR])} cells, "
            f"this command's has {len(keys)}): give every process the same config, options and overrides, "
            "or a new --study-name"
        )
    return study


def run_shared(
    cells: list[tuple[Any, Any]],
    storage: str,
    study_name: str,
    execute: Callable[[Any, Any], None],
    key: Callable[[Any], str],
    report_only: bool = False,
) -> bool:
    """Run the cells no process has taken, then fill every record from the storage; True when the grid is done.

    `cells` are (record, config) pairs, `execute(record, config)` runs one (filling record.metrics / tables / error),
    `key(record)` names a cell the same way in every process.
    """
    import optuna

    study = _open(storage, study_name, [key(record) for record, _ in cells])
    if not report_only:

        def objective(trial: optuna.Trial) -> float:
            frozen = next(t for t in trial.study.get_trials(deepcopy=False) if t.number == trial.number)
            if _cell_of(frozen) is None:
                trial.set_user_attr("empty", True)  # the queue ran dry between our look and our pop: nothing to do
                trial.study.stop()
                raise optuna.TrialPruned()
            record, cfg = cells[trial.suggest_int(CELL, 0, len(cells) - 1)]
            retried = "failed_trial" in frozen.system_attrs
            print(f"\n=== trial {trial.number}: {record.arm} (seed {record.seed}){' (a retry)' if retried else ''}")
            execute(record, cfg)
            _store(trial, record)
            metric = (record.metrics or {}).get("validation") or {}
            return float(next(iter(metric.values()), float("nan"))) if record.metrics else float("nan")

        def stop_when_drained(study: optuna.Study, _: Any) -> None:
            if not study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.WAITING,)):
                study.stop()

        optuna.storages.fail_stale_trials(study)  # a process that died after the others finished: retry its cell
        _requeue_dead(study, len(cells))
        if study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.WAITING,)):
            study.optimize(objective, callbacks=[stop_when_drained])
    return _collect(study, cells)


def _requeue_dead(study: Any, count: int) -> None:
    """Cells whose process died twice (the heartbeat retries once) go back in the queue, when no process is at work:
    starting `hftl compare` again retries them, without racing a live process to do so."""
    import optuna

    states = optuna.trial.TrialState
    trials = study.get_trials(deepcopy=False)
    if any(t.state in (states.RUNNING, states.WAITING) for t in trials):
        return
    cells = {_cell_of(t) for t in trials} - {None}
    settled = {_cell_of(t) for t in trials if "metrics" in t.user_attrs or "error" in t.user_attrs}
    for i in sorted(cells - settled):
        if i < count:
            print(f"cell {i}: its process died twice; queued again")
            study.enqueue_trial({CELL: i}, skip_if_exists=False)


def _store(trial: Any, record: Any) -> None:
    """What the report needs from this cell, in the storage, for processes on other machines."""
    trial.set_user_attr("run_dir", str(record.run_dir))
    if record.error:
        trial.set_user_attr("error", record.error)
    if record.metrics:
        trial.set_user_attr("metrics", record.metrics)
        trial.set_user_attr("tables", record.tables)
        trial.set_user_attr("reused", record.reused)


def _collect(study: Any, cells: list[tuple[Any, Any]]) -> bool:
    """Each record from its cell's trials: a finished one's results, or a failure's reason; True when none is open."""
    import optuna

    states = optuna.trial.TrialState
    by_cell: dict[int, list[Any]] = {}
    for t in study.get_trials(deepcopy=False):
        if _cell_of(t) is not None:
            by_cell.setdefault(_cell_of(t), []).append(t)
    done = True
    for i, (record, _) in enumerate(cells):
        trials = by_cell.get(i, [])
        finished = [t for t in trials if "metrics" in t.user_attrs]
        failed = [t for t in trials if "error" in t.user_attrs]
        if finished:
            t = finished[-1]
            record.metrics, record.tables = t.user_attrs["metrics"], t.user_attrs.get("tables")
            record.run_dir = Path(t.user_attrs.get("run_dir", record.run_dir))  # where it ran, maybe on another machine
            record.reused, record.error = bool(t.user_attrs.get("reused")), None
        elif failed:
            record.error = failed[-1].user_attrs["error"]
        elif any(t.state in (states.WAITING, states.RUNNING) for t in trials):
            record.error, done = "not run yet: waiting or running in another process", False
        else:  # its process died twice (a heartbeat retry is made once)
            record.error = "its process died twice; start `hftl compare` with the same --storage and --study-name to retry it"
    return done


def _cell_of(trial: Any) -> int | None:
    """The grid cell a trial runs: its parameter once suggested, the enqueued value while it waits."""
    if CELL in trial.params:
        return trial.params[CELL]
    return (trial.system_attrs.get("fixed_params") or {}).get(CELL)
