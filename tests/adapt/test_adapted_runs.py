"""Whole adapted runs on a tiny ResNet: every method trains, reports the target test beside source validation,
records the shift, and leaves a model/ that loads in `pipeline`; self-training reads no target label; bad target
data is refused before anything is written."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from safetensors.torch import load_file

from hftl import finetune
from hftl.adapt.dann import dann_lambda
from hftl.config import load_config
from hftl.utils.errors import ConfigError, DataError
from tests.adapt.domain_data import adapted_config, write_domain_pair
from tests.conftest import save_tiny_resnet, seeded


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    return write_domain_pair(tmp_path_factory.mktemp("domains"))


@pytest.fixture(scope="module")
def resnet(tmp_path_factory):
    return seeded(save_tiny_resnet, tmp_path_factory.mktemp("resnet"))


@pytest.mark.parametrize("method", ["adabn", "coral", "dann", "self_training"])
def test_each_method_trains_and_reports_the_target_test_beside_source_validation(method, resnet, pair, tmp_path):
    from transformers import pipeline

    out = tmp_path / method
    result = finetune(adapted_config(resnet, pair, out, method, logging_steps=1))
    metrics = json.loads((out / "metrics.json").read_text())
    assert set(metrics["target_test"]) == set(metrics["validation"]) and metrics["data"]["target_test_examples"] == 30
    assert metrics["adapt"]["method"] == method and "adapt:\n  method: " + method in (out / "config.yaml").read_text()
    assert 0 <= metrics["adapt"]["shift_before"] <= 2 and 0 <= metrics["adapt"]["shift_after"] <= 2
    assert "target_test" in (out / "README.md").read_text()
    weights = load_file(str(out / "model" / "model.safetensors"))
    assert not any("hftl_domain_classifier" in k for k in weights)  # DANN's classifier is not part of the model
    classify = pipeline("image-classification", model=str(out / "model"))
    assert classify(str(next((pair["target_test"] / "1").glob("*.png"))))[0]["label"] in {"0", "1", "2"}
    assert result.metrics == metrics["validation"]
    if method == "adabn":  # the target's statistics: validation is measured again, the source's kept beside
        assert "validation_with_source_statistics" in metrics["adapt"]
    if method == "dann":  # lambda rises on its schedule, logged every step
        steps = metrics["global_step"]
        logged = [(e["step"], e["dann_lambda"]) for e in metrics["log_history"]]
        assert [v for _, v in logged] == [pytest.approx(dann_lambda(s - 1, steps, 1.0, 10.0)) for s, _ in logged]
        assert logged[0][1] == 0.0 and logged[-1][1] > 0.9
    if method == "self_training":
        rows = (out / "pseudo_labels" / "round-2.csv").read_text().splitlines()
        assert rows[0] == "index,label,confidence,used" and len(rows) == 61  # every target example, once
        assert all(0 < float(r.split(",")[2]) <= 1 for r in rows[1:])


def test_self_training_reads_neither_target_labels_nor_the_target_test(resnet, pair, tmp_path):
    """The same run with the target's class folders renamed to names the source lacks (same order on disk), and
    another target test: bitwise the same weights and pseudo-labels."""
    renamed, other_test = tmp_path / "renamed", tmp_path / "other-test"
    for label, name in zip(("0", "1", "2"), ("a", "b", "c")):
        shutil.copytree(pair["target"] / label, renamed / name)
    shutil.copytree(pair["target_test"], other_test)
    shutil.rmtree(other_test / "2")
    settings = {"threshold": 0.4}  # three classes: a top probability is at least 1/3
    first = adapted_config(resnet, pair, tmp_path / "first", "self_training")
    second = adapted_config(resnet, {**pair, "target": renamed, "target_test": other_test}, tmp_path / "second", "self_training")
    finetune({**first, "adapt": {"method": "self_training", **settings}})
    finetune({**second, "adapt": {"method": "self_training", **settings}})
    a, b = (load_file(str(tmp_path / n / "model" / "model.safetensors")) for n in ("first", "second"))
    assert all(torch.equal(a[k], b[k]) for k in a)
    for round_file in ("round-1.csv", "round-2.csv"):
        text = (tmp_path / "first" / "pseudo_labels" / round_file).read_text()
        assert text == (tmp_path / "second" / "pseudo_labels" / round_file).read_text()
    assert ",1\n" in text  # some examples cleared the threshold and were used


def test_bad_target_data_is_refused_before_anything_is_written(resnet, pair, tmp_path):
    texts = tmp_path / "texts.csv"
    texts.write_text("text,label\nhello,0\nworld,1\n")
    empty = tmp_path / "empty.csv"
    empty.write_text("image\n")
    cases = {
        "another modality": ({"target": str(texts)}, "same kind of inputs as data.train"),
        "an empty target": ({"target": str(empty)}, "no examples"),
        "the source itself": ({"target": str(pair["source"])}, "is data.train itself"),
    }
    for name, (data, message) in cases.items():
        cfg = adapted_config(resnet, pair, tmp_path / name, "coral")
        with pytest.raises(DataError, match=message):
            finetune({**cfg, "data": {**cfg["data"], **data}})
        assert not (tmp_path / name).exists(), name


def test_methods_are_refused_where_they_cannot_work(resnet, tiny_vit, pair, tmp_path):
    for method in ("coral", "dann"):
        with pytest.raises(ConfigError, match="the backbone must train: use strategy.name=freeze, full, lora, scratch"):
            load_config({**adapted_config(resnet, pair, tmp_path / "x", method), "strategy": {"name": "head_only"}})
    with pytest.raises(ConfigError, match="set data.target"):
        load_config({**adapted_config(resnet, pair, tmp_path / "x", "adabn"), "data": {"train": str(pair["source"])}})
    with pytest.raises(ConfigError, match="pretrain is masked language modelling, for text"):
        load_config(adapted_config(resnet, pair, tmp_path / "x", "pretrain"))
    with pytest.raises(ConfigError, match="has no BatchNorm layer"):  # a ViT: known only once the model is loaded
        finetune(adapted_config(tiny_vit, pair, tmp_path / "vit", "adabn"))
    assert not (tmp_path / "vit").exists()
