"""One forward pass on an example batch, recording when each module runs: the layer map's ground truth.

Registration order (the order `named_children` lists modules) is not the order a model runs them:
wav2vec2's stable-layer-norm encoder registers its final norm before its layers, FlauBERT keeps
attention and feed-forward layers in two parallel lists. Hooks on one real forward pass say what runs
before the blocks, inside them and after them, and which layer produces the logits.

Example:
    >>> trace = trace_forward(model, example_inputs(model, processor))   # doctest: +SKIP
    >>> trace.start["vit.layernorm"] > trace.end["vit.encoder.layer.1"]  # doctest: +SKIP
    True
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from hftl.utils.errors import first_line

SPEECH_RATE = 16_000


@dataclass
class Trace:
    """When each module ran in one forward pass, on one clock ticking at every call start and end."""

    start: dict[str, int] = field(default_factory=dict)  # first call's start
    end: dict[str, int] = field(default_factory=dict)  # first call's end
    last_end: dict[str, int] = field(default_factory=dict)
    calls: dict[str, int] = field(default_factory=dict)
    classifier: str | None = None  # the last leaf layer with weights whose output has the logits' width
    error: str | None = None  # why the forward pass failed; the other fields are then empty

    @property
    def ok(self) -> bool:
        return self.error is None

    def ran(self, name: str) -> bool:
        return name in self.start


def trace_forward(model: nn.Module, inputs: dict[str, Any] | None) -> Trace:
    """Run `model` once on `inputs` in eval mode without gradients, recording every module's calls.

    The model's training mode, its RNG streams and its weights are left as they were.
    """
    if not inputs:
        return Trace(error="no example inputs could be made for this model")
    trace, clock, widths = Trace(), [0], {}
    names = {id(m): n for n, m in model.named_modules()}

    def before(module: nn.Module, _args: Any) -> None:
        name = names[id(module)]
        clock[0] += 1
        trace.start.setdefault(name, clock[0])
        trace.calls[name] = trace.calls.get(name, 0) + 1

    def after(module: nn.Module, _args: Any, out: Any) -> None:
        name = names[id(module)]
        clock[0] += 1
        trace.end.setdefault(name, clock[0])
        trace.last_end[name] = clock[0]
        leaf_with_weights = next(module.children(), None) is None and next(module.parameters(), None) is not None
        if isinstance(out, torch.Tensor) and out.dim() and leaf_with_weights:
            widths[name] = (clock[0], out.shape[-1])

    handles = [m.register_forward_pre_hook(before) for m in model.modules()]
    handles += [m.register_forward_hook(after) for m in model.modules()]
    was_training = model.training
    try:
        model.eval()
        with torch.no_grad(), torch.random.fork_rng(devices=[]):
            out = model(**inputs)
        logits = getattr(out, "logits", None)
        if logits is None:  # a model returning its logits under another name (PP-LCNet) or as a tuple
            first = out.to_tuple() if hasattr(out, "to_tuple") else out
            logits = first[0] if isinstance(first, (tuple, list)) and first else None
    except Exception as e:  # noqa: BLE001 - any failure means "no trace"; the caller says so and falls back
        return Trace(error=f"{type(e).__name__}: {first_line(e)}")
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)
    if isinstance(logits, torch.Tensor) and logits.dim():
        width = logits.shape[-1]
        matching = [(t, n) for n, (t, w) in widths.items() if w == width]
        trace.classifier = max(matching)[1] if matching else None
    return trace


def example_inputs(model: nn.Module, processor: Any = None) -> dict[str, Any] | None:
    """A one-example batch the model accepts: made by its processor when given, else from its config.

    Example:
        >>> sorted(example_inputs(vit))   # doctest: +SKIP
        ['pixel_values']
    """
    accepted = _accepted(model)
    name = getattr(model, "main_input_name", None)
    for make in (lambda: _from_processor(processor) if processor is not None else None, lambda: _from_config(model)):
        made = make()
        if made:
            made = {k: v for k, v in made.items() if accepted is None or k in accepted}
            if not name or name in made:
                if generation_encoder(model) is not None:  # a decoder that generates needs its first tokens
                    start = getattr(model.config, "decoder_start_token_id", None) or 0
                    made["decoder_input_ids"] = torch.full((1, 2), start, dtype=torch.long)
                return made
    return None


def generation_encoder(model: nn.Module) -> str | None:
    """The encoder's module name in an encoder-decoder model that generates tokens (Whisper's
    `model.encoder`), whose decoder is its task head; None for other models (BART's classifier among them).

    Example:
        >>> generation_encoder(WhisperForConditionalGeneration(config))   # doctest: +SKIP
        'model.encoder'
    """
    config = getattr(model, "config", None)
    if not getattr(config, "is_encoder_decoder", False) or not callable(getattr(model, "get_encoder", None)):
        return None
    outputs = model.get_output_embeddings() if callable(getattr(model, "get_output_embeddings", None)) else None
    if outputs is None:
        return None
    encoder = model.get_encoder()
    return next((name for name, module in model.named_modules() if module is encoder and name), None)


def _accepted(model: nn.Module) -> set[str] | None:
    """The forward's keyword names, or None when it takes **kwargs (then everything goes through)."""
    params = inspect.signature(model.forward).parameters.values()
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params):
        return None
    return {p.name for p in params}


def _from_processor(processor: Any) -> dict[str, Any] | None:
    from PIL import Image

    extractor = getattr(processor, "feature_extractor", None)
    images = getattr(processor, "image_processor", None)
    try:
        if extractor is not None or _is_audio(processor):
            extractor = extractor or processor
            rate = getattr(extractor, "sampling_rate", SPEECH_RATE) or SPEECH_RATE
            clip = np.random.default_rng(0).normal(0, 0.1, rate).astype(np.float32)
            return dict(extractor(clip, sampling_rate=rate, return_tensors="pt"))
        if images is not None or hasattr(processor, "preprocess") and not hasattr(processor, "tokenize"):
            image = Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8))
            return dict((images or processor)(images=[image], return_tensors="pt"))
        if hasattr(processor, "tokenize"):
            return dict(processor(["an example sentence of a few words"], return_tensors="pt"))
    except Exception:  # noqa: BLE001 - the config-based batch is the fallback
        return None
    return None


def _is_audio(processor: Any) -> bool:
    return hasattr(processor, "sampling_rate") and hasattr(processor, "feature_size")


def _from_config(model: nn.Module) -> dict[str, Any] | None:
    """A batch built from the config alone, for the main input kinds (images, token ids, raw audio)."""
    cfg = model.config
    name = getattr(model, "main_input_name", "input_ids")
    if name == "inputs":  # Perceiver: token ids when it embeds tokens, else an image
        vocab = getattr(cfg, "vocab_size", None)
        takes_ids = any(isinstance(m, nn.Embedding) and m.num_embeddings == vocab for m in model.modules())
        name = "input_ids" if takes_ids else "pixel_values"
        made = _from_config_named(model, name)
        return {"inputs": made[name]} if made else None
    return _from_config_named(model, name)


def _from_config_named(model: nn.Module, name: str) -> dict[str, Any] | None:
    cfg = model.config
    vision = getattr(cfg, "vision_config", None) or cfg
    if name == "pixel_values":
        # timm models keep their input size in `pretrained_cfg` (MaxViT's windows need exactly that size).
        timm_cfg = next((m.pretrained_cfg for m in model.modules() if isinstance(getattr(m, "pretrained_cfg", None), dict)), {})
        height, width = _image_size(vision, timm_cfg)
        channels = getattr(vision, "num_channels", 3) or 3
        return {name: torch.randn(1, channels, height, width, generator=torch.Generator().manual_seed(0))}
    if name == "input_features" and hasattr(cfg, "max_source_positions") and hasattr(cfg, "num_mel_bins"):
        # Whisper: the encoder takes exactly 2 * max_source_positions mel frames.
        return {"input_features": torch.zeros(1, cfg.num_mel_bins, 2 * cfg.max_source_positions)}
    if name == "input_ids":
        text = cfg.get_text_config()
        vocab = getattr(text, "vocab_size", None) or 100
        ids = torch.arange(5, 21) % max(vocab - 5, 1) + min(5, vocab - 1)
        eos = getattr(text, "eos_token_id", None)
        if isinstance(eos, int) and eos < vocab:  # encoder-decoder classifiers pool at the end-of-sequence token
            ids[-1] = eos
        return {"input_ids": ids[None], "attention_mask": torch.ones(1, len(ids), dtype=torch.long)}
    if name == "input_features":  # time-major filter-bank features (Parakeet, LASR, wav2vec2-BERT)
        encoder = getattr(cfg, "encoder_config", None) or cfg
        width = (
            getattr(encoder, "input_dim", None)
            or getattr(encoder, "num_mel_bins", None)
            or getattr(cfg, "feature_projection_input_dim", None)
        )
        return {"input_features": torch.randn(1, 200, width) * 0.1} if width else None
    if name == "input_values" and hasattr(cfg, "num_mel_bins") and hasattr(cfg, "max_length"):  # AST's filter banks
        return {"input_values": torch.randn(1, cfg.max_length, cfg.num_mel_bins) * 0.1}
    if name == "input_values" and not hasattr(cfg, "num_mel_bins"):
        return {"input_values": torch.randn(1, SPEECH_RATE, generator=torch.Generator().manual_seed(0)) * 0.1}
    return None


def _image_size(cfg: Any, timm_cfg: dict) -> tuple[int, int]:
    size = getattr(cfg, "image_size", None)
    if size is None and timm_cfg.get("input_size"):
        size = list(timm_cfg["input_size"])[-2:]
    if isinstance(size, dict):
        size = [size.get("height", 64), size.get("width", 64)]
    if isinstance(size, (list, tuple)):
        return int(size[0]), int(size[-1])
    return (int(size), int(size)) if size else (64, 64)
