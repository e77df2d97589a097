"""Model studies (`hftl compare --models`): model x strategy on one split and budget, one report whose grid,
recommendation and plots are the runs' own; and the honest baselines every study report gives (a run that
never left chance, a strategy below scratch)."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
import torch
import yaml

import hftl
from hftl.config import better
from hftl.studies.baselines import chance_level, left_chance, one_class_only
from hftl.studies.compare import RunRecord, Study, parse_models
from hftl.studies.compare_report import write_report
from tests.conftest import run_cli, save_tiny_bert
from tests.studies.test_compare import table_rows
from tests.text_data import sentiment_rows, write_csv

STRATEGIES = ["scratch", "head_only", "full"]


@pytest.fixture(scope="module")
def two_models(tmp_path_factory) -> dict[str, Path]:
    """Two tiny BERTs of one architecture with different weights (as two pretrained checkpoints would be)."""
    root = tmp_path_factory.mktemp("models")
    models = {}
    for seed, name in enumerate(("bert-a", "bert-b")):
        with torch.random.fork_rng():
            torch.manual_seed(seed)
            models[name] = save_tiny_bert(root / name)
    return models


@pytest.fixture(scope="module")
def model_study(two_models, tmp_path_factory) -> Study:
    folder = tmp_path_factory.mktemp("model-study")
    data = write_csv(folder / "reviews.csv", sentiment_rows(64))
    config = {  # enough steps for scratch and full to learn (f1 0.94); head_only on random "pretrained" features does not
        "task": "text-classification",
        "model": {"name_or_path": "unused/overridden-by-models"},
        "data": {"train": str(data), "validation_split": 0.25},
        "train": {"epochs": 6, "batch_size": 8, "learning_rate": 5e-3, "report_to": "none", "logging_steps": 1},
    }
    (folder / "study.yaml").write_text(yaml.safe_dump(config))
    models = ",".join(str(p) for p in two_models.values())
    return hftl.compare(folder / "study.yaml", STRATEGIES, models=models, output_dir=folder / "study")


def grid_rows(report: str) -> dict[str, list[str]]:
    """The model x strategy grid: {model: [cell per strategy]}."""
    section = report[report.index("model x strategy") :]
    lines = [line for line in section.splitlines() if line.startswith("| ")][1:]
    rows = {}
    for line in lines:
        cells = [c.strip() for c in line.strip("|").split("|")]
        if cells[0] not in ("bert-a", "bert-b"):
            break
        rows[cells[0]] = cells[1:]
    return rows


def numbers_rows(report: str) -> list[dict[str, str]]:
    """The rows of the "All numbers" table, in order."""
    lines = []
    for line in report[report.index("## All numbers") :].splitlines()[2:]:
        if not line.startswith("|"):
            break
        lines.append([c.strip() for c in line.strip("|").split("|")])
    return [dict(zip(lines[0], cells)) for cells in lines[2:]]


def test_model_study_runs_every_model_and_strategy_in_its_own_folder(model_study, two_models):
    out = model_study.output_dir
    assert model_study.models == {name: str(path) for name, path in two_models.items()}
    assert [(r.model, r.strategy) for r in model_study.runs] == [(m, s) for m in two_models for s in STRATEGIES]
    for record in model_study.runs:
        assert record.run_dir == out / record.model / record.strategy and record.error is None
        saved = yaml.safe_load((record.run_dir / "config.yaml").read_text())
        assert saved["model"]["name_or_path"] == str(two_models[record.model])
        assert saved["strategy"]["name"] == record.strategy
    # One split for all: every run validated on the same number of examples, with the same seed.
    assert {r.metrics["data"]["validation_examples"] for r in model_study.runs} == {16}


def test_model_study_report_grid_recommendation_and_plots_are_the_runs_own(model_study):
    out = model_study.output_dir
    report = (out / "report.md").read_text()
    assert report.startswith("# Model and strategy comparison: text-classification")
    f1 = {(r.model, r.strategy): r.metrics["validation"]["f1"] for r in model_study.runs}
    best = None
    for key, value in f1.items():  # the study's order, the first of equals kept, as the report does
        best = key if best is None or better("f1", value, f1[best]) else best
    grid = grid_rows(report)
    assert list(grid) == ["bert-a", "bert-b"]
    for model, cells in grid.items():
        for name, cell in zip(STRATEGIES, cells):
            expected = f"{f1[model, name]:.4f}"
            assert cell == (f"**{expected}**" if (model, name) == best else expected), (model, name)
    first = json.loads((out / "study.json").read_text())["recommendation"][0]  # the winner, or the best of the tied
    assert first.startswith(("**Best f1: ", "**No single winner on f1:** ")) and f"`{best[0]} / {best[1]}`" in first

    rows = numbers_rows(report)
    assert [(row["model"], row["strategy"]) for row in rows] == list(f1)
    for row in rows:  # "vs scratch" against the same model's scratch run
        scratch = f1[row["model"], "scratch"]
        mine = f1[row["model"], row["strategy"]]
        assert row["vs scratch (f1, points)"] == ("-" if row["strategy"] == "scratch" else f"{100 * (mine - scratch):+.1f}")

    plots = {p.name for p in (out / "plots").glob("*.png")}
    for model in ("bert-a", "bert-b"):
        assert {f"validation_per_epoch_{model}.png", f"train_loss_{model}.png"} <= plots
        assert f"plots/validation_per_epoch_{model}.png" in report
    page = (out / "report.html").read_text()
    assert page.count("data:image/png;base64,") == len(plots) and "model x strategy" in page
    study = json.loads((out / "study.json").read_text())
    assert study["models"] == model_study.models
    assert [(r["model"], r["strategy"]) for r in study["rows"]] == list(f1)


def test_a_finished_model_study_is_reused_from_the_command_line(model_study, two_models):
    out = model_study.output_dir
    before = {r.run_dir: (r.run_dir / "metrics.json").read_text() for r in model_study.runs}
    models = ",".join(str(p) for p in two_models.values())
    args = ["compare", str(out.parent / "study.yaml"), f"output_dir={out}", "--strategies", ",".join(STRATEGIES)]
    proc = run_cli(*args, "--models", models, in_process=True)
    assert proc.stdout.count("finished earlier: reusing") == 6 and "bert-b / full" in proc.stdout
    assert {d: (d / "metrics.json").read_text() for d in before} == before


def test_model_names_are_short_and_unique():
    assert parse_models("org/vit-base, /ckpt/vit-base/ ,builtin:lite0") == {
        "vit-base": "org/vit-base",
        "vit-base-2": "/ckpt/vit-base/",
        "lite0": "builtin:lite0",
    }
    with pytest.raises(hftl.ConfigError, match="twice"):
        parse_models("a/b,a/b")


# -- honest baselines ---------------------------------------------------------------------------------
def guessing(metrics: dict, majority: int = 0) -> dict:
    """`metrics` as if the best epoch had predicted class `majority` for every validation example."""
    out = copy.deepcopy(metrics)
    counts = [sum(row) for row in out["confusion_matrix"]]
    out["confusion_matrix"] = [[n if j == majority else 0 for j in range(len(counts))] for n in counts]
    refs = [label for label, n in enumerate(counts) for _ in range(n)]
    from hftl.data.metrics import classification_metrics

    out["validation"].update(classification_metrics([majority] * len(refs), refs))
    return out


def test_chance_levels_are_the_constant_guess_scored_as_the_run_is():
    balanced = {"confusion_matrix": [[3, 7], [2, 8]], "validation": {"accuracy": 0.55}}
    assert chance_level(balanced, "accuracy") == 0.5
    assert chance_level(balanced, "recall") == 0.5  # macro: 1 for the guessed class, 0 for the other
    assert chance_level(balanced, "f1") == pytest.approx((2 * 0.5 / 1.5) / 2)
    ten = {"confusion_matrix": [[100 if j == 3 else 0 for j in range(10)] for _ in range(10)], "validation": {"accuracy": 0.1}}
    assert one_class_only(ten) and chance_level(ten, "accuracy") == pytest.approx(0.1)
    assert "predicted one class for every validation example" in left_chance(ten, "accuracy")
    assert left_chance(balanced, "accuracy") is None  # 5 points over the guess
    near = {"confusion_matrix": [[6, 4], [5, 5]], "validation": {"accuracy": 0.505}}
    assert "never left chance" in left_chance(near, "accuracy")
    assert left_chance({"validation": {"r2": 0.004}}, "r2").startswith("never left chance")
    assert left_chance({"validation": {"wer": 0.99}}, "wer").startswith("never left chance")
    assert left_chance({"validation": {"rmse": 3.0}}, "rmse") is None  # no guess defined in the data's units


def test_report_says_when_scratch_only_guessed_and_flags_negative_transfer(model_study, tmp_path):
    """The Fashion-MNIST case: scratch predicted one class (its "points vs scratch" compare against a guess),
    and a pretrained strategy that scores below scratch is negative transfer."""
    runs = {r.strategy: r for r in model_study.runs if r.model == "bert-a"}
    scratch = guessing(runs["scratch"].metrics)
    head = copy.deepcopy(runs["head_only"].metrics)
    head["validation"]["f1"] = scratch["validation"]["f1"] - 0.05  # below the guessing scratch
    full = copy.deepcopy(runs["full"].metrics)
    full["validation"]["f1"] = 0.9
    full["confusion_matrix"] = [[7, 1], [1, 7]]
    study = Study(tmp_path, "text-classification", "f1", STRATEGIES, [42])
    for name, metrics in (("scratch", scratch), ("head_only", head), ("full", full)):
        study.runs.append(RunRecord(name, 42, runs[name].run_dir, metrics=metrics))
    report_md, _ = write_report(study)
    report = report_md.read_text()
    rows = table_rows(report)
    assert rows["scratch"]["baseline check"] == "never left chance"
    assert rows["head_only"]["baseline check"] == "never left chance; negative transfer"  # below the guess, too
    assert rows["full"]["baseline check"] == "ok"
    assert "but scratch predicted one class for every validation example" in report
    assert "that gap is measured against a guess" in report
    assert "**Negative transfer: `head_only`**" in report
