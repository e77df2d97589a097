"""The strong view self-training's student sees (FixMatch, Noisy Student): a harder copy of a collated batch,
made on its tensors so it serves every modality, drawn from a generator of its own (the run's RNG is untouched).

- images (`pixel_values`): a shift of up to 1/8 of the side, brightness and contrast jitter, a cut-out
  square of up to half the side, Gaussian noise;
- text (`input_ids`): 15% of the real tokens replaced by the mask (or unknown) token;
- audio (`input_values` waveforms, `input_features` spectrograms): noise at about 20 dB SNR and a masked
  span of up to 10% of the time axis.

Example:
    >>> batch = {"pixel_values": torch.zeros(2, 3, 8, 8), "labels": torch.tensor([0, 1])}
    >>> strong_view(batch, torch.Generator().manual_seed(0))["pixel_values"].shape
    torch.Size([2, 3, 8, 8])
"""

from __future__ import annotations

from typing import Any

import torch


def strong_view(
    batch: dict[str, Any], generator: torch.Generator, mask_id: int | None = None, special: frozenset | set = frozenset()
) -> dict[str, Any]:
    """A strongly augmented copy of `batch`; `mask_id` and `special` (token ids never replaced) for text."""
    out = dict(batch)
    if "pixel_values" in batch:
        out["pixel_values"] = _image(batch["pixel_values"], generator)
    if "input_ids" in batch and mask_id is not None:
        out["input_ids"] = _tokens(batch["input_ids"], batch.get("attention_mask"), generator, mask_id, special)
    for key in ("input_values", "input_features"):
        if key in batch:
            out[key] = _audio(batch[key], generator)
    return out


def _rand(shape: tuple[int, ...], generator: torch.Generator, like: torch.Tensor) -> torch.Tensor:
    return torch.rand(shape, generator=generator).to(like.device, like.dtype)


def _image(x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    b, _, h, w = x.shape
    out = torch.empty_like(x)
    shifts = (torch.rand(b, 2, generator=g) * 2 - 1) * torch.tensor([h / 8, w / 8])
    for i in range(b):  # a per-example shift: roll wraps the edge round, as a translation with wrap padding
        out[i] = torch.roll(x[i], shifts=(int(shifts[i, 0]), int(shifts[i, 1])), dims=(1, 2))
    std = x.flatten(1).std(dim=1).view(b, 1, 1, 1).clamp_min(1e-3)
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    contrast = 0.6 + 0.8 * _rand((b, 1, 1, 1), g, x)
    brightness = (_rand((b, 1, 1, 1), g, x) - 0.5) * std
    out = (out - mean) * contrast + mean + brightness
    side = (torch.rand(b, generator=g) * 0.5 * min(h, w)).long()
    corners = torch.rand(b, 2, generator=g)
    for i in range(b):  # cut-out: one square filled with the image's mean
        s = int(side[i])
        top, left = int(corners[i, 0] * (h - s)), int(corners[i, 1] * (w - s))
        out[i, :, top : top + s, left : left + s] = mean[i]
    return out + 0.1 * std * torch.randn(x.shape, generator=g).to(x.device, x.dtype)


def _tokens(ids: torch.Tensor, attention: Any, g: torch.Generator, mask_id: int, special: set[int]) -> torch.Tensor:
    real = attention.bool() if attention is not None else torch.ones_like(ids, dtype=torch.bool)
    for token in special:
        real &= ids != token
    replace = (torch.rand(ids.shape, generator=g) < 0.15).to(ids.device) & real
    return torch.where(replace, torch.full_like(ids, mask_id), ids)


def _audio(x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    power = x.float().pow(2).mean(dim=tuple(range(1, x.dim())), keepdim=True)
    noise = torch.randn(x.shape, generator=g).to(x.device, x.dtype) * (power / 100).sqrt().to(x.dtype)  # ~20 dB SNR
    out = x + noise
    steps = x.shape[-1]
    width = (torch.rand(len(x), generator=g) * 0.1 * steps).long()
    start = torch.rand(len(x), generator=g)
    for i in range(len(x)):
        w = int(width[i])
        s = int(start[i] * (steps - w))
        out[i, ..., s : s + w] = 0
    return out
