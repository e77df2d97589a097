"""The architecture sweep: every model_type of transformers' five task mappings hftl trains, as timm's tests
sweep every registered model.

Fast, for every architecture (a tiny random config built here, tests/tiny_models.py): the layer map is
traced, checked against an independent forward-order trace (tests/layer_map_checks.py), and the
head_only / freeze / lora plans train what they promise, LoRA's adapters in place for a forward pass.
Slow, for every architecture too: head_only, freeze and lora for two steps each through `hftl.finetune` on
real data files, with the defaults (the feature cache on), then `model/` reloaded in its pipeline; an
architecture hftl refuses (hftl/models/architecture_needs.py) is checked for the refusal, before any data is
read. Architectures the sweep cannot build small carry their reason in `tiny_models.SKIPS`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
from transformers import AutoConfig

from hftl.config import load_config
from hftl.models.layer_map import build_layer_map
from hftl.models.layer_trace import example_inputs
from hftl.models.strategies import build_plan
from hftl.models.strategies.lora import apply_lora
from hftl.utils.errors import ConfigError
from tests.layer_map_checks import check_layer_map
from tests.tiny_models import (
    LORA_REFUSED,
    PIPELINES,
    all_cases,
    build_tiny,
    model_class,
    refusal,
    save_tiny,
    skip_reason,
    tiny_config,
    tiny_inputs,
)

CASES = all_cases()


def _cfg(task: str, strategy: str):
    return load_config(None, {"task": task, "model.name_or_path": "m", "data.train": "d", "strategy.name": strategy})


@pytest.mark.parametrize("task,model_type", CASES, ids=[f"{t}:{m}" for t, m in CASES])
def test_layer_map_and_plans(task, model_type):
    reason = skip_reason(task, model_type)
    if reason:
        pytest.skip(reason)
    torch.manual_seed(0)
    model = build_tiny(task, model_type)
    inputs = tiny_inputs(task, model)
    lm = build_layer_map(model, None, inputs)
    assert lm.note is None, lm.note
    check_layer_map(model, lm, inputs)

    params = dict(model.named_parameters())
    head = {n for n in params if lm.part_of(n) == "head"}
    head_only = build_plan(model, lm, _cfg(task, "head_only")).phases[-1].trainable
    assert head_only and head_only <= head
    freeze = build_plan(model, lm, _cfg(task, "freeze")).phases[-1].trainable
    top = f"block.{len(lm.blocks) - 1}"
    assert any(lm.part_of(n) == top for n in freeze) and head_only <= freeze
    assert not any(lm.part_of(n) == "embeddings" for n in freeze)

    if model_type in LORA_REFUSED:
        with pytest.raises(ConfigError, match="strategy.lora.target_modules"):
            apply_lora(model, lm, _cfg(task, "lora").strategy.lora)
        return
    wrapped = apply_lora(model, lm, _cfg(task, "lora").strategy.lora)
    adapters = [n for n, _ in wrapped.named_parameters() if "lora_" in n]
    assert adapters and all(lm.part_of(n).startswith("block.") for n in adapters)
    wrapped.eval()
    with torch.no_grad():
        wrapped(**inputs)


@pytest.fixture(scope="module")
def task_data(tmp_path_factory) -> dict[str, Path]:
    """One small real data set per task, written once."""
    from hftl.builtin import write_digits_imagefolder
    from tests.audio_fixtures import write_tone_classes, write_tone_sequences
    from tests.text_data import sentiment_rows, tagging_rows, write_csv, write_jsonl

    root = tmp_path_factory.mktemp("sweep-data")
    return {
        "image-classification": write_digits_imagefolder(root / "digits", per_class=4),
        "text-classification": write_csv(root / "sentiment.csv", sentiment_rows(24)),
        "token-classification": write_jsonl(root / "tags.jsonl", tagging_rows(24)),
        "audio-classification": write_tone_classes(root / "tones", per_class=6),
        "speech-recognition": write_tone_sequences(root / "words", n=12),
    }


@pytest.mark.slow
@pytest.mark.parametrize("task,model_type", CASES, ids=[f"{t}:{m}" for t, m in CASES])
def test_trains_end_to_end_and_reloads_in_its_pipeline(task, model_type, task_data, tmp_path, record_property):
    """head_only, freeze and lora for 2 steps each with the defaults (feature cache on), then `model/` in its
    pipeline; an architecture hftl refuses must be refused before any data is read, naming what it needs."""
    from transformers import pipeline

    from hftl import finetune

    config = {"task": task, "model": {"name_or_path": str(tmp_path / model_type)}, "data": {"train": str(task_data[task])}}
    if refusal(task, model_type) is not None:
        AutoConfig.for_model(model_type).save_pretrained(tmp_path / model_type)  # the config alone: nothing is loaded
        config["data"]["train"] = str(tmp_path / "never-read.csv")
        with pytest.raises(ConfigError, match=f"is a {model_type} checkpoint, and {model_type} {task} needs"):
            finetune(config, output_dir=str(tmp_path / "refused"))
        record_property("outcome", "refused")
        return
    if reason := skip_reason(task, model_type):
        pytest.skip(reason)
    torch.manual_seed(0)
    save_tiny(task, model_type, tmp_path / model_type)
    for strategy in ("head_only", "freeze", "lora"):
        run = dict(strategy=strategy, epochs=1, output_dir=str(tmp_path / strategy))
        train = {"batch_size": 4, "report_to": "none", "max_steps": 2}
        if strategy == "lora" and model_type in LORA_REFUSED:
            with pytest.raises(ConfigError, match="strategy.lora.target_modules"):
                finetune(config, **run, train=train)
            record_property("outcome", "lora refused")
            continue
        result = finetune(config, **run, train=train)
        assert 0 < result.trainable_parameters < result.total_parameters
    reloaded = "freeze" if model_type in LORA_REFUSED else "lora"
    pipe = pipeline(PIPELINES[task], model=str(tmp_path / reloaded / "model"))
    out = pipe(_one_input(task, task_data[task]))
    if task == "token-classification":  # the entities found, possibly none after two steps
        assert isinstance(out, list) and all(e["entity"] in ("B-PER", "I-PER", "B-LOC", "I-LOC") for e in out)
    elif task == "speech-recognition":
        assert isinstance(out["text"], str)
    else:
        assert {s["label"] for s in out} <= set(pipe.model.config.id2label.values()) and out


def _one_input(task: str, data: Path) -> Any:
    """One input as a user passes it to the pipeline: an image path, a text, or decoded audio (a path would
    need ffmpeg, which this machine lacks)."""
    import soundfile as sf

    if task == "text-classification":
        return "the film was very good"
    if task == "token-classification":
        return "alice visited paris"
    root = data if data.is_dir() else data.parent
    path = next(p for p in sorted(root.rglob("*")) if p.suffix in (".png", ".wav"))
    if path.suffix == ".png":
        return str(path)
    samples, rate = sf.read(path, dtype="float32")
    return {"raw": samples, "sampling_rate": rate}


# Shapes another sweep crashed on that are not valid configs of their architecture: transformers' own forward
# fails on them, with no hftl involved. The valid small shape beside each is the one the sweep trains.
INVALID = {
    "image-classification:mobilevitv2 at 32 px": ("image-classification", "mobilevitv2", {}, 32),
    "token-classification:qwen3_next, linear attention only": (
        "token-classification", "qwen3_next", {"layer_types": ["linear_attention"] * 2}, None,
    ),
    "token-classification:qwen3_5, linear attention only": (
        "token-classification", "qwen3_5", {"text_config": {"layer_types": ["linear_attention"] * 2}}, None,
    ),
    "token-classification:deepseek_v3, one key/value head": (
        "token-classification", "deepseek_v3", {"num_key_value_heads": 1, "head_dim": 16}, None,
    ),
    "token-classification:axk1, one key/value head": (
        "token-classification", "axk1", {"num_key_value_heads": 1, "head_dim": 16}, None,
    ),
    "text-classification:minicpm3, one key/value head": ("text-classification", "minicpm3", {"num_key_value_heads": 1}, None),
}  # fmt: skip


@pytest.mark.parametrize("case", list(INVALID))
def test_the_invalid_shapes_fail_in_transformers_itself_and_the_valid_ones_run(case):
    task, model_type, bad, image_size = INVALID[case]
    cls = model_class(task, model_type)
    valid = tiny_config(task, model_type, 64 if image_size else None)
    # A setting for a sub-config (a composite model's text_config) goes into that sub-config's own settings.
    bad = {k: {**getattr(valid, k).to_dict(), **v} if isinstance(v, dict) else v for k, v in bad.items()}
    invalid = tiny_config(task, model_type, image_size, bad)
    for config, runs in ((valid, True), (invalid, False)):
        config.pad_token_id = 0
        torch.manual_seed(0)
        model = cls(config).eval()
        inputs = example_inputs(model)
        if "input_ids" in inputs:  # a padded batch of four, as training makes it
            ids = torch.randint(5, 100, (4, 12))
            inputs = {"input_ids": ids, "attention_mask": (torch.arange(12) < torch.tensor([[12], [6], [9], [3]])).long()}
        with torch.no_grad():
            if runs:
                assert model(**inputs).logits.shape[0] == inputs[next(iter(inputs))].shape[0]
            else:
                with pytest.raises((RuntimeError, ValueError, IndexError)):
                    model(**inputs)
