"""model.window_seconds: a Whisper encoder cut to a shorter fixed window trains, saves and serves at that window."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from safetensors.torch import load_file

from hftl.utils.errors import ConfigError
from tests.audio_fixtures import RATE, one_thread, save_tiny_wav2vec2, tone, write_tone_classes  # noqa: F401
from tests.conftest import run_cli
from tests.whisper_fixtures import save_tiny_whisper


def _config(tmp_path: Path, model: Path, data: Path, window: int | None, name: str) -> Path:
    cfg = {
        "task": "audio-classification",
        "model": {"name_or_path": str(model), "window_seconds": window},
        "data": {"train": str(data), "augment": False, "validation_split": 0.25},
        "strategy": {"name": "full"},
        "train": {"epochs": 8, "batch_size": 8, "learning_rate": 3e-3, "scheduler": "constant", "report_to": "none"},
        "output_dir": str(tmp_path / name),
    }
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def test_a_shorter_window_trains_saves_and_serves(tmp_path: Path) -> None:
    from transformers import pipeline

    whisper = save_tiny_whisper(tmp_path / "tiny", chunk_length=4)  # 200 positions, 400 frames
    data = write_tone_classes(tmp_path / "tones", per_class=12)
    run_cli("train", str(_config(tmp_path, whisper, data, 1, "short")), in_process=True)
    model_dir = tmp_path / "short" / "model"
    config = json.loads((model_dir / "config.json").read_text())
    extractor = json.loads((model_dir / "preprocessor_config.json").read_text())
    assert config["max_source_positions"] == 50
    assert (extractor["chunk_length"], extractor["n_samples"], extractor["nb_max_frames"]) == (1, RATE, 100)
    assert load_file(str(model_dir / "model.safetensors"))["encoder.embed_positions.weight"].shape == (50, 32)
    metrics = json.loads((tmp_path / "short" / "metrics.json").read_text())
    assert metrics["validation"]["accuracy"] > 0.6  # three tone classes: chance is 1/3
    classify = pipeline("audio-classification", model=str(model_dir))
    top = classify({"raw": tone(880.0, 0.3), "sampling_rate": RATE}, top_k=1)[0]
    assert top["label"] in {"low", "mid", "high"}


def test_window_seconds_is_refused_where_it_cannot_apply(tmp_path: Path) -> None:
    whisper = save_tiny_whisper(tmp_path / "tiny", chunk_length=2)
    data = write_tone_classes(tmp_path / "tones", per_class=4)
    out = run_cli("train", str(_config(tmp_path, whisper, data, 3, "long")), in_process=True, check=False)
    assert out.returncode != 0
    assert "model.window_seconds=3: must be a whole number of seconds from 1 to the encoder's 2" in out.stderr
    w2v = save_tiny_wav2vec2(tmp_path / "w2v")
    out = run_cli("train", str(_config(tmp_path, w2v, data, 1, "w2v")), in_process=True, check=False)
    assert out.returncode != 0 and "takes clips of any length" in out.stderr
    config = _config(tmp_path, whisper, data, 1, "none")
    out = run_cli("train", str(config), "model.window_seconds=0", in_process=True, check=False)
    assert out.returncode != 0 and "model.window_seconds must be a whole number of seconds >= 1" in out.stderr


def test_shorten_is_exact_for_audio_that_fits(tmp_path: Path) -> None:
    """A clip inside the shorter window gives the same first encoder positions' inputs: same mel frames."""
    from transformers import AutoProcessor, WhisperForAudioClassification

    from hftl.models.audio_window import shorten_audio_window

    whisper = save_tiny_whisper(tmp_path / "tiny", chunk_length=4)
    model = WhisperForAudioClassification.from_pretrained(whisper, num_labels=2).eval()
    processor = AutoProcessor.from_pretrained(whisper)
    clip = np.asarray(tone(440.0, 0.5))
    long_features = processor.feature_extractor(clip, sampling_rate=RATE, return_tensors="pt").input_features
    table = model.encoder.embed_positions.weight.detach().clone()
    trains = model.encoder.embed_positions.weight.requires_grad
    shorten_audio_window(model, processor, 2)
    # The kept positions are the first 100 of the checkpoint's table, unchanged, trainable as before.
    assert torch.equal(model.encoder.embed_positions.weight, table[:100])
    assert model.encoder.embed_positions.weight.requires_grad is trains
    short_features = processor.feature_extractor(clip, sampling_rate=RATE, return_tensors="pt").input_features
    assert short_features.shape[-1] == 200 and long_features.shape[-1] == 400
    # Whisper's log-mel clamps relative to the clip's maximum, so the frames that hold the clip agree.
    assert torch.allclose(short_features[..., :40], long_features[..., :40], atol=1e-5)
    with torch.no_grad():
        assert model(short_features).logits.shape == (1, 2)
    with pytest.raises(ConfigError, match="whole number of seconds"):
        shorten_audio_window(model, processor, 5)
