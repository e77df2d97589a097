"""Audio decoding without torchcodec: soundfile reads, channels are averaged to mono, soxr resamples.

`datasets` 4+ decodes `Audio` columns with torchcodec, which needs FFmpeg and CUDA libraries that are
often missing; hftl reads `Audio(decode=False)` paths and bytes itself, so a 44.1 kHz stereo FLAC and
a 16 kHz mono WAV both arrive at the model as mono float32 at the feature extractor's rate.

Example:
    >>> samples = load_audio("clip.flac", 16_000)   # doctest: +SKIP
    >>> samples.dtype, samples.ndim                # doctest: +SKIP
    (dtype('float32'), 1)
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf

EXTENSIONS = (".wav", ".flac", ".ogg", ".oga", ".opus", ".mp3", ".aiff", ".aif", ".au", ".caf", ".w64")
SILENCE_PEAK = 1e-4  # -80 dBFS: below this a clip holds no usable signal (digital silence, a muted mic)


def describe(value: Any) -> str:
    """A short name of an audio value for messages: its path, or what it is."""
    if isinstance(value, dict):
        return value.get("path") or ("<embedded audio bytes>" if value.get("bytes") else "<audio array>")
    return str(value)


def read_audio(value: Any) -> tuple[np.ndarray, int]:
    """Samples (frames, channels) as float32 and the sampling rate, from any stored audio value.

    Accepts a path, a datasets `{"bytes", "path"}` dict (`Audio(decode=False)`) or an already decoded
    `{"array", "sampling_rate"}` dict.

    Example:
        >>> data, rate = read_audio("clip.wav")   # doctest: +SKIP
    """
    if isinstance(value, dict) and value.get("array") is not None:
        rate = value.get("sampling_rate")
        if not rate or int(rate) <= 0:
            raise ValueError("an audio array without a sampling rate")
        data = np.asarray(value["array"], dtype=np.float32)
        if data.ndim == 1:
            return data[:, None], int(rate)
        # Decoders disagree on the layout of several channels: the short axis is the channels.
        return (data.T if data.shape[0] < data.shape[1] else data), int(rate)
    source = value
    if isinstance(value, dict):
        source = io.BytesIO(value["bytes"]) if value.get("bytes") else value.get("path")
    if source is None:
        raise FileNotFoundError("no path or bytes")
    data, rate = sf.read(source, dtype="float32", always_2d=True)
    return data, int(rate)


def to_mono(data: np.ndarray) -> np.ndarray:
    """Average the channels of (frames, channels) samples: a stereo file and its mono mix look alike."""
    return data.mean(axis=1, dtype=np.float32) if data.ndim == 2 else data.astype(np.float32, copy=False)


def resample(samples: np.ndarray, rate: int, target: int) -> np.ndarray:
    """Band-limited resampling with soxr (high quality), not interpolation, so no aliasing.

    Example:
        >>> resample(np.zeros(44_100, dtype=np.float32), 44_100, 16_000).shape
        (16000,)
    """
    if rate == target:
        return samples
    import soxr

    return soxr.resample(samples, rate, target, quality="HQ").astype(np.float32, copy=False)


def load_audio(value: Any, sampling_rate: int) -> np.ndarray:
    """Mono float32 samples at `sampling_rate` from a path, bytes dict or array dict.

    Example:
        >>> load_audio({"array": np.ones(8_000), "sampling_rate": 8_000}, 16_000).shape
        (16000,)
    """
    data, rate = read_audio(value)
    return resample(to_mono(data), rate, sampling_rate)


def audio_problem(value: Any) -> str | None:
    """Why `value` cannot be used as audio, or None when it decodes to a non-silent clip."""
    if value is None:
        return "no audio (empty cell)"
    path = value.get("path") if isinstance(value, dict) and not value.get("bytes") else value
    if isinstance(path, (str, Path)) and not Path(path).is_file():
        return "file not found"
    try:
        data, _ = read_audio(value)
    except sf.LibsndfileError as e:
        if "SF_INFO struct incomplete" in str(e):  # libsndfile's word for a header with sampling rate (or channels) 0
            return "its sampling rate cannot be read (the header has none, or 0)"
        return f"not audio soundfile can read: corrupt, or an unsupported format ({str(e).split(': ', 1)[-1][:100]})"
    except ValueError as e:
        return f"its sampling rate cannot be read ({e})" if "sampling rate" in str(e) else f"unreadable audio ({e})"
    except (OSError, RuntimeError, TypeError) as e:
        return f"unreadable audio ({str(e).splitlines()[0][:120]})"
    if data.shape[0] == 0:
        return "zero-length audio (no samples)"
    if not np.isfinite(data).all():
        return "holds NaN or infinite samples"
    if float(np.abs(data).max()) < SILENCE_PEAK:
        return "silence only (peak below -80 dBFS)"
    return None


def duration_seconds(value: Any) -> float:
    """Length in seconds from the file header (no decoding), or from the array of an array dict."""
    if isinstance(value, dict) and value.get("array") is not None:
        return len(value["array"]) / float(value["sampling_rate"])
    source = io.BytesIO(value["bytes"]) if isinstance(value, dict) and value.get("bytes") else describe(value)
    info = sf.info(source)
    return info.frames / float(info.samplerate)


def audio_header_problem(value: Any) -> str | None:
    """Why `value` cannot be used as audio, from its header alone (no decoding; data.check_inputs=header)."""
    if value is None:
        return "no audio (empty cell)"
    if isinstance(value, dict) and value.get("array") is not None:
        return None
    path = value.get("path") if isinstance(value, dict) and not value.get("bytes") else value
    if isinstance(path, (str, Path)) and not Path(path).is_file():
        return "file not found"
    try:
        source = io.BytesIO(value["bytes"]) if isinstance(value, dict) and value.get("bytes") else describe(value)
        info = sf.info(source)
    except sf.LibsndfileError as e:
        return f"not audio soundfile can read: corrupt, or an unsupported format ({str(e).split(': ', 1)[-1][:100]})"
    except (OSError, RuntimeError, TypeError, ValueError) as e:
        return f"unreadable audio ({str(e).splitlines()[0][:120]})"
    if not info.samplerate:
        return "its sampling rate cannot be read (the header has none, or 0)"
    return "zero-length audio (no samples)" if info.frames == 0 else None
