"""Experiment tracking: train.report_to validated at load, a missing tracker refused with its pip command,
hyperparameters at the start and final metrics at the end in TensorBoard and in a real MLflow store."""

from __future__ import annotations

import json

import pytest
import yaml

from hftl.config import TRACKERS, load_config, tracker_names
from hftl.utils.errors import ConfigError
from tests.conftest import require, run_cli
from tests.text_data import sentiment_rows, write_csv

BASE = {"model": {"name_or_path": "m"}, "data": {"train": "d"}}


def test_trackers_are_accelerates():
    from accelerate.utils import LoggerType

    assert set(TRACKERS) == {t.value for t in LoggerType} - {"all"}


@pytest.mark.parametrize(
    ("value", "names"),
    [("tensorboard", ["tensorboard"]), (" TensorBoard , mlflow ", ["tensorboard", "mlflow"]), ("all", ["all"]), ("none", [])],
)
def test_report_to_accepts_trackers_lists_all_and_none(value, names):
    cfg = load_config(BASE, [f"train.report_to={value}"])
    assert tracker_names(cfg.train.report_to) == names


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("tensorbord", "unknown tracker 'tensorbord' (did you mean 'tensorboard'?)"),
        ("tensorboard,neptune", "unknown tracker 'neptune'"),
        ("none,mlflow", "'none' and 'all' stand alone"),
    ],
)
def test_report_to_refuses_unknown_trackers_at_load(value, message):
    with pytest.raises(ConfigError) as e:
        load_config(BASE, [f"train.report_to={value}"])
    assert message in str(e.value) and "train.report_to" in str(e.value)
    assert "tensorboard, wandb, mlflow" in str(e.value)  # the valid names are listed


def test_a_tracker_that_is_not_installed_is_refused_before_any_work(tiny_bert, tmp_path):
    from accelerate.tracking import get_available_trackers

    assert "comet_ml" not in {t.value for t in get_available_trackers()}
    data = write_csv(tmp_path / "d.csv", sentiment_rows(16))
    config = {"task": "text-classification", "model": {"name_or_path": str(tiny_bert)}, "data": {"train": str(data)}}
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(config))
    out = tmp_path / "run"
    overrides = [f"output_dir={out}", "train.report_to=tensorboard,comet_ml"]
    proc = run_cli("train", str(tmp_path / "c.yaml"), *overrides, check=False, in_process=True)
    assert proc.returncode == 2
    assert "comet_ml not installed" in proc.stderr and "pip install comet-ml" in proc.stderr
    assert not out.exists()  # refused before the data loaded and the run folder was claimed


def tensorboard_run(logs) -> tuple[dict[str, float], dict[str, str]]:
    """The last value of every scalar and the HParams session's hyperparameters of the run in `logs`."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from tensorboard.plugins.hparams import metadata

    events = EventAccumulator(str(logs), size_guidance={"scalars": 0}).Reload()
    scalars = {tag: events.Scalars(tag)[-1].value for tag in events.Tags()["scalars"]}
    content = events.PluginTagToContent(metadata.PLUGIN_NAME)
    start = metadata.parse_session_start_info_plugin_data(content[metadata.SESSION_START_INFO_TAG])
    assert metadata.SESSION_END_INFO_TAG in content  # the session was closed at the end of training
    hparams = {k: v.string_value or v.number_value for k, v in start.hparams.items()}
    return scalars, hparams


def test_hparams_and_final_metrics_reach_tensorboard_and_mlflow(tiny_bert, tmp_path, monkeypatch):
    require("mlflow")
    from mlflow.tracking import MlflowClient

    store = f"file:{tmp_path / 'mlruns'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", store)
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")  # MLflow 3 wants a database; a folder is enough here
    train = write_csv(tmp_path / "train.csv", sentiment_rows(48))
    test = write_csv(tmp_path / "test.csv", sentiment_rows(16, seed=3))
    config = {
        "task": "text-classification",
        "model": {"name_or_path": str(tiny_bert)},
        "data": {"train": str(train), "test": str(test), "validation_split": 0.25},
        "train": {"epochs": 2, "batch_size": 8, "learning_rate": 1e-3, "report_to": "tensorboard,mlflow"},
    }
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(config))
    run_dir = tmp_path / "sentiment-bert"
    run_cli("train", str(tmp_path / "c.yaml"), f"output_dir={run_dir}", in_process=True)
    summary = json.loads((run_dir / "metrics.json").read_text())
    expected = {
        "final/validation_accuracy": summary["validation"]["accuracy"],
        "final/validation_f1": summary["validation"]["f1"],
        "final/test_loss": summary["test"]["loss"],
        "final/best_epoch": summary["best_epoch"],
        "final/global_step": summary["global_step"],
        "final/train_seconds": summary["train_seconds"],
        "final/samples_per_second": summary["samples_per_second"],
        "final/peak_memory_mb": summary["peak_memory_mb"],
    }

    # TensorBoard: logs/<run folder name>, the final scalars beside train/ and eval/, one HParams session.
    scalars, hparams = tensorboard_run(run_dir / "logs" / "sentiment-bert")
    assert not [p for p in (run_dir / "logs" / "sentiment-bert").iterdir() if p.is_dir()]  # no metric-less hparams sub-run
    assert {"train/loss", "eval/accuracy"} <= set(scalars)
    for key, value in expected.items():
        assert scalars[key] == pytest.approx(value, rel=1e-5), key
    assert hparams["train.learning_rate"] == pytest.approx(1e-3) and hparams["task"] == "text-classification"

    # MLflow: one run named after the run folder, with every config key as a param and the final metrics.
    client = MlflowClient(store)
    (experiment,) = client.search_experiments(filter_string="name = 'sentiment-bert'")
    (run,) = client.search_runs([experiment.experiment_id])
    assert run.data.tags["mlflow.runName"] == "sentiment-bert" and run.info.status == "FINISHED"
    assert run.data.params["train.learning_rate"] == "0.001" and run.data.params["strategy.name"] == "full"
    assert run.data.params["train.report_to"] == "tensorboard,mlflow"
    for key, value in expected.items():
        assert run.data.metrics[key] == pytest.approx(value, rel=1e-5), key
    assert run.data.metrics["train/loss"] > 0
    history = client.get_metric_history(run.info.run_id, "final/validation_accuracy")
    assert [m.step for m in history] == [summary["global_step"]]  # logged once, at the last step


def test_a_resumed_run_continues_its_tracker_runs(tiny_bert, tmp_path, monkeypatch):
    """Killed after epoch 1 and resumed: one MLflow run and one TensorBoard folder hold all three epochs."""
    require("mlflow")
    from mlflow.tracking import MlflowClient

    store = f"file:{tmp_path / 'mlruns'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", store)
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
    train = write_csv(tmp_path / "train.csv", sentiment_rows(32))
    config = {
        "task": "text-classification",
        "model": {"name_or_path": str(tiny_bert)},
        "data": {"train": str(train), "validation_split": 0.25},
        "train": {"epochs": 3, "batch_size": 8, "learning_rate": 1e-3, "report_to": "tensorboard,mlflow"},
    }
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(config))
    run_dir = tmp_path / "resumed"
    args = ["train", str(tmp_path / "c.yaml"), f"output_dir={run_dir}"]
    killed = run_cli(*args, env={"HFTL_FAULT_KILL_AFTER_EPOCH": "1", "MLFLOW_TRACKING_URI": store}, check=False)
    assert killed.returncode != 0 and not (run_dir / "metrics.json").exists()
    ids = json.loads((run_dir / "logs" / "trackers.json").read_text())
    proc = run_cli(*args, "resume=true", in_process=True)
    assert "mlflow: continuing this run's tracker run" in proc.stdout
    summary = json.loads((run_dir / "metrics.json").read_text())
    steps = [h["step"] for h in summary["history"]]

    client = MlflowClient(store)
    (experiment,) = client.search_experiments(filter_string="name = 'resumed'")
    (run,) = client.search_runs([experiment.experiment_id])  # one run, not one per launch
    assert run.info.run_id == ids["mlflow"] and run.info.status == "FINISHED"
    assert [m.step for m in client.get_metric_history(run.info.run_id, "eval/accuracy")] == steps
    assert run.data.params["train.epochs"] == "3"

    scalars, hparams = tensorboard_run(run_dir / "logs" / "resumed")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(run_dir / "logs" / "resumed"), size_guidance={"scalars": 0}).Reload()
    # Two event files (one per launch); within one second their order on disk follows the process ids.
    assert sorted(e.step for e in events.Scalars("eval/accuracy")) == steps
    assert scalars["final/global_step"] == summary["global_step"] and hparams["train.epochs"] == 3
