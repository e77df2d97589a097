"""benchmarks/: both sides freeze the same parameters, and one tiny case runs end to end (no timing asserted)."""

from __future__ import annotations

import json

import pytest

from benchmarks import cases as C
from benchmarks.baseline import apply_strategy
from hftl.config import load_config
from hftl.data.modalities import get_modality
from hftl.runs.finetune import setup_model

QUICK = C.with_overrides(C.SUITES["quick"], pretraining=False)


@pytest.fixture(scope="module")
def quick_models(tmp_path_factory) -> dict[str, object]:
    cache = tmp_path_factory.mktemp("bench-cache")
    return {m.key: C.build_model(m, QUICK, cache) for m in QUICK.models}


@pytest.mark.parametrize("strategy", C.STRATEGIES)
@pytest.mark.parametrize("key", [m.key for m in QUICK.models])
def test_trainer_side_trains_what_hftl_trains(quick_models, key, strategy):
    """The hand-written Trainer set-up and hftl's layer map agree on every trainable parameter."""
    spec = next(m for m in QUICK.models if m.key == key)
    strategy_cfg = {"name": strategy, "trainable_blocks": spec.trainable_blocks, "lora": {"r": 4, "alpha": 8, "dropout": 0.0}}
    cfg = load_config(
        {"task": spec.task, "model": {"name_or_path": str(quick_models[key])}, "data": {"train": "-"}, "strategy": strategy_cfg}
    )
    modality = get_modality(spec.task, cfg)
    model, _, _, plan = setup_model(cfg, modality, ["a", "b", "c"])
    hftl_trainable = {n: p.numel() for n, p in model.named_parameters() if n in plan.trainable_any}

    baseline = modality.model_class().from_pretrained(str(quick_models[key]), num_labels=3)
    baseline = apply_strategy(baseline, {**strategy_cfg, "strategy": strategy})
    trainer_trainable = {n: p.numel() for n, p in baseline.named_parameters() if p.requires_grad}
    assert trainer_trainable == hftl_trainable


def test_quick_case_end_to_end(tmp_path):
    """One tiny case, one repeat per side: results.json holds both sides, the ratios and the accuracies."""
    from benchmarks import run

    out = tmp_path / "out"
    args = ["--suite", "quick", "--cases", "bert-lora", "--repeats", "1", "--epochs", "2", "--examples", "48", "24"]
    args += ["--no-pretraining", "--out", str(out), "--cache", str(tmp_path / "cache")]
    run.main(args)

    result = json.loads((out / "results.json").read_text())
    assert [(r["side"], r["case"]) for r in result["runs"]] == [("hftl", "bert-lora"), ("trainer", "bert-lora")]
    assert not [r["error"] for r in result["runs"] if "error" in r]
    assert result["runs"][0]["deepspeed_imported"] is False  # hftl without DeepSpeed leaves it out (installed or not)
    (summary,) = result["summary"]
    assert result["runs"][0]["validation_examples"] == 24
    for side, run_result in zip(("hftl", "trainer"), result["runs"]):
        s = summary[side]
        assert s["repeats"] == 1 and s["train_examples"] == 48
        # The final epoch's accuracy over the 24 validation examples (a count of correct ones / 24), the median of one repeat.
        assert len(run_result["accuracy_per_epoch"]) == 2 and run_result["accuracy"] == run_result["accuracy_per_epoch"][-1]
        assert s["accuracy"] == run_result["accuracy"]
        for accuracy in run_result["accuracy_per_epoch"]:
            assert accuracy * 24 == pytest.approx(round(accuracy * 24), abs=1e-9), accuracy
        assert s["first_epoch_s"] > 0 and s["later_epoch_s"] > 0 and s["peak_rss_mb"] > 0
        assert 0 < s["peak_rss_training_mb"] <= s["peak_rss_mb"]  # read when training ended, before any export
    for key in ("speedup_first", "speedup_later", "speedup_all", "memory_ratio", "accuracy_delta_points"):
        assert isinstance(summary[key], float), key
    assert summary["accuracy_delta_points"] == pytest.approx(100 * (summary["hftl"]["accuracy"] - summary["trainer"]["accuracy"]))
    assert summary["same_trainable_parameters"] is True
    assert summary["memory_measure"] == "peak_rss_training_mb"  # no GPU in the tests
    assert summary["target_met"] in (True, False)
    report = (out / "results.md").read_text()
    assert "| bert-lora |" in report and "## Machine" in report and result["command"] in report

    # A suite split over time-limited sessions: nothing new starts once the budget is spent, and
    # --resume keeps the finished case and runs only the others.
    more = [a if a != "bert-lora" else "bert-*" for a in args]
    run.main([*more, "--resume", "--budget-minutes", "0"])
    again = json.loads((out / "results.json").read_text())
    assert [s["case"] for s in again["summary"]] == ["bert-lora"] and len(again["runs"]) == 2
    assert "--resume" in again["command"] and again["started"] == result["started"]


def test_trainer_side_computes_accuracy_as_the_task_guides_do():
    """An `evaluate` module (the guides' `evaluate.load("accuracy")`, defined offline) on the logits' argmax."""
    import evaluate
    import numpy as np

    from benchmarks.baseline import load_accuracy, metrics_function

    assert isinstance(load_accuracy(), evaluate.Metric)
    logits = np.array([[0.1, 0.9], [0.8, 0.2], [0.3, 0.7], [0.6, 0.4]], dtype=np.float32)
    assert metrics_function()((logits, np.array([1, 0, 0, 0]))) == {"accuracy": 0.75}
    assert metrics_function()(((logits, logits), np.array([1, 0, 1, 0]))) == {"accuracy": 1.0}  # (logits, extra outputs)
