"""`model.window_seconds`: shorten the fixed input window of an audio encoder that takes one (Whisper: 30 s).

Whisper's encoder always reads 30 seconds of log-mel frames (3,000 frames, 1,500 positions after its
strided convolution), however short the clip: a one-second command word costs as much as a 30-second
sentence, and self-attention grows with the square of the window. Cutting the window to a few seconds keeps
the first positions of the encoder's position table (they are the same positions a short clip uses in the
full window), and tells the feature extractor to pad to the new length. The saved `model/` holds both, so
`pipeline(...)` feeds the shorter window too. The cost falls roughly tenfold at 3 s; what it does to
accuracy is measured in docs/guides/speech.md.

Example:
    >>> shorten_audio_window(model, processor, 3.0)  # Whisper: 150 positions, 300 frames  # doctest: +SKIP
"""

from __future__ import annotations

from typing import Any

from torch import nn

from hftl.data.modalities.audio import feature_extractor_of
from hftl.utils.errors import ConfigError


def fixed_window_encoder(model: nn.Module) -> nn.Module | None:
    """The encoder with a fixed window (a position table and `config.max_source_positions`), or None."""
    for module in model.modules():
        if isinstance(getattr(module, "embed_positions", None), nn.Embedding) and hasattr(module, "conv1"):
            return module
    return None


def shorten_audio_window(model: nn.Module, processor: Any, seconds: float) -> None:
    """Cut the encoder's window to `seconds` (from its start) and make the feature extractor pad to it.

    Raises:
        ConfigError: The model takes clips of any length, or `seconds` is not inside its window, or not a
            whole number of encoder positions.
    """
    encoder, fe = fixed_window_encoder(model), feature_extractor_of(processor)
    window = getattr(fe, "chunk_length", None)
    if encoder is None or not window:
        raise ConfigError(
            f"model.window_seconds={seconds:g}: {type(model).__name__} takes clips of any length, not a fixed window "
            "(Whisper does). Remove it; data.max_duration_seconds crops long clips"
        )
    # Whole seconds: the feature extractor stores chunk_length and recomputes its sample count from it on load.
    if not (0 < seconds <= window and float(seconds).is_integer()):
        raise ConfigError(
            f"model.window_seconds={seconds:g}: must be a whole number of seconds from 1 to the encoder's {window:g}"
        )
    seconds = int(seconds)
    positions = seconds * fe.sampling_rate // (fe.hop_length * encoder.conv1.stride[0] * encoder.conv2.stride[0])
    if positions == encoder.embed_positions.num_embeddings:
        return  # already this window (a finished run's model/)
    old = encoder.embed_positions
    table = nn.Embedding(positions, old.embedding_dim).to(old.weight.device, old.weight.dtype)
    table.weight.data.copy_(old.weight.data[:positions])
    table.weight.requires_grad_(old.weight.requires_grad)  # as trainable (or not) as the table it replaces
    encoder.embed_positions = table
    encoder.max_source_positions = positions
    for config in {id(c): c for c in (encoder.config, model.config)}.values():
        config.max_source_positions = positions
    fe.chunk_length = seconds
    fe.n_samples = int(round(seconds * fe.sampling_rate))
    fe.nb_max_frames = fe.n_samples // fe.hop_length
