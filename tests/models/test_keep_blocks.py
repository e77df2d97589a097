"""`strategy.keep_blocks: N`: the backbone cut to its lowest N blocks, the kept blocks' pretrained weights copied
exactly, and `model/` a smaller checkpoint that loads in `pipeline` as it is; refused, naming the architecture,
where its config cannot say the smaller depth. The sweep over transformers' auto mappings (tiny configs) shows
which architectures truncate."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoConfig, PretrainedConfig, pipeline

from hftl.models.layer_map import build_layer_map
from hftl.models.layer_trace import example_inputs
from hftl.models.truncation import depth_changes, keep_lower_blocks
from hftl.utils.errors import ConfigError, HftlError
from tests.conftest import REPO, run_cli
from tests.text_data import sentiment_rows, write_csv
from tests.tiny_models import all_cases, build_tiny, skip_reason


def train(config: str, model: Path, data: Path, run_dir: Path, *extra: str) -> dict:
    args = [f"model.name_or_path={model}", f"data.train={data}", f"output_dir={run_dir}", "train.epochs=1"]
    args += ["train.report_to=none", "data.augment=false", *extra]
    proc = run_cli("train", str(REPO / "configs" / config), *args, in_process=True)
    assert "kept the lowest" in proc.stdout  # the run says what it dropped
    return json.loads((run_dir / "metrics.json").read_text())


def test_vit_head_only_on_its_lowest_block_exports_a_one_layer_vit(tiny_vit, digits, tmp_path):
    run_dir = tmp_path / "run"
    train("vision/vit-head-only.yaml", tiny_vit, digits, run_dir, "strategy.keep_blocks=1")
    assert AutoConfig.from_pretrained(run_dir / "model").num_hidden_layers == 1
    exported = load_file(str(run_dir / "model" / "model.safetensors"))
    pretrained = load_file(str(tiny_vit / "model.safetensors"))
    assert not any(".layers.1." in k or ".layer.1." in k for k in exported)  # the upper block is gone
    kept = [k for k in exported if not k.startswith("classifier")]
    assert kept and all(torch.equal(exported[k], pretrained[k]) for k in kept)  # frozen: bit for bit the checkpoint's
    assert sum(v.numel() for v in exported.values()) < sum(v.numel() for v in pretrained.values())
    predictions = pipeline("image-classification", model=str(run_dir / "model"))(str(next((digits / "1").iterdir())))
    assert {p["label"] for p in predictions} <= {"0", "1", "2"}


def test_resnet_full_on_its_lowest_stages_exports_a_two_stage_resnet(tiny_resnet, digits, tmp_path):
    run_dir = tmp_path / "run"
    train("vision/resnet-full.yaml", tiny_resnet, digits, run_dir, "strategy.keep_blocks=2")
    config = AutoConfig.from_pretrained(run_dir / "model")
    assert config.depths == [1, 1] and config.hidden_sizes == [16, 32]  # from [1, 1, 1] and [16, 32, 32]
    exported = load_file(str(run_dir / "model" / "model.safetensors"))
    assert not any("stages.2" in k for k in exported) and exported["classifier.1.weight"].shape[1] == 32
    predictions = pipeline("image-classification", model=str(run_dir / "model"))(str(next((digits / "2").iterdir())))
    assert len(predictions) == 3


def test_bert_lora_on_its_lowest_layer_exports_a_merged_one_layer_bert(tiny_bert, tmp_path):
    data = write_csv(tmp_path / "r.csv", sentiment_rows(40))
    run_dir = tmp_path / "run"
    metrics = train("text/bert-lora.yaml", tiny_bert, data, run_dir, "strategy.keep_blocks=1", "data.max_length=16")
    assert AutoConfig.from_pretrained(run_dir / "model").num_hidden_layers == 1
    assert metrics["total_parameters"] < sum(p.numel() for p in load_file(str(tiny_bert / "model.safetensors")).values())
    out = pipeline("text-classification", model=str(run_dir / "model"))("a good film")
    assert out[0]["label"] in ("neg", "pos")


def test_keep_blocks_out_of_range_and_at_full_depth(tiny_vit):
    from transformers import AutoModelForImageClassification

    model = AutoModelForImageClassification.from_pretrained(tiny_vit)
    layer_map = build_layer_map(model)
    with pytest.raises(ConfigError, match="this model has 2 blocks; choose 1..2"):
        keep_lower_blocks(model, layer_map, 3, build_layer_map)
    same, same_map, note = keep_lower_blocks(model, layer_map, 2, build_layer_map)  # the map builder is not called
    assert same is model and same_map is layer_map and "nothing to drop" in note
    with pytest.raises(HftlError, match="cannot truncate PreTrainedConfig: its layer map has 4 blocks"):
        depth_changes(PretrainedConfig(), 4, 2)
    with pytest.raises(ConfigError, match="strategy.keep_blocks must be >= 1"):
        from hftl.config import load_config

        keys = {"task": "image-classification", "model.name_or_path": "m", "data.train": "d", "strategy.keep_blocks": 0}
        load_config(None, keys)


# -- the sweep -------------------------------------------------------------------------------------------
CLASSIFICATION = sorted({(t, m) for t, m in all_cases() if t.endswith("classification") and t != "token-classification"})
SAMPLED = ("vit", "resnet", "convnext", "swin", "bert", "deberta-v2", "wav2vec2", "distilbert", "clip")  # clip: composite
SAMPLE = [c for c in CLASSIFICATION if c[1] in SAMPLED]


def truncates(task: str, model_type: str) -> str:
    """'kept' when keep_blocks=1 gives a verified one-block model whose kept tensors are the original's; else
    the refusal's message (an HftlError naming the architecture); anything else fails the test."""
    torch.manual_seed(0)
    model = build_tiny(task, model_type)
    layer_map = build_layer_map(model)
    if len(layer_map.blocks) < 2:
        return "one block only"
    try:
        small, small_map, _ = keep_lower_blocks(
            model, layer_map, 1, lambda m, path: build_layer_map(m, path, example_inputs(m)), lambda m: m(**example_inputs(m))
        )
    except HftlError as e:  # a refusal names the key and the architecture
        assert str(e).startswith("strategy.keep_blocks: ") and (type(model).__name__ in str(e) or "Config" in str(e)), e
        return str(e)
    assert len(small_map.blocks) == 1
    source = model.state_dict()
    for name, tensor in small.state_dict().items():
        if small_map.part_of(name) not in ("head", "neck"):
            assert torch.equal(tensor, source[name]), name
    return "kept"


@pytest.mark.parametrize("task,model_type", SAMPLE, ids=[f"{t}:{m}" for t, m in SAMPLE])
def test_keep_blocks_on_a_sample_of_architectures(task, model_type):
    if skip_reason(task, model_type):
        pytest.skip(skip_reason(task, model_type))
    assert truncates(task, model_type) == "kept"


@pytest.mark.slow
def test_keep_blocks_sweep_over_the_classification_mappings(capsys):
    """Every image/text/audio-classification architecture of the tiny sweep either truncates (verified) or is
    refused with its name; the share that truncates is reported and may not shrink."""
    outcomes = {}
    for task, model_type in CLASSIFICATION:
        if skip_reason(task, model_type):
            continue
        outcomes[f"{task}:{model_type}"] = truncates(task, model_type)
    kept = [k for k, v in outcomes.items() if v == "kept"]
    refused = {k: v for k, v in outcomes.items() if v != "kept"}
    with capsys.disabled():
        print(f"\nkeep_blocks: {len(kept)} of {len(outcomes)} classification architectures truncate; refused: {sorted(refused)}")
    assert len(kept) / len(outcomes) >= 0.7, refused
