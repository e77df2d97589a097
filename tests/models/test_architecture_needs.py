"""Architectures hftl cannot serve are refused at config time: before any data is read, with the architecture,
what it needs and what to use instead (hftl/models/architecture_needs.py)."""

from __future__ import annotations

import pytest
from transformers import AutoConfig

from hftl import finetune
from hftl.models.architecture_needs import NEEDS, architecture_need
from hftl.utils.errors import ConfigError

TASKS = {"*": "text-classification"}


@pytest.mark.parametrize("task,model_type", sorted(NEEDS), ids=[f"{t}:{m}" for t, m in sorted(NEEDS)])
def test_refused_before_any_data_is_read(task, model_type, tmp_path):
    task = TASKS.get(task, task)
    folder = tmp_path / model_type
    AutoConfig.for_model(model_type).save_pretrained(folder)  # the config alone: no weight is ever loaded
    missing = tmp_path / "no-such-data.csv"  # read first, this would fail as a data error instead
    with pytest.raises(ConfigError) as caught:
        finetune(
            {"task": task, "model": {"name_or_path": str(folder)}, "data": {"train": str(missing)}},
            output_dir=str(tmp_path / "run"),
        )
    message = str(caught.value)
    assert f"is a {model_type} checkpoint" in message and "needs" in message and "instead" in message
    assert not (tmp_path / "run").exists()


def test_xmod_is_refused_until_its_language_is_chosen(tmp_path):
    config = AutoConfig.for_model("xmod")
    assert "language adapter" in architecture_need("text-classification", "xmod", config).needs
    config.default_language = config.languages[0]
    assert architecture_need("token-classification", "xmod", config) is None


def test_a_missing_package_is_named_with_its_pip_command(tmp_path):
    import importlib.util

    if importlib.util.find_spec("natten") is not None:
        pytest.skip("natten is installed here: dinat runs")
    folder = tmp_path / "dinat"
    AutoConfig.for_model("dinat").save_pretrained(folder)
    with pytest.raises(ConfigError, match=r"pip install natten"):
        finetune({"task": "image-classification", "model": {"name_or_path": str(folder)}, "data": {"train": "x"}})


def test_supported_and_unreadable_checkpoints_pass_the_check(tmp_path):
    from hftl.models.architecture_needs import check_architecture

    folder = tmp_path / "bert"
    AutoConfig.for_model("bert").save_pretrained(folder)
    check_architecture("text-classification", str(folder))
    check_architecture("text-classification", str(tmp_path / "nothing-here"))  # loading says why, with its own message


def test_a_study_with_one_refused_model_stops_before_its_first_run(tiny_bert, tmp_path):
    import yaml

    from tests.conftest import run_cli
    from tests.text_data import sentiment_rows, write_csv

    tapas = tmp_path / "tapas"
    AutoConfig.for_model("tapas").save_pretrained(tapas)
    data = write_csv(tmp_path / "train.csv", sentiment_rows(24))
    config = tmp_path / "study.yaml"
    config.write_text(
        yaml.safe_dump({"task": "text-classification", "model": {"name_or_path": str(tiny_bert)}, "data": {"train": str(data)}})
    )
    out = tmp_path / "study"
    proc = run_cli(
        "compare", str(config), f"output_dir={out}", "--models", f"{tiny_bert},{tapas}", "--strategies", "head_only", check=False
    )
    assert proc.returncode != 0 and "is a tapas checkpoint" in proc.stderr + proc.stdout
    assert not any(out.rglob("metrics.json"))  # the bert run did not train first
