"""data.target_test without a method, for a task the methods do not adapt: speech recognition reports the target's
WER beside source validation, and a target is loaded and checked but no shift is measured (no one vector per clip)."""

from __future__ import annotations

import json

from hftl import finetune
from tests.audio_fixtures import one_thread, write_tone_sequences  # noqa: F401
from tests.whisper_fixtures import save_tiny_whisper


def test_speech_recognition_reports_the_target_test_beside_validation(tmp_path):
    whisper = save_tiny_whisper(tmp_path / "tiny")
    source = write_tone_sequences(tmp_path / "source", n=12)
    target = write_tone_sequences(tmp_path / "target", n=8, seed=1)
    target_test = write_tone_sequences(tmp_path / "target_test", n=6, seed=2)
    finetune({
        "task": "speech-recognition", "model": {"name_or_path": str(whisper)},
        "data": {"train": str(source), "target": str(target), "target_test": str(target_test), "language": "en"},
        "strategy": {"name": "head_only"},
        "train": {"epochs": 1, "batch_size": 4, "generation_max_length": 8, "report_to": "none"},
        "output_dir": str(tmp_path / "run"),
    })  # fmt: skip
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert set(metrics["target_test"]) == set(metrics["validation"]) >= {"wer", "cer", "loss"}
    assert metrics["data"]["target_test_examples"] == 6 and metrics["data"]["target_examples"] == 8
    assert "adapt" not in metrics
