"""Audio test fixtures: tiny wav2vec2 checkpoints saved with save_pretrained, and learnable tone sets.

The tone sets are real signal problems, not shortcuts: classes differ only in pitch, clips differ in
length, loudness, phase and noise; for speech recognition each letter is its own tone, so the model
has to find where one letter ends and the next begins.
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

RATE = 16_000
CLASS_TONES = {"low": 330.0, "mid": 880.0, "high": 2_200.0}
LETTER_TONES = {"a": 400.0, "b": 1_000.0, "c": 2_400.0}
LETTER_SECONDS, GAP_SECONDS = 0.06, 0.04


def tiny_wav2vec2_config(**overrides):
    """A 2-layer wav2vec2 (hidden 32) whose feature encoder downsamples 320x, as wav2vec2-base's: 50 frames/s.

    The frame rate matters for CTC: a letter must span a few frames, not dozens, or the loss is met by
    letter probabilities too low to ever win greedy decoding.
    """
    from transformers import Wav2Vec2Config

    kwargs = dict(
        hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
        conv_dim=(32, 32, 32), conv_stride=(5, 8, 8), conv_kernel=(10, 8, 8), conv_bias=True, feat_extract_norm="layer",
        num_conv_pos_embeddings=8, num_conv_pos_embedding_groups=4, classifier_proj_size=16,
        mask_time_prob=0.05, mask_time_length=2, layerdrop=0.0, vocab_size=8,
    )  # fmt: skip
    kwargs.update(overrides)
    return Wav2Vec2Config(**kwargs)


def save_tiny_wav2vec2(folder: Path, attention_mask: bool = True, **overrides) -> Path:
    """A pretrained-looking checkpoint folder: pretraining model weights plus a feature extractor.

    Saved from `Wav2Vec2Model` (no task head), as facebook/wav2vec2-base is, so both audio
    classification and CTC load it with a new head.
    """
    import torch
    from transformers import Wav2Vec2FeatureExtractor, Wav2Vec2Model

    torch.manual_seed(0)
    Wav2Vec2Model(tiny_wav2vec2_config(**overrides)).save_pretrained(folder)
    Wav2Vec2FeatureExtractor(
        feature_size=1, sampling_rate=RATE, padding_value=0.0, do_normalize=True, return_attention_mask=attention_mask
    ).save_pretrained(folder)
    return folder


def tone(freq: float, seconds: float, rate: int = RATE, amplitude: float = 0.5, phase: float = 0.0) -> np.ndarray:
    """A sine tone with 5 ms fades (no clicks at the edges)."""
    t = np.arange(int(seconds * rate)) / rate
    x = amplitude * np.sin(2 * np.pi * freq * t + phase)
    fade = min(int(0.005 * rate), len(x) // 2)
    ramp = np.linspace(0.0, 1.0, fade)
    x[:fade] *= ramp
    x[len(x) - fade :] *= ramp[::-1]
    return x.astype(np.float32)


def write_tone_classes(root: Path, per_class: int = 16, seed: int = 0) -> Path:
    """An audiofolder `root/<low|mid|high>/<n>.wav`: 0.25-0.4 s tones, random loudness, phase and noise."""
    rng = np.random.default_rng(seed)
    for label, freq in CLASS_TONES.items():
        (root / label).mkdir(parents=True, exist_ok=True)
        for n in range(per_class):
            x = tone(
                freq * rng.uniform(0.95, 1.05), rng.uniform(0.25, 0.4), amplitude=rng.uniform(0.2, 0.8), phase=rng.uniform(0, 6)
            )
            x += rng.normal(0, 0.01, len(x)).astype(np.float32)
            sf.write(root / label / f"{n}.wav", x, RATE)
    return root


def letters_clip(text: str, rng: np.random.Generator) -> np.ndarray:
    """One tone per letter with short gaps; a space is a longer gap."""
    parts = [np.zeros(int(GAP_SECONDS * RATE), dtype=np.float32)]
    for ch in text:
        if ch == " ":
            parts.append(np.zeros(int(2 * GAP_SECONDS * RATE), dtype=np.float32))
            continue
        parts.append(tone(LETTER_TONES[ch], LETTER_SECONDS * rng.uniform(0.9, 1.1), amplitude=rng.uniform(0.3, 0.7)))
        parts.append(np.zeros(int(GAP_SECONDS * RATE), dtype=np.float32))
    x = np.concatenate(parts)
    return x + rng.normal(0, 0.005, len(x)).astype(np.float32)


def write_tone_sequences(root: Path, n: int = 48, seed: int = 0) -> Path:
    """`root/train.csv` (audio,transcription) of 2-3 letter 'words' over a/b/c, clips in `root/clips/`."""
    rng = np.random.default_rng(seed)
    (root / "clips").mkdir(parents=True, exist_ok=True)
    rows = []
    for i in range(n):
        text = "".join(rng.choice(list(LETTER_TONES), size=int(rng.integers(2, 4))))
        if i % 4 == 0:  # some two-word clips, so the word delimiter is learnt and scored
            text += " " + "".join(rng.choice(list(LETTER_TONES), size=2))
        sf.write(root / "clips" / f"{i}.wav", letters_clip(text, rng), RATE)
        rows.append({"audio": f"clips/{i}.wav", "transcription": text.upper() if i % 5 == 0 else text})
    with (root / "train.csv").open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=["audio", "transcription"])
        writer.writeheader()
        writer.writerows(rows)
    return root / "train.csv"


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny models run faster on one thread, and far faster when other jobs share the cores.

    Autouse in the modules that import it: `from .audio_fixtures import one_thread`.
    """
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def tiny_w2v(tmp_path_factory) -> Path:
    return save_tiny_wav2vec2(tmp_path_factory.mktemp("tiny-w2v"))


@pytest.fixture(scope="session")
def tone_classes(tmp_path_factory) -> Path:
    return write_tone_classes(tmp_path_factory.mktemp("tones"))


@pytest.fixture(scope="session")
def tone_sequences(tmp_path_factory) -> Path:
    return write_tone_sequences(tmp_path_factory.mktemp("tone-seq"))
