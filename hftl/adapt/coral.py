"""Deep CORAL (Sun & Saenko 2016): the distance between the source and target features' covariances, added
to the task loss so the backbone learns features whose second-order statistics agree across domains.

Example:
    >>> coral_loss(torch.randn(32, 8), torch.randn(32, 8)).item() >= 0
    True
"""

from __future__ import annotations

import torch


def covariance(x: torch.Tensor) -> torch.Tensor:
    """The (width x width) covariance of a batch of features (unbiased)."""
    x = x.float()
    centred = x - x.mean(dim=0, keepdim=True)
    return centred.T @ centred / max(len(x) - 1, 1)


def coral_loss(source: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """`||C_s - C_t||_F^2 / (4 d^2)`, the paper's loss, for (batch, d) source and target features.

    Example:
        >>> x = torch.randn(64, 4)
        >>> float(coral_loss(x, x))
        0.0
    """
    d = source.shape[1]
    return (covariance(source) - covariance(target)).pow(2).sum() / (4 * d * d)
