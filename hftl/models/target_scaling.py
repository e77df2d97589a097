"""Regression heads in the data's units: trained on standardised targets, saved predicting real values.

The loss compares the head's outputs with z = (y - mean) / std, so every target weighs the same and
a new head starts near the right scale. Before saving, `fold` multiplies the head's last layer by std
and adds mean to its bias: the exported model predicts y itself, and `pipeline` or `AutoModel*` need no
hftl code to use it. A head without a bias (GPT-2-style `score`) cannot hold the mean: its targets are
scaled but not centred (`check_head` sets mean 0 and says so).

Example:
    >>> note = check_head(model, layer_map.classifier, space)   # doctest: +SKIP
    >>> fold(model, layer_map.classifier, space)               # doctest: +SKIP
"""

from __future__ import annotations

import torch
from torch import nn

from hftl.data.labels import LabelSpace
from hftl.utils.errors import HftlError

_PEFT_PARTS = (".modules_to_save.default", "base_model.model.")


def _last_layers(model: nn.Module, classifier: str | None, width: int) -> list[nn.Module]:
    """The head's last layer(s) named `classifier` (under peft: the trained copy), with `width` outputs."""
    found = []
    for full, module in model.named_modules():
        if ".original_module" in full or _out_dim(module) is None:
            continue
        plain = full
        for part in _PEFT_PARTS:
            plain = plain.replace(part, "")
        if plain == classifier and module.weight.shape[_out_dim(module)] == width:
            found.append(module)
    return found


def _out_dim(module: nn.Module) -> int | None:
    """The weight dimension of the outputs: 0 for Linear and convolutions, 1 for transformers' Conv1D."""
    if isinstance(module, (nn.Linear, nn.Conv1d, nn.Conv2d)):
        return 0
    if type(module).__name__ == "Conv1D" and hasattr(module, "weight"):
        return 1
    return None


def check_head(model: nn.Module, classifier: str | None, space: LabelSpace) -> str | None:
    """Refuse a head whose last layer cannot take the scaling; returns a note when it has no bias (mean set to 0)."""
    layers = _last_layers(model, classifier, len(space.names))
    if not layers:
        raise HftlError(
            f"regression needs the head to end in a linear layer with one output per target ({len(space.names)}); "
            f"found {classifier!r} in {type(model).__name__}. Pick a checkpoint with a linear classification head"
        )
    if layers[0].bias is None:
        space.mean = [0.0] * len(space.names)
        return (
            f"the head's last layer ({classifier}) has no bias, so the targets are scaled by their spread but not "
            "centred (the model learns their mean itself)"
        )
    return None


@torch.no_grad()
def fold(model: nn.Module, classifier: str | None, space: LabelSpace) -> None:
    """Fold the targets' std and mean into the head's last layer, in place: outputs become data units."""
    std = torch.tensor(space.std, dtype=torch.float64)
    mean = torch.tensor(space.mean, dtype=torch.float64)
    for layer in _last_layers(model, classifier, len(space.names)):
        dim = _out_dim(layer)
        shape = [1] * layer.weight.dim()
        shape[dim] = -1
        layer.weight.copy_((layer.weight.double() * std.view(shape).to(layer.weight.device)).to(layer.weight.dtype))
        if layer.bias is not None:
            scaled = layer.bias.double() * std.to(layer.bias.device) + mean.to(layer.bias.device)
            layer.bias.copy_(scaled.to(layer.bias.dtype))
