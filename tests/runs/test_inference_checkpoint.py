"""evaluate_checkpoint: a speech encoder-decoder scored before any training (zero-shot), as training loads it."""

from __future__ import annotations

import pytest

from hftl.config import load_config
from hftl.runs.inference import evaluate_checkpoint
from hftl.utils.errors import HftlError
from tests.audio_fixtures import one_thread, write_tone_classes, write_tone_sequences  # noqa: F401
from tests.whisper_fixtures import save_tiny_whisper


def test_a_whisper_checkpoint_is_scored_zero_shot(tmp_path):
    whisper = save_tiny_whisper(tmp_path / "tiny")
    data = write_tone_sequences(tmp_path / "words", n=12)
    cfg = load_config({
        "task": "speech-recognition", "model": {"name_or_path": str(whisper)},
        "data": {"train": str(data), "language": "en"}, "train": {"generation_max_length": 8, "batch_size": 4},
        "output_dir": str(tmp_path / "unused"),
    })  # fmt: skip
    metrics = evaluate_checkpoint(cfg, str(data))
    assert metrics["examples"] == 12 and set(metrics) >= {"wer", "cer", "loss"}
    assert metrics["wer"] >= 0.5  # random weights: nothing is heard
    assert not (tmp_path / "unused").exists()  # scoring writes no run folder


def test_a_checkpoint_whose_head_is_new_has_no_zero_shot_score(tmp_path):
    data = write_tone_classes(tmp_path / "tones", per_class=2)
    cfg = load_config({"task": "audio-classification", "model": {"name_or_path": "some/model"}, "data": {"train": str(data)}})
    with pytest.raises(HftlError, match="no zero-shot score"):
        evaluate_checkpoint(cfg, str(data))
