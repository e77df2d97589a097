"""The probe ranks checkpoints as fine-tuning does, on real data with checkpoints hftl pretrained itself.

A tiny ResNet is pretrained on a source task (scikit-learn's real digits 0-4), another on an unrelated one
(the same images under shuffled labels: nothing to learn but the images' noise), and a third stays at random
init. The target is digits 5-9 with 12 labelled images a class. Fine-tuning (head_only, a model study) and
the probe (no fine-tuning) must agree on which checkpoint transfers best, and the probe's report sets its
ranking beside the fine-tuned one (Kendall tau). Real checkpoints join where they are installed:
EfficientNet-Lite0 on the digits, all-MiniLM-L6-v2 on the VADER words, each against a random-init model.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
import torch
import yaml

from hftl.transferability import probe

from .conftest import LITE0, MINILM, VADER, require, run_cli, save_tiny_bert, save_tiny_resnet

pytestmark = pytest.mark.slow


def link_files(files: list[Path], folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for file in files:
        (folder / file.name).symlink_to(file)


@pytest.fixture(scope="module")
def digit_tasks(tmp_path_factory) -> dict[str, Path]:
    """source (0-4, all images), unrelated (the same images, labels shuffled), target train (5-9, 12 a class)
    and target validation (5-9, the rest)."""
    from hftl.pretrained import write_digits_imagefolder

    root = tmp_path_factory.mktemp("digit-tasks")
    full = write_digits_imagefolder(root / "all", size=32)
    rng = random.Random(0)
    source = [f for d in "01234" for f in sorted((full / d).iterdir())]
    shuffled = source[:]
    rng.shuffle(shuffled)
    for i, file in enumerate(shuffled):
        link_files([file], root / "unrelated" / str(i % 5))
    for d in "01234":
        link_files(sorted((full / d).iterdir()), root / "source" / d)
    for d in "56789":
        files = sorted((full / d).iterdir())
        rng.shuffle(files)
        link_files(files[:12], root / "target-train" / d)
        link_files(files[12:], root / "target-validation" / d)
    return {name: root / name for name in ("source", "unrelated", "target-train", "target-validation")}


def pretrain(init: Path, data: Path, run_dir: Path) -> Path:
    """`hftl train` of every weight from `init` on `data`; the run's model/ is the new checkpoint."""
    config = run_dir.parent / f"{run_dir.name}.yaml"
    config.write_text(yaml.safe_dump({
        "task": "image-classification", "model": {"name_or_path": str(init)},
        "data": {"train": str(data), "validation_split": 0.1, "augment": False},
        "strategy": {"name": "full"},
        "train": {"epochs": 6, "batch_size": 32, "learning_rate": 3e-3, "report_to": "none"},
    }))  # fmt: skip
    run_cli("train", str(config), f"output_dir={run_dir}", in_process=True)
    return run_dir / "model"


def target_config(tmp_path: Path, train: Path, validation: Path, task: str = "image-classification") -> Path:
    config = tmp_path / "target.yaml"
    config.write_text(yaml.safe_dump({
        "task": task, "model": {"name_or_path": "replaced/by-models"},
        "data": {"train": str(train), "validation": str(validation), "augment": False},
        "train": {"epochs": 8, "batch_size": 16, "learning_rate": 1e-2, "report_to": "none"},
    }))  # fmt: skip
    return config


def study_and_probe(config: Path, models: dict[str, str], out: Path) -> tuple[dict[str, float], object]:
    """Fine-tune each model (head_only), then probe them with the study beside it."""
    listed = ",".join(models.values())
    run_cli("compare", str(config), f"output_dir={out / 'study'}", "--strategies", "head_only", "--models", listed,
            in_process=True)  # fmt: skip
    rows = json.loads((out / "study" / "study.json").read_text())["rows"]
    tuned = {r["model"]: r["validation_f1"] for r in rows}
    return tuned, probe(config, listed, output_dir=out / "probe", study=out / "study")


def test_probe_ranks_hftl_pretrained_checkpoints_as_fine_tuning_does(digit_tasks, tmp_path):
    checkpoints = tmp_path / "checkpoints"
    with torch.random.fork_rng():
        torch.manual_seed(0)
        random_init = save_tiny_resnet(checkpoints / "random")
    for name, data in (("related", digit_tasks["source"]), ("unrelated", digit_tasks["unrelated"])):
        (checkpoints / name).symlink_to(pretrain(random_init, data, tmp_path / f"pretrain-{name}"))
    source_metrics = json.loads((tmp_path / "pretrain-related" / "metrics.json").read_text())["validation"]
    assert source_metrics["accuracy"] > 0.8, source_metrics  # the source task was learnt
    models = {name: str(checkpoints / name) for name in ("related", "random", "unrelated")}
    config = target_config(tmp_path, digit_tasks["target-train"], digit_tasks["target-validation"])
    tuned, result = study_and_probe(config, models, tmp_path)
    names = {m.checkpoint: m.name for m in result.models}
    fine_tuned_order = sorted(tuned, key=lambda name: -tuned[name])
    print("fine-tuned:", tuned, "probe:", [names[c] for c in result.ranking], result.kendall_tau)
    assert fine_tuned_order[0] == "related" and names[result.ranking[0]] == "related"  # both pick the related source
    assert result.kendall_tau["logme"] == 1.0  # and order the three alike
    report = result.report_md.read_text()
    assert "Kendall tau +1.00" in report


def test_probe_ranks_real_pretrained_checkpoints_above_random_init(digit_tasks, tmp_path):
    """EfficientNet-Lite0 (ImageNet) against the same-size random init of a tiny ResNet, and MiniLM against a
    random tiny BERT on the VADER words: the probe and fine-tuning both put the pretrained model first."""
    require(*LITE0)
    with torch.random.fork_rng():
        torch.manual_seed(0)
        random_init = save_tiny_resnet(tmp_path / "random-resnet")
    config = target_config(tmp_path, digit_tasks["target-train"], digit_tasks["target-validation"])
    tuned, result = study_and_probe(config, {"lite0": "builtin:efficientnet-lite0", "random": str(random_init)}, tmp_path / "img")
    assert max(tuned, key=tuned.get) == "efficientnet-lite0", tuned
    assert result.ranking[0] == "builtin:efficientnet-lite0" and result.kendall_tau["logme"] == 1.0

    require(*MINILM)
    require(*VADER)
    bert = save_tiny_bert(tmp_path / "random-bert")
    text = tmp_path / "text.yaml"
    text.write_text(yaml.safe_dump({
        "task": "text-classification", "model": {"name_or_path": "replaced/by-models"},
        "data": {"train": "builtin:vader-words", "max_train_samples": 400, "validation_split": 0.2},
        "train": {"epochs": 3, "batch_size": 32, "learning_rate": 1e-2, "report_to": "none"},
    }))  # fmt: skip
    tuned, result = study_and_probe(text, {"minilm": "builtin:all-minilm-l6-v2", "random": str(bert)}, tmp_path / "txt")
    assert max(tuned, key=tuned.get) == "all-minilm-l6-v2", tuned
    assert result.ranking[0] == "builtin:all-minilm-l6-v2" and result.kendall_tau["logme"] == 1.0
