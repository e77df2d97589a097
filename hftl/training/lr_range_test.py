"""A learning-rate range test (Smith 2017; fastai's `lr_find`): train briefly at exponentially rising rates,
watch the loss, pick a rate before it blows up.

`train.head_learning_rate: auto` (the default) runs it for the new head alone, on the frozen pretrained
features (the feature cache's, where the run caches them: seconds), before the first epoch. A new linear
head wants a far higher rate than the backbone: on a 4-topic text set with MiniLM, head_only at the
backbone's 1e-3 reached 0.47 test accuracy in 3 epochs, at 1e-2 0.80. `train.learning_rate: auto` runs it for
everything the run trains (`auto_rates.py`). The parameters, the optimizer and the random state are exactly as
before the test afterwards; only the chosen rate stays.

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
import statistics
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
NOISE_SIGMAS = 3.0  # nor one whose fall is within three of its noise (the smoothed spread of the calm start)


@dataclass
class RangeTest:
    """The swept rates, the smoothed losses, the chosen rate and what the test cost."""

    rates: list[float] = field(default_factory=list)
    losses: list[float] = field(default_factory=list)  # smoothed
    raw: list[float] = field(default_factory=list)  # each step's own loss
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
    groups: list[dict[str, Any]],
    batches: Callable[[], Iterator[Any]],
    steps: int,
    reduce: Callable[[torch.Tensor], torch.Tensor] = lambda t: t,
    keep: list[torch.Tensor] | tuple = (),
) -> RangeTest:
    """Sweep `steps` rates from START to END with AdamW over `groups` (parameter groups: `params`, `weight_decay`,
    and `scale`, the group's share of the swept rate, or `fixed`, a rate of its own), each step one batch of
    `batches()` (restarted when spent) scored by `loss_of`; `reduce` averages a loss over processes so all of them
    choose alike. Everything the sweep changed (the parameters, the tensors in `keep` such as BatchNorm
    statistics, the random state) is put back.

    Example:
        >>> w = nn.Parameter(torch.zeros(1))
        >>> found = range_test(lambda x: ((w - x) ** 2).sum(), [{"params": [w]}], lambda: iter([torch.ones(1)] * 10), 40)
        >>> 1e-3 <= found.chosen <= 1e-1, float(w)   # a rate found, and the weight as it was
        (True, 0.0)
    """
    beta = min(SMOOTHING, 1 - 2 / steps)  # a window of a fiftieth of the sweep (fastai's 0.98 at 100 steps)
    groups = [{"weight_decay": 0.0, "scale": 1.0, **g, "params": list(g["params"])} for g in groups]
    touched = [p for g in groups for p in g["params"]] + list(keep)
    saved = [t.detach().clone() for t in touched]
    optimizer = torch.optim.AdamW(groups, lr=START)
    result, average, best = RangeTest(), 0.0, math.inf
    started, source = time.perf_counter(), batches()
    devices = [torch.cuda.current_device()] if torch.cuda.is_available() else []
    try:
        with torch.random.fork_rng(devices=devices):
            for step in range(steps):
                rate = START * (END / START) ** (step / max(steps - 1, 1))
                for group in optimizer.param_groups:
                    group["lr"] = group["fixed"] if group.get("fixed") is not None else rate * group["scale"]
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
                result.raw.append(value)
                best = min(best, smoothed)
                if step > 2 and smoothed > DIVERGED * best:
                    break
    finally:
        with torch.no_grad():
            for tensor, value in zip(touched, saved):
                tensor.copy_(value)
        for param in touched:
            param.grad = None
    result.seconds = time.perf_counter() - started
    result.chosen = choose(result.rates, result.losses, result.raw, beta)
    return result


def choose(rates: list[float], losses: list[float], raw: list[float] | None = None, beta: float = 0.0) -> float | None:
    """A tenth of the rate at the lowest smoothed loss after the calm start, rounded to 1, 2 or 5 of its decade (so
    tiny float differences between two equivalent runs, cached or not, cannot pick different rates); None for a
    flat curve (labels the features cannot explain): that loss not MIN_DROP below the reference, or not clear of
    the batches' noise.

    The calm start is the sweep's first decade (at least its first tenth): rates that barely move anything, so
    its `raw` per-step losses give the reference (their mean) and the noise (their spread, as the smoothing with
    `beta` leaves it; three of it). A small data set's batches differ a lot: on 90 images in 30 steps, one
    curve's first steps swung between 0.75 and 0.85, its minimum dipped 9% below them by chance, and the head
    got 5e-6 and learnt nothing.

    Example:
        >>> rates = [10 ** (k / 4 - 6) for k in range(20)]
        >>> choose(rates, [2.0] * 12 + [1.5, 1.0, 0.6, 0.55, 0.5, 1.5, 3.0, 5.0])   # lowest at 1e-2
        0.001
        >>> choose(rates, [2.0, 1.7] + [1.99] * 18) is None   # a dip at the calm start is noise: flat
        True
        >>> noisy = [2.0, 1.6, 2.4, 1.7, 2.3] + [2.0] * 15
        >>> choose(rates, [2.0] * 12 + [1.8] * 8, noisy, beta=0.9) is None   # 10% down, but within the noise
        True
    """
    if len(rates) < 10:
        return None
    calm = max(len(rates) // 10 + 1, sum(r <= START * 10 for r in rates))
    calm_losses = (raw or losses)[:calm]
    start = sum(calm_losses) / len(calm_losses)
    spread = statistics.pstdev(calm_losses) * math.sqrt((1 - beta) / (1 + beta)) if raw else 0.0
    best = min(range(calm, len(losses)), key=losses.__getitem__, default=None)
    if best is None or losses[best] > start - max(MIN_DROP * start, NOISE_SIGMAS * spread):
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
    ax.set(xlabel="learning rate", ylabel="training loss (smoothed)", title=f"Learning-rate range test: {what}")
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
