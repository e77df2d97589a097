"""A learning-rate range test (Smith 2017; fastai's `lr_find`): train briefly at exponentially rising rates,
watch the loss, pick a rate before it blows up.

`train.head_learning_rate: auto` (the default) runs it for the new head alone, on the frozen pretrained
features (the feature cache's, where the run caches them: seconds), before the first epoch. A new linear
head wants a far higher rate than the backbone: on a 4-topic text set with MiniLM, head_only at the
backbone's 1e-3 reached 0.47 test accuracy in 3 epochs, at 1e-2 0.80. The parameters, the optimizer and
the random state are exactly as before the test afterwards; only the chosen rate stays.

The choice is fastai's classic one: a tenth of the rate where the smoothed loss was lowest (the loss
still falls steeply there, and the lowest point itself is already close to divergence).

Example:
    >>> found = range_test(lambda batch: loss_of(batch), head_params, batches, steps=60)  # doctest: +SKIP
    >>> found.chosen                                                                       # doctest: +SKIP
    0.0031622776601683794
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

START, END = 1e-6, 1.0  # the rates swept (a head's useful rate lies between)
SMOOTHING = 0.98  # exponential moving average of the loss over 100 steps, bias-corrected (as fastai); less over fewer
DIVERGED = 4.0  # stop once the smoothed loss is this many times its minimum
MIN_DROP = 0.05  # a curve whose loss never fell by 5% names no rate


@dataclass
class RangeTest:
    """The swept rates, the smoothed losses, the chosen rate and what the test cost."""

    rates: list[float] = field(default_factory=list)
    losses: list[float] = field(default_factory=list)
    chosen: float | None = None  # None: the loss never fell clearly, so no rate stands out
    seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return {"chosen": self.chosen, "seconds": self.seconds, "steps": len(self.rates)}


def steps_for(batches_per_epoch: int) -> int:
    """Sweep steps: fastai's 100, no more than four passes over a small data set (at least 30). It depends on the
    data alone, not on whether the features are cached, so a cached and an uncached run choose alike.

    Example:
        >>> steps_for(6), steps_for(500)
        (30, 100)
    """
    return max(30, min(100, 4 * batches_per_epoch))


def range_test(
    loss_of: Callable[[Any], torch.Tensor],
    params: list[nn.Parameter],
    batches: Callable[[], Iterator[Any]],
    steps: int,
    reduce: Callable[[torch.Tensor], torch.Tensor] = lambda t: t,
    weight_decay: float = 0.0,
) -> RangeTest:
    """Sweep `steps` rates from START to END on `params` (AdamW), each step one batch of `batches()` (restarted
    when spent) scored by `loss_of`; `reduce` averages a loss over processes so all of them choose alike.
    Everything the sweep changed (the parameters, the random state) is put back."""
    beta = min(SMOOTHING, 1 - 2 / steps)  # a window of a fiftieth of the sweep (fastai's 0.98 at 100 steps)
    saved = [p.detach().clone() for p in params]
    optimizer = torch.optim.AdamW(params, lr=START, weight_decay=weight_decay)
    result, average, best = RangeTest(), 0.0, math.inf
    started, source = time.perf_counter(), batches()
    devices = [torch.cuda.current_device()] if torch.cuda.is_available() else []
    try:
        with torch.random.fork_rng(devices=devices):
            for step in range(steps):
                rate = START * (END / START) ** (step / max(steps - 1, 1))
                for group in optimizer.param_groups:
                    group["lr"] = rate
                batch = next(source, None)
                if batch is None:
                    source = batches()
                    batch = next(source)
                loss = loss_of(batch)
                loss.backward()
                optimizer.step()
                optimizer.zero_grad(set_to_none=True)
                value = float(reduce(loss.detach().float()))
                if not math.isfinite(value):
                    break
                average = beta * average + (1 - beta) * value
                smoothed = average / (1 - beta ** (step + 1))
                result.rates.append(rate)
                result.losses.append(smoothed)
                best = min(best, smoothed)
                if step > 2 and smoothed > DIVERGED * best:
                    break
    finally:
        with torch.no_grad():
            for param, value in zip(params, saved):
                param.copy_(value)
    result.seconds = time.perf_counter() - started
    result.chosen = choose(result.rates, result.losses)
    return result


def choose(rates: list[float], losses: list[float]) -> float | None:
    """A tenth of the rate at the lowest smoothed loss after the first tenth of the sweep, rounded to 1, 2 or 5
    of its decade (so tiny float differences between two equivalent runs, cached or not, cannot pick different
    rates); None when that loss is not MIN_DROP below the first tenth's mean (a flat curve: labels the frozen
    features cannot explain).

    Example:
        >>> rates = [10 ** (k / 4 - 6) for k in range(20)]
        >>> choose(rates, [2.0] * 12 + [1.5, 1.0, 0.6, 0.55, 0.5, 1.5, 3.0, 5.0])   # lowest at 1e-2
        0.001
        >>> choose(rates, [2.0, 1.7] + [1.99] * 18) is None   # a dip in the first tenth is noise: flat
        True
    """
    skip = len(losses) // 10  # the first tenth sets the reference: single batches there are noise, not learning
    if len(rates) < 10:
        return None
    start = sum(losses[: skip + 1]) / (skip + 1)
    best = min(range(skip, len(losses)), key=losses.__getitem__)
    if losses[best] > (1 - MIN_DROP) * start:
        return None
    lowest = rates[best] / 10
    decade = 10 ** math.floor(math.log10(lowest))
    return min((decade * m for m in (1, 2, 5, 10)), key=lambda r: abs(math.log(r / lowest)))


def plot(test: RangeTest, path: Path, what: str) -> Path:
    """Loss against rate (log scale), the chosen rate marked."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path.parent.mkdir(parents=True, exist_ok=True)
    fig, ax = plt.subplots(figsize=(6.5, 4.2))
    ax.plot(test.rates, test.losses)
    if test.chosen is not None:
        ax.axvline(test.chosen, color="tab:red", linestyle="--", label=f"chosen {test.chosen:.1e}")
    ax.set_xscale("log")
    ax.set(xlabel=f"{what} learning rate", ylabel="training loss (smoothed)", title=f"Learning-rate range test: {what}")
    ax.grid(alpha=0.3)
    if test.chosen is not None:
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


@contextlib.contextmanager
def only_trainable(model: nn.Module, names: set[str]) -> Iterator[None]:
    """`names` alone require grad inside the block; the previous flags come back after."""
    before = {n: p.requires_grad for n, p in model.named_parameters()}
    for name, param in model.named_parameters():
        param.requires_grad_(name in names)
    try:
        yield
    finally:
        for name, param in model.named_parameters():
            param.requires_grad_(before[name])
