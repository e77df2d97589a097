"""DANN (Ganin et al. 2016): a domain classifier on the head's input features, behind a gradient reversal
layer, so the backbone learns features the domain classifier cannot tell apart while the head learns the task.

The reversal is the identity forward and multiplies the gradient by -lambda backward; lambda rises from 0
as `2 / (1 + exp(-gamma * p)) - 1` with training progress p, which keeps the noisy early domain signal
from swamping the task.

Example:
    >>> round(dann_lambda(50, 100, weight=1.0, gamma=10.0), 4)
    0.9866
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

DISCRIMINATOR = "hftl_domain_classifier"  # attached to the model while it trains, removed before export


class GradientReversal(torch.autograd.Function):
    """Identity forward; backward multiplies the incoming gradient by -lambda."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, lambd: float) -> torch.Tensor:
        ctx.lambd = lambd
        return x.view_as(x)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        return -ctx.lambd * grad, None


def reverse_gradient(x: torch.Tensor, lambd: float) -> torch.Tensor:
    """`x` forward; `-lambd` times the gradient backward.

    Example:
        >>> x = torch.ones(2, requires_grad=True)
        >>> reverse_gradient(x, 0.5).sum().backward()
        >>> x.grad.tolist()
        [-0.5, -0.5]
    """
    return GradientReversal.apply(x, lambd)


def dann_lambda(step: int, total_steps: int, weight: float, gamma: float) -> float:
    """The reversal's weight at optimizer step `step` of `total_steps`: `weight * (2 / (1 + exp(-gamma p)) - 1)`."""
    p = min(max(step / max(total_steps, 1), 0.0), 1.0)
    return weight * (2.0 / (1.0 + math.exp(-gamma * p)) - 1.0)


def domain_classifier(width: int, hidden: int) -> nn.Module:
    """The paper's domain classifier: two hidden ReLU layers with dropout 0.5, one logit (target = 1)."""
    return nn.Sequential(
        nn.Linear(width, hidden), nn.ReLU(), nn.Dropout(0.5), nn.Linear(hidden, hidden), nn.ReLU(), nn.Dropout(0.5),
        nn.Linear(hidden, 1),
    )  # fmt: skip


def domain_loss(classifier: nn.Module, source: torch.Tensor, target: torch.Tensor, lambd: float) -> torch.Tensor:
    """Binary cross-entropy of the domain classifier on reversed source (0) and target (1) features."""
    features = reverse_gradient(torch.cat([source, target]).float(), lambd)
    logits = classifier(features).squeeze(-1)
    labels = torch.cat([torch.zeros(len(source)), torch.ones(len(target))]).to(logits.device)
    return nn.functional.binary_cross_entropy_with_logits(logits, labels)
