"""AdaBN (Li et al. 2016): BatchNorm statistics per domain. The head trains on features normalised with the
source's statistics, and the model predicts with the target's: only BatchNorm running statistics change.

Example:
    >>> batch_norms(model)                                            # doctest: +SKIP
    ['features.0.bn', ...]
    >>> reestimate(model, target_batches(), device)                   # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import Any

import torch
from torch import nn
from tqdm.auto import tqdm

from hftl.adapt.features import model_inputs

BATCH_NORM = nn.modules.batchnorm._BatchNorm  # BatchNorm1d/2d/3d, SyncBatchNorm and timm's subclasses


def batch_norms(model: nn.Module) -> list[str]:
    """Names of the model's BatchNorm layers that keep running statistics."""
    return [n for n, m in model.named_modules() if isinstance(m, BATCH_NORM) and m.track_running_stats]


def reestimate(model: nn.Module, batches: Iterable[dict[str, Any]], device: torch.device, desc: str = "AdaBN") -> int:
    """Replace every BatchNorm layer's running mean and variance with the exact mean and variance over
    `batches` (a cumulative average: momentum None), with the rest of the model in eval mode and no gradient.
    Returns the number of examples seen. Weights and every other buffer stay as they were."""
    layers = [m for m in model.modules() if isinstance(m, BATCH_NORM) and m.track_running_stats]
    was_training = {m: m.training for m in model.modules()}
    momenta = [m.momentum for m in layers]
    seen = 0
    model.eval()
    for m in layers:
        m.reset_running_stats()
        m.momentum = None  # a cumulative moving average: every batch counts the same
        m.train()
    try:
        with torch.no_grad():
            for batch in tqdm(batches, desc=desc, leave=False):
                model(**model_inputs(batch, device))
                seen += len(batch["labels"])
    finally:
        for m, momentum in zip(layers, momenta):
            m.momentum = momentum
        for m, training in was_training.items():
            m.train(training)
    return seen


@contextmanager
def running_statistics_kept(model: nn.Module) -> Iterator[None]:
    """Within it, training-mode forwards still normalise with their batch's statistics but leave the running
    statistics (and their batch count) as they are: self-training's strongly augmented target views must not become the
    statistics the model predicts with.

    Example:
        >>> with running_statistics_kept(model):   # doctest: +SKIP
        ...     loss = model(**strong_batch).loss
    """
    layers = [m for m in model.modules() if isinstance(m, BATCH_NORM) and m.track_running_stats]
    for m in layers:  # in training mode a layer that tracks nothing normalises by the batch and updates no buffer
        m.track_running_stats = False
    try:
        yield
    finally:
        for m in layers:
            m.track_running_stats = True
