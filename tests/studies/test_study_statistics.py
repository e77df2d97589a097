"""Studies whose verdicts are statistically sound, end to end on the digits: k-fold studies that pool paired
comparisons across folds, identical arms called indistinguishable, the label-budget curve on nested subsets, and a
report written again from finished runs alone."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from PIL import Image

from hftl.studies.compare import parse_sizes
from hftl.utils.errors import ConfigError
from tests.conftest import run_cli
from tests.studies.test_compare import table_rows


def config(folder: Path, model: Path, digits: Path, epochs: int = 2) -> Path:
    raw = {
        "task": "image-classification",
        "model": {"name_or_path": str(model)},
        "data": {"train": str(digits), "validation_split": 0.25, "augment": False},
        "train": {"epochs": epochs, "batch_size": 16, "learning_rate": 3e-3, "head_learning_rate": 3e-3, "report_to": "none"},
    }
    path = folder / "study.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def test_k_fold_study_pools_the_paired_comparison_over_folds(digits_vit, digits, tmp_path):
    out = tmp_path / "study"
    proc = run_cli(
        "compare", str(config(tmp_path, digits_vit, digits)), f"output_dir={out}", "--strategies", "scratch,head_only",
        "--folds", "3", in_process=True,
    )  # fmt: skip
    assert "report:" in proc.stdout
    metrics = {
        (name, k): json.loads((out / name / f"fold-{k}" / "metrics.json").read_text())
        for name in ("scratch", "head_only")
        for k in range(3)
    }
    # The folds divide the whole labelled pool (no hold-out besides): 90 digits, each validated on once.
    assert sum(metrics["head_only", k]["data"]["validation_examples"] for k in range(3)) == 90
    assert all("fold" in m["data"]["sources"]["validation"] for m in metrics.values())
    study = json.loads((out / "study.json").read_text())
    assert study["folds"] == 3
    (c,) = study["comparisons"]
    assert (c["a"], c["b"], c["metric"], c["sets"]) == ("scratch", "head_only", "f1", 3)
    mean = lambda name: sum(metrics[name, k]["validation"]["f1"] for k in range(3)) / 3  # noqa: E731
    assert abs(c["difference"] - (mean("scratch") - mean("head_only"))) < 1e-9
    assert c["verdict"] == "b better" and c["ci_high"] < 0 and c["p_value"] < 0.05  # trained features beat random ones
    head = next(r for r in study["rows"] if r["strategy"] == "head_only")
    low, high = head["validation_f1_ci"]
    assert low <= head["validation_f1"] <= high
    report = (out / "report.md").read_text()
    assert "## Per fold" in report and "## Paired comparisons" in report
    fold_row = next(line for line in report.splitlines() if line.startswith("| head_only | 0."))
    assert f"{metrics['head_only', 1]['validation']['f1']:.4f}" in fold_row
    assert table_rows(report)["head_only"]["val f1"].endswith(f"[{low:.4f}, {high:.4f}]")
    assert "**Best f1: `head_only`**" in report and "beyond the noise" in report


def test_identical_arms_are_indistinguishable_and_the_report_is_rebuilt_from_finished_runs(tiny_vit, digits, tmp_path):
    out = tmp_path / "study"
    args = ["compare", str(config(tmp_path, tiny_vit, digits, epochs=1)), f"output_dir={out}", "--strategies", "full"]
    args += ["--models", f"{tiny_vit},{tiny_vit}/"]  # the same checkpoint twice: the same run twice
    run_cli(*args, in_process=True)
    study = json.loads((out / "study.json").read_text())
    (c,) = study["comparisons"]
    assert c["verdict"] == "indistinguishable" and c["difference"] == 0 and c["p_value"] == 1.0
    report = (out / "report.md").read_text()
    # Which of the two is cheaper depends on their timings alone, so the "Cheapest indistinguishable" line may go
    # either way (or be left out when the best is also the fastest): not asserted.
    (line,) = [line for line in report.splitlines() if "**No single winner on f1:**" in line]
    assert f"`{tiny_vit.name} / full`" in line and f"`{tiny_vit.name}-2 / full`" in line
    (out / "report.md").unlink()
    again = run_cli(*args, "--report-only", in_process=True)
    assert "=== [" not in again.stdout  # nothing trained
    rebuilt = (out / "report.md").read_text()  # the same report, its runs now marked reused
    assert rebuilt.split("## Runs")[0] == report.split("## Runs")[0] and "(reused)" in rebuilt


def test_label_budget_curve_on_nested_subsets(digits_vit, digits, tmp_path):
    from hftl.data.modalities import get_modality
    from hftl.data.sources import load_splits
    from hftl.run_folder.layout import saved_config

    out = tmp_path / "study"
    run_cli(
        "compare", str(config(tmp_path, digits_vit, digits)), f"output_dir={out}", "--strategies", "scratch,head_only",
        "--train-sizes", "24,12", in_process=True,
    )  # fmt: skip
    trained = {}
    for size in (12, 24):
        run_dir = out / "head_only" / f"n-{size}"
        cfg = saved_config(run_dir)
        assert cfg.data.train_size == size
        splits = load_splits(cfg.data, get_modality(cfg.task, cfg), cfg.train.seed)
        assert len(splits.train) == size
        trained[size] = list(splits.train[splits.input_column])  # image files
        assert sorted(splits.train["labels"]).count(0) == size // 3  # stratified: a third of each class
    assert set(trained[12]) <= set(trained[24])  # nested: the 12 are inside the 24
    study = json.loads((out / "study.json").read_text())
    assert study["train_sizes"] == [12, 24]
    assert {c["train_size"] for c in study["comparisons"]} == {12, 24}  # compared within one budget only
    assert {r["arm"] for r in study["rows"]} == {f"{s} @ {n} labels" for s in ("scratch", "head_only") for n in (12, 24)}
    report = (out / "report.md").read_text()
    assert "`head_only` against scratch:" in report and "plots/label_budget.png" in report
    with Image.open(out / "plots" / "label_budget.png") as image:
        image.verify()


@pytest.mark.parametrize("bad", ["0,10", "10,10", "ten"])
def test_bad_train_sizes_are_refused(bad):
    with pytest.raises(ConfigError, match="--train-sizes"):
        parse_sizes(bad)


def test_the_grid_composes_seeds_folds_budgets_and_models(tiny_vit, digits, tmp_path):
    from hftl.config import load_config
    from hftl.studies.compare import Study, plan_grid

    base = load_config(config(tmp_path, tiny_vit, digits))
    models = {"a": str(tiny_vit), "b": f"{tiny_vit}/"}
    study = Study(tmp_path / "s", base.task, "f1", ["head_only", "full"], [42, 43], models=models, folds=3, sizes=[12, 24])
    cells = plan_grid(base, study, {"head_only": [], "full": []})
    assert len(cells) == 2 * 2 * 3 * 2 * 2  # seeds x models x folds x budgets x strategies
    assert len({record.run_dir for record, _ in cells}) == len(cells)
    record, cfg = next((r, c) for r, c in cells if (r.model, r.size, r.fold, r.seed, r.strategy) == ("b", 24, 2, 43, "full"))
    assert record.run_dir == tmp_path / "s" / "b" / "full" / "n-24" / "fold-2" / "seed-43"
    assert (cfg.data.folds, cfg.data.fold, cfg.data.train_size, cfg.train.seed) == (3, 2, 24, 43)
    assert cfg.model.name_or_path == f"{tiny_vit}/" and cfg.strategy.name == "full"
    assert record.arm == "b / full @ 24 labels" and record.block == "seed 43 / fold 2"


def test_negative_transfer_is_flagged_only_beyond_the_noise():
    from hftl.studies.significance import settle_negative_transfer

    def row(arm, strategy):
        return {"arm": arm, "strategy": strategy, "model": None, "method": None, "below_scratch": 0.99}

    rows = [
        {"arm": "scratch", "strategy": "scratch", "model": None, "method": None},
        row("lora", "lora"),
        row("head", "head_only"),
    ]
    interval = {"difference": 0.01, "ci_low": 0.0, "ci_high": 0.02}
    comparisons = [
        {"a": "scratch", "b": "lora", "verdict": "indistinguishable", "split": "validation", **interval},
        {"a": "scratch", "b": "head", "verdict": "a better", "split": "validation", **interval},
    ]
    settle_negative_transfer(rows, comparisons)
    assert "below_scratch" not in rows[1] and rows[2]["below_scratch"] == 0.99
