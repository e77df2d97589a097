"""The architecture sweep: every model_type of transformers' five task mappings hftl trains, as timm's tests
sweep every registered model.

Fast, for every architecture (a tiny random config built here, tests/tiny_models.py): the layer map is
traced, checked against an independent forward-order trace (tests/layer_map_checks.py), and the
head_only / freeze / lora plans train what they promise, LoRA's adapters in place for a forward pass.
Slow, for a sample across all five tasks: one epoch end to end through `hftl.finetune` on real data
files, then `model/` reloaded in its pipeline. Architectures left out carry their reason in
`tiny_models.SKIPS`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

from hftl.config import load_config
from hftl.models.layer_map import build_layer_map
from hftl.models.layer_trace import example_inputs
from hftl.models.strategies import build_plan
from hftl.models.strategies.lora import apply_lora
from hftl.utils.errors import ConfigError
from tests.layer_map_checks import check_layer_map
from tests.tiny_models import LORA_REFUSED, PIPELINES, all_cases, build_tiny, save_tiny, skip_reason

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
    lm = build_layer_map(model)
    assert lm.note is None, lm.note
    inputs = example_inputs(model)
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


# A sample of at least 30 across the five tasks, families apart: encoders, decoders, CNNs, hierarchical
# transformers, speech encoders; the architectures this sweep first found broken among them.
E2E = {
    "image-classification": [
        "vit", "resnet", "convnext", "efficientnet", "swin", "mobilenet_v2", "mobilevit", "clip", "siglip",
        "regnet", "poolformer", "levit", "timm_wrapper", "perceiver", "hgnet_v2",
    ],
    "text-classification": [
        "bert", "albert", "distilbert", "deberta-v2", "gpt2", "llama", "flaubert", "funnel", "electra", "modernbert",
    ],
    "token-classification": ["roberta", "xlm-roberta", "mpnet", "squeezebert"],
    "audio-classification": ["wav2vec2", "hubert", "wavlm", "whisper", "audio-spectrogram-transformer"],
    "speech-recognition": ["wav2vec2", "data2vec-audio", "sew", "wav2vec2-bert", "parakeet_ctc", "lasr_ctc"],
}  # fmt: skip
E2E_CASES = [(task, m) for task, models in E2E.items() for m in models]


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
@pytest.mark.parametrize("task,model_type", E2E_CASES, ids=[f"{t}:{m}" for t, m in E2E_CASES])
def test_trains_one_epoch_and_reloads_in_its_pipeline(task, model_type, task_data, tmp_path):
    from transformers import pipeline

    from hftl import finetune

    assert skip_reason(task, model_type) is None
    torch.manual_seed(0)
    folder = save_tiny(task, model_type, tmp_path / model_type)
    for strategy in ("head_only", "freeze", "lora"):
        result = finetune(
            {"task": task, "model": {"name_or_path": str(folder)}, "data": {"train": str(task_data[task])}},
            strategy=strategy,
            epochs=1,
            output_dir=str(tmp_path / strategy),
            train={"batch_size": 4, "report_to": "none", "max_steps": 2},
        )
        assert 0 < result.trainable_parameters < result.total_parameters
    pipe = pipeline(PIPELINES[task], model=str(tmp_path / "lora" / "model"))
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
