"""A diverging run stops (or skips the step), never exports NaN weights: `train.on_nonfinite`.

At every optimizer step the loss and the gradient norm (computed with the clipping, once the gradients
are synced, so every process decides alike) must be finite. `stop` raises `DivergedError` naming the
step and the likely fixes; the run folder keeps its last finite checkpoint and nothing is exported.
`skip` drops the step's update, as fp16's grad scaler does for an overflow, and counts it. Under fp16 a
non-finite gradient norm alone is the scaler's business (it skips and lowers the scale); a non-finite
loss is not.

Example:
    >>> finite_step(torch.tensor(0.3), torch.tensor(1.2), step=7, cfg=cfg, scaled=False)   # doctest: +SKIP
    True
"""

from __future__ import annotations

import math
from typing import Any

import torch

from hftl.utils.errors import DivergedError


def finite_step(loss: torch.Tensor, norm: torch.Tensor | float | None, step: int, cfg: Any, scaled: bool) -> bool:
    """Whether optimizer step `step` (1-based) may update the weights; raises DivergedError under `stop`.

    `norm` is the gradient norm (None where the engine clips on its own); `scaled`: a grad scaler guards
    the gradients (fp16), so only the loss counts. One host sync per step, for the decision.
    """
    values = {"loss": loss.detach().float()}
    if norm is not None and not scaled:
        values["gradient norm"] = torch.as_tensor(norm).detach().float()  # DeepSpeed's engine gives a float
    bad = {name: float(v) for name, v in values.items() if not bool(torch.isfinite(v).all())}
    if not bad:
        return True
    if cfg.train.on_nonfinite == "skip":
        return False
    raise DivergedError(diverged_message(step, bad, cfg))


def diverged_message(step: int, bad: dict[str, float], cfg: Any) -> str:
    """What went non-finite at which step, what was kept, and the fixes to try."""
    t = cfg.train
    what = ", ".join(f"the {name} is {value}" for name, value in bad.items())
    fixes = [f"a lower train.learning_rate (now {t.learning_rate:g})"]  # resolved: auto_rates sets it before training
    fixes.append(f"gradient clipping, train.max_grad_norm (now {t.max_grad_norm})" if not t.max_grad_norm else "")
    if t.mixed_precision == "fp16":
        fixes.append("train.mixed_precision=bf16 instead of fp16 (fp16 overflows where bf16 does not)")
    fixes.append("or train.on_nonfinite=skip to skip such steps")
    return (
        f"training diverged at optimizer step {step}: {what}. Stopped without exporting: the run folder keeps its "
        f"last finite checkpoint (resume=true continues from it with the same settings). Try " + "; ".join(f for f in fixes if f)
    )


def never_finite(history: list[dict[str, Any]], metric: str) -> str:
    """Why a run with no finite validation epoch (metric and loss; or whose exported last epoch is not) exports nothing."""
    shown = "; ".join(
        f"epoch {h['epoch']}: {metric} {_show(h.get(f'eval_{metric}'))}, loss {_show(h.get('eval_loss'))}" for h in history[:5]
    )
    return (
        f"no epoch to export had a finite validation {metric} and loss ({shown}): the model diverged, so nothing is "
        "exported. Try a lower train.learning_rate or train.max_grad_norm"
    )


def _show(value: Any) -> str:
    return "missing" if value is None else f"{value:.4g}" if isinstance(value, float) and math.isfinite(value) else str(value)
