"""Tiny random speech models on builtin:spoken-digits, for comparison with Whisper base (`hftl demo --task speech`).

    python benchmarks/tiny_speech_models.py            # 300 training clips, 10 epochs of full fine-tuning each

The tiny models are the test suite's (tests/audio_fixtures.py, tests/whisper_fixtures.py): a 2-layer wav2vec2
and a 2+2-layer Whisper of hidden size 32, random weights. They learn with every strategy on the tests' tones,
but not the spoken digits: what the pretrained encoder is worth shows as the gap to the demo's head_only.
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the tests' fixtures


def main() -> None:
    from hftl import finetune
    from tests.audio_fixtures import save_tiny_wav2vec2
    from tests.whisper_fixtures import save_tiny_whisper

    folder = Path(tempfile.mkdtemp(prefix="tiny-speech-"))
    models = {"tiny wav2vec2": save_tiny_wav2vec2(folder / "w2v"), "tiny Whisper": save_tiny_whisper(folder / "whisper")}
    print("| model | epochs | val accuracy | test accuracy | seconds |\n|---|---|---|---|---|")
    for name, path in models.items():
        start = time.perf_counter()
        result = finetune({
            "task": "audio-classification", "model": {"name_or_path": str(path)},
            "data": {"train": "builtin:spoken-digits", "augment": False, "max_train_samples": 300},
            "strategy": {"name": "full"},
            "train": {"epochs": 10, "batch_size": 16, "learning_rate": 1e-3, "report_to": "none"},
            "output_dir": str(folder / name.replace(" ", "-")),
        })  # fmt: skip
        print(f"| {name} | 10 | {result.metrics['accuracy']:.3f} | {result.test_metrics['accuracy']:.3f} | "
              f"{time.perf_counter() - start:.0f} |", flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
