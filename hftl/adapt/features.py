"""The features a classifier head reads (its last layer's input), caught with a forward hook: what CORAL and
DANN align, and what the run's before/after shift is measured on.

Example:
    >>> with HeadInputs(model, layer_map) as caught:                   # doctest: +SKIP
    ...     model(**batch)
    >>> caught.take().shape                                            # doctest: +SKIP
    torch.Size([32, 1280])
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from hftl.models.layer_map import LayerMap
from hftl.utils.errors import HftlError

_PEFT_PREFIX = "base_model.model."


def head_module(model: nn.Module, layer_map: LayerMap) -> nn.Module:
    """The head's last layer (`layer_map.classifier`), also inside a peft wrapper."""
    for name in (layer_map.classifier, _PEFT_PREFIX + layer_map.classifier):
        try:
            return model.get_submodule(name)
        except AttributeError:
            continue
    raise HftlError(
        f"domain adaptation reads the input of the model's classifier layer, and {layer_map.classifier!r} was not found "
        "in the model; adapt.method=none runs without it"
    )


def feature_width(module: nn.Module) -> int:
    """The width of the features `module` reads: a Linear's in_features (peft's saved copy included)."""
    for m in module.modules():
        if isinstance(m, nn.Linear):
            return m.in_features
    raise HftlError(f"the classifier layer {type(module).__name__} holds no linear layer to read the feature width from")


def model_inputs(batch: dict[str, Any], device: torch.device) -> dict[str, torch.Tensor]:
    """A collated batch's tensors on `device`, labels left out (the passes that only read the model's outputs)."""
    return {k: v.to(device) for k, v in batch.items() if k != "labels" and isinstance(v, torch.Tensor)}


def pooled(x: torch.Tensor) -> torch.Tensor:
    """One vector per example: a (batch, ..., width) input is averaged over its middle positions."""
    return x if x.dim() == 2 else x.flatten(1, -2).mean(dim=1)


class HeadInputs:
    """A forward hook on the head that keeps what it was fed, pooled to (batch, width), gradients attached."""

    def __init__(self, model: nn.Module, layer_map: LayerMap) -> None:
        self.module = head_module(model, layer_map)
        self.caught: list[torch.Tensor] = []
        self.handle: Any = None

    def __enter__(self) -> HeadInputs:
        def hook(_module: nn.Module, args: tuple, kwargs: dict) -> None:
            x = args[0] if args else next(iter(kwargs.values()))
            self.caught.append(pooled(x))

        self.handle = self.module.register_forward_pre_hook(hook, with_kwargs=True)
        return self

    def __exit__(self, *exc: Any) -> None:
        self.handle.remove()

    def take(self) -> torch.Tensor:
        """The features of the last forward pass (and forget the rest)."""
        if not self.caught:
            raise HftlError("the model's forward pass did not reach its classifier layer")
        last, self.caught = self.caught[-1], []
        return last
