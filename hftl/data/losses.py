"""The training loss of each label shape, with class weights and label smoothing; the balanced sampler's weights.

Single-label without weights or smoothing keeps the model's own cross-entropy (`None` here); otherwise
hftl computes the loss from the logits, so every architecture gets the same one whatever its head does
with labels.

Example:
    >>> space = LabelSpace("single_label", ["neg", "pos"], counts=[95, 5])
    >>> class_weight_vector(space, "balanced")
    [0.5263157894736842, 10.0]
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from hftl.data.labels import MULTI, REGRESSION, SINGLE, LabelSpace
from hftl.utils.errors import ConfigError

Loss = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def class_weight_vector(space: LabelSpace, class_weights: str | dict[str, float]) -> list[float] | None:
    """train.class_weights as one weight per class (multi-label: the positive weight per label), or None.

    balanced: n / (classes x count) per class, as scikit-learn's; multi-label: negatives / positives per label.
    """
    if class_weights == "none":
        return None
    if space.problem == REGRESSION:
        raise ConfigError("train.class_weights applies to classes; data.problem=regression has none. Remove it")
    counts = np.asarray(space.counts or [], dtype=np.float64)
    if isinstance(class_weights, dict):
        unknown = [k for k in class_weights if k not in space.names]
        if unknown:
            raise ConfigError(
                f"train.class_weights names {', '.join(map(repr, unknown))}, which the training data has no label of; "
                f"the labels are {', '.join(space.names[:30])}"
            )
        return [float(class_weights.get(name, 1.0)) for name in space.names]
    if (counts == 0).any():
        missing = [n for n, c in zip(space.names, counts) if c == 0]
        raise ConfigError(
            f"train.class_weights=balanced: label(s) {', '.join(missing[:10])} never occur in train, so their weight "
            "is undefined; give weights as a mapping {label: weight}, or add examples"
        )
    if space.problem == MULTI:
        return ((space.examples - counts) / counts).tolist()
    return (counts.sum() / (len(counts) * counts)).tolist()


def training_loss(space: LabelSpace, class_weights: str | dict[str, float], label_smoothing: float) -> Loss | None:
    """The loss `fit` minimises for `space`, or None for the model's own (plain single-label)."""
    weights = class_weight_vector(space, class_weights)
    if space.problem == SINGLE:
        if weights is None and not label_smoothing:
            return None
        return _cross_entropy(weights, label_smoothing)
    if space.problem == MULTI:
        return _binary_cross_entropy(weights, label_smoothing)
    return _standardised_mse(space.mean, space.std)


def _cross_entropy(weights: list[float] | None, smoothing: float) -> Loss:
    def loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        w = torch.tensor(weights, device=logits.device) if weights is not None else None
        return torch.nn.functional.cross_entropy(logits.float(), labels, weight=w, label_smoothing=smoothing)

    return loss


def _binary_cross_entropy(pos_weights: list[float] | None, smoothing: float) -> Loss:
    def loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        target = labels.float() * (1 - smoothing) + smoothing / 2
        w = torch.tensor(pos_weights, device=logits.device) if pos_weights is not None else None
        return torch.nn.functional.binary_cross_entropy_with_logits(logits.float(), target, pos_weight=w)

    return loss


def _standardised_mse(mean: list[float], std: list[float]) -> Loss:
    """MSE between the head's outputs and the standardised targets: every target weighs the same whatever
    its units, and the head starts near the right scale. Export folds mean and std into the head."""

    def loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        m, s = torch.tensor(mean, device=logits.device), torch.tensor(std, device=logits.device)
        target = (labels.float().reshape(len(labels), -1) - m) / s
        return torch.nn.functional.mse_loss(logits.float().reshape(target.shape), target)

    return loss


def sample_weights(space: LabelSpace, labels: list[Any]) -> list[float]:
    """data.sampler=balanced: each example's draw weight, so every class is drawn equally often
    (multi-label: an example weighs as its rarest label; examples with no label as one more class)."""
    if space.problem == REGRESSION:
        raise ConfigError("data.sampler=balanced draws classes equally; data.problem=regression has none. Remove it")
    if space.problem == SINGLE:
        counts = np.bincount(np.asarray(labels, dtype=np.int64), minlength=len(space.names))
        return [1.0 / counts[y] for y in labels]
    hot = np.asarray(labels) > 0.5
    counts = hot.sum(axis=0)
    empty = int((~hot.any(axis=1)).sum())
    out = []
    for row in hot:
        out.append(max(1.0 / counts[j] for j in np.flatnonzero(row)) if row.any() else 1.0 / empty)
    return out
