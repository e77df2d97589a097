"""Experiment trackers through Accelerate: which ones, the run's name, hyperparameters at the start and
the final metrics at the end.

Every tracker gets the flat config as hyperparameters and, at the end, one `accelerator.log` of the
run's outcome under `final/` (best validation metrics, test metrics, best epoch, time, throughput,
peak memory). TensorBoard also gets them as an HParams session: the hyperparameters at the start and
the `final/` scalars in the same run, so its HParams tab lists runs side by side.

Example:
    >>> log_with("tensorboard,mlflow")  # doctest: +SKIP
    ['tensorboard', 'mlflow']
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hftl.config import Config, tracker_names
from hftl.training.train_state import TrainResult
from hftl.utils.errors import ConfigError
from hftl.utils.files import atomic_write_text

if TYPE_CHECKING:
    from accelerate import Accelerator

# The PyPI package that makes each tracker importable.
PIP_NAMES = {"comet_ml": "comet-ml"}
TRACKER_IDS = "trackers.json"  # under logs/: the tracker runs a resumed run continues


def log_with(report_to: str) -> list[str] | None:
    """Accelerate's `log_with` for train.report_to, or a ConfigError naming the pip command.

    Accelerate silently drops a tracker that is not installed; a run that was asked to log to
    mlflow and logged nowhere would be found out only afterwards.
    """
    names = tracker_names(report_to)
    if not names or names == ["all"]:
        return names or None
    from accelerate.tracking import get_available_trackers

    available = {t.value for t in get_available_trackers()}
    missing = [n for n in names if n not in available]
    if missing:
        packages = " ".join(PIP_NAMES.get(n, n) for n in missing)
        raise ConfigError(
            f"train.report_to={report_to!r}: {', '.join(missing)} not installed. Install with `pip install {packages}`, "
            f"or drop it from train.report_to (installed: {', '.join(sorted(available)) or 'none'})"
        )
    return names


def flat_config(cfg: Config) -> dict[str, Any]:
    """The config as `section.key: value`, values as the scalar types every tracker accepts."""
    flat: dict[str, Any] = {}

    def walk(d: dict, prefix: str) -> None:
        for k, v in d.items():
            if isinstance(v, dict):
                walk(v, f"{prefix}{k}.")
            else:
                flat[f"{prefix}{k}"] = v if isinstance(v, (int, float, str, bool)) else str(v)

    walk(cfg.to_dict(), "")
    return flat


def start_trackers(accelerator: Accelerator, cfg: Config, run_dir: Path, resumed: bool = False) -> None:
    """Start the trackers under the run folder's name and log the hyperparameters.

    A resumed run continues the tracker runs it started (MLflow and W&B by their run ids, kept in
    `logs/trackers.json`; TensorBoard by writing to the same folder) rather than starting new ones,
    so a killed and resumed run is one curve, not two.
    """
    name = Path(run_dir).resolve().name
    ids_file = Path(run_dir) / "logs" / TRACKER_IDS
    saved = _read_ids(ids_file) if resumed else {}
    init_kwargs: dict[str, dict[str, Any]] = {"mlflow": {"run_name": name}, "wandb": {"name": name}}
    if "mlflow" in saved:
        init_kwargs["mlflow"]["run_id"] = saved["mlflow"]
    if "wandb" in saved:
        init_kwargs["wandb"].update(id=saved["wandb"], resume="allow")
    accelerator.init_trackers(name, init_kwargs=init_kwargs)
    ids = {tracker.name: run_id for tracker in accelerator.trackers if (run_id := _run_id(tracker)) is not None}
    continued = sorted(k for k in ids if saved.get(k) == ids[k]) + (["tensorboard"] if resumed else [])
    if accelerator.is_main_process and ids:
        ids_file.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(ids_file, json.dumps({**saved, **ids}, indent=2))
    hparams = flat_config(cfg)
    for tracker in accelerator.trackers:  # empty on every process but the main one
        if tracker.name in continued:
            accelerator.print(f"{tracker.name}: continuing this run's tracker run")
            continue  # its hyperparameters are logged already (and MLflow refuses a param logged twice)
        if tracker.name == "tensorboard":
            # Accelerate's own TensorBoard hparams go to a timestamped sub-run with no metrics; one
            # session in the run itself lets the HParams tab pair them with the final/ scalars.
            _, start, _ = _tensorboard_hparams(hparams)
            tracker.writer.file_writer.add_summary(start)
            tracker.writer.flush()
        else:
            tracker.store_init_configuration(hparams)


def _run_id(tracker: Any) -> str | None:
    """The id a tracker's run can be reopened with, for the trackers whose Accelerate wrapper takes one."""
    if tracker.name == "mlflow":
        return tracker.active_run.info.run_id
    if tracker.name == "wandb":
        return tracker.run.id
    return None


def _read_ids(path: Path) -> dict[str, str]:
    try:
        ids = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}  # none saved (a run from before hftl kept them): the trackers start new runs
    return {k: v for k, v in ids.items() if isinstance(v, str)} if isinstance(ids, dict) else {}


def final_metrics(result: TrainResult) -> dict[str, float]:
    """The run's outcome as `final/...` scalars."""
    final = {f"final/validation_{k}": v for k, v in result.best_metrics.items()}
    final.update({f"final/test_{k}": v for k, v in (result.test_metrics or {}).items()})
    final.update(
        {
            "final/best_epoch": result.best_epoch,
            "final/global_step": result.global_step,
            "final/train_seconds": result.train_seconds,
            "final/samples_per_second": result.samples_per_second,
            "final/peak_memory_mb": result.peak_memory_mb,
        }
    )
    return final


def finish_trackers(accelerator: Accelerator, cfg: Config, result: TrainResult) -> None:
    """Log the final metrics, close TensorBoard's HParams session and close every tracker.

    Only the trackers: `accelerator.end_training()` would also destroy the process group the
    export after training still needs.
    """
    accelerator.log(final_metrics(result), step=result.global_step)
    for tracker in accelerator.trackers:
        if tracker.name == "tensorboard":
            _, _, end = _tensorboard_hparams(flat_config(cfg))
            tracker.writer.file_writer.add_summary(end)
            tracker.writer.flush()
        tracker.finish()


def _tensorboard_hparams(hparams: dict[str, Any]) -> tuple[Any, Any, Any]:
    """TensorBoard's (experiment, session start, session end) summaries; the metrics are left for the
    HParams plugin to find among the run's scalars."""
    from torch.utils.tensorboard.summary import hparams as summaries

    return summaries(hparams, {})
