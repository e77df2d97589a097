"""train.load_best_at_end: model/ holds the best epoch's weights (checkpoints/best.safetensors), not the
last epoch's, and metrics.json reports that epoch; with load_best_at_end=false, model/ is the last epoch.

The validation set is the training set's digits with their labels shifted (0 -> 1 -> 2 -> 0): the more
the model learns, the worse its validation loss, so the best epoch by validation loss is an early one,
never the last (measured on a tiny ResNet, three initial seeds: 1.3-1.5, 1.9-2.3, 2.5-2.8).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file

from tests.conftest import run_cli, save_tiny_resnet

EPOCHS = 3


@pytest.fixture(scope="module")
def resnet(tmp_path_factory) -> Path:
    """A tiny ResNet of its own, initialised from a fixed seed whatever ran before in the session."""
    with torch.random.fork_rng():
        torch.manual_seed(0)
        return save_tiny_resnet(tmp_path_factory.mktemp("seeded-resnet"))


@pytest.fixture(scope="module")
def shifted_validation(digits, tmp_path_factory) -> Path:
    """The 90 training digits, each class folder under the next class's name."""
    folder = tmp_path_factory.mktemp("shifted")
    for label, source in zip("012", "120"):
        (folder / label).symlink_to((digits / source).resolve(), target_is_directory=True)
    return folder


def train_run(tmp_path: Path, model: Path, digits: Path, validation: Path, load_best_at_end: bool) -> tuple[Path, dict]:
    config = {
        "task": "image-classification",
        "model": {"name_or_path": str(model)},
        "data": {"train": str(digits), "validation": str(validation), "augment": False},
        "strategy": {"name": "full"},
        "train": {
            "epochs": EPOCHS, "batch_size": 16, "learning_rate": 3e-3, "report_to": "none", "logging_steps": 1,
            "metric_for_best": "loss", "load_best_at_end": load_best_at_end, "save_total_limit": 10,
        },
    }  # fmt: skip
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(config))
    run_dir = tmp_path / "run"
    run_cli("train", str(tmp_path / "c.yaml"), f"output_dir={run_dir}", in_process=True)
    return run_dir, json.loads((run_dir / "metrics.json").read_text())


def exported_state(run_dir: Path) -> dict[str, torch.Tensor]:
    from transformers import AutoModelForImageClassification

    return AutoModelForImageClassification.from_pretrained(run_dir / "model").state_dict()


def epoch_checkpoints(run_dir: Path) -> list[Path]:
    """One checkpoint per epoch (90 images / 16 = 6 steps each), oldest first, all kept."""
    steps = sorted(p for p in (run_dir / "checkpoints").iterdir() if p.name.startswith("step-"))
    assert [p.name for p in steps] == [f"step-{6 * e:07d}" for e in range(1, EPOCHS + 1)]
    return steps


def exported_confusion(run_dir: Path, validation: Path, tmp_path: Path) -> list[list[int]]:
    """model/'s confusion matrix on `validation` (rows: true label), from `hftl predict --data`."""
    import pandas as pd

    out = tmp_path / "predictions.csv"
    run_cli("predict", str(run_dir), "--data", str(validation), "--output", str(out), in_process=True)
    table = pd.read_csv(out)
    label_of = {folder.resolve(): int(folder.name) for folder in validation.iterdir()}  # predict resolves the links
    matrix = [[0] * 3 for _ in range(3)]
    for path, predicted in zip(table["input"], table["prediction"]):
        matrix[label_of[Path(path).parent]][int(predicted)] += 1
    return matrix


def same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor], keys) -> bool:
    return all(torch.equal(a[k], b[k]) for k in keys)


def test_model_holds_the_best_epochs_weights_not_the_last(resnet, digits, shifted_validation, tmp_path):
    run_dir, metrics = train_run(tmp_path, resnet, digits, shifted_validation, load_best_at_end=True)
    history = metrics["history"]
    losses = [h["eval_loss"] for h in history]
    assert len(history) == EPOCHS and metrics["best_epoch"] != EPOCHS, losses  # the premise of this test
    assert metrics["best_epoch"] == 1 + losses.index(min(losses))

    best = load_file(str(run_dir / "checkpoints" / "best.safetensors"))
    exported = exported_state(run_dir)
    # Every parameter trains (full), so best.safetensors covers the whole model, BatchNorm statistics included.
    assert set(best) == set(exported)
    for key in best:
        assert torch.equal(exported[key], best[key]), key

    steps = epoch_checkpoints(run_dir)
    last = load_file(str(steps[-1] / "weights.safetensors"))
    assert not same(exported, last, best), "model/ holds the last epoch's weights"
    best_epoch_checkpoint = load_file(str(steps[metrics["best_epoch"] - 1] / "weights.safetensors"))
    assert same(best_epoch_checkpoint, best, best)  # best.safetensors was written at the end of that epoch

    # metrics.json's headline numbers are the best epoch's history entry ...
    entry = history[metrics["best_epoch"] - 1]
    assert metrics["validation"] == {k.removeprefix("eval_"): v for k, v in entry.items() if k.startswith("eval_")}
    # ... and the exported model scores them again on the validation set.
    out = run_cli("evaluate", str(run_dir), "--data", str(shifted_validation), in_process=True)
    evaluated = json.loads(out.stdout)
    assert evaluated["examples"] == 90
    for key in ("accuracy", "f1", "precision", "recall"):
        assert evaluated[key] == metrics["validation"][key], key
    assert evaluated["loss"] == pytest.approx(metrics["validation"]["loss"], rel=1e-5)
    # The confusion matrix is the best epoch's too (its validation pass kept, not run again at the end).
    assert metrics["confusion_matrix"] == exported_confusion(run_dir, shifted_validation, tmp_path)


def test_without_load_best_at_end_model_holds_the_last_epochs_weights(resnet, digits, shifted_validation, tmp_path):
    run_dir, metrics = train_run(tmp_path, resnet, digits, shifted_validation, load_best_at_end=False)
    assert metrics["best_epoch"] != EPOCHS  # the same run as above: the best epoch is still an earlier one

    best = load_file(str(run_dir / "checkpoints" / "best.safetensors"))
    last = load_file(str(epoch_checkpoints(run_dir)[-1] / "weights.safetensors"))
    exported = exported_state(run_dir)
    assert set(last) == set(exported)
    for key in last:
        assert torch.equal(exported[key], last[key]), key
    assert not same(exported, best, best)

    out = run_cli("evaluate", str(run_dir), "--data", str(shifted_validation), in_process=True)
    assert json.loads(out.stdout)["loss"] == pytest.approx(metrics["history"][-1]["eval_loss"], rel=1e-5)
    assert metrics["confusion_matrix"] == exported_confusion(run_dir, shifted_validation, tmp_path)
