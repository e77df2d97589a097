"""`hftl compare --adapt`: one ordinary run folder per method x strategy, the report led by the target test, a pair
refused for its strategy listed with the reason while the rest of the study runs."""

from __future__ import annotations

import json

import yaml

from tests.adapt.domain_data import adapted_config, write_domain_pair
from tests.conftest import run_cli, save_tiny_resnet, seeded


def test_compare_adapt_runs_a_method_by_strategy_grid_and_reports_the_target_test(tmp_path):
    pair = write_domain_pair(tmp_path / "data")
    model = seeded(save_tiny_resnet, tmp_path / "resnet")
    study = tmp_path / "study"
    config = tmp_path / "study.yaml"
    config.write_text(yaml.safe_dump(adapted_config(model, pair, study, "none", epochs=2)))
    out = run_cli("compare", str(config), "--strategies", "head_only,full", "--adapt", "none,coral", in_process=True)
    assert out.returncode == 0, out.stdout  # the refused pair does not fail the study

    for method, strategy in (("none", "head_only"), ("none", "full"), ("coral", "full")):
        saved = yaml.safe_load((study / method / strategy / "config.yaml").read_text())
        assert saved["adapt"]["method"] == method and saved["strategy"]["name"] == strategy
        assert "target_test" in json.loads((study / method / strategy / "metrics.json").read_text())
    assert not (study / "coral" / "head_only").exists()

    info = json.loads((study / "study.json").read_text())
    assert info["adapt"] == ["none", "coral"]
    refused = next(r for r in info["rows"] if r["arm"] == "coral / head_only")
    assert refused["error"].startswith("refused: adapt.method=coral aligns the features the backbone produces")
    report = (study / "report.md").read_text()
    assert report.startswith("# Adaptation comparison")
    table = report.split("## Domain adaptation: the target test", 1)[1].split("## All numbers")[0]
    assert "| coral | full |" in table and "| none | full |" in table and "refused: adapt.method=coral" in table
    coral = next(r for r in info["rows"] if r["arm"] == "coral / full")
    none = next(r for r in info["rows"] if r["arm"] == "none / full")
    gain = 100 * (coral["target_test_f1"] - none["target_test_f1"])
    assert f"| coral | full | {coral['target_test_f1']:.4f} | {gain:+.1f} |" in table
    if gain < 0:
        assert "negative transfer" in table
    assert "Best on the target test" in report and "Refused before training" in report
    assert 0 <= coral["shift_before"] <= 2 and 0 <= coral["shift_after"] <= 2
