"""The optimizer's parameter groups and the learning-rate schedule, both read off the layer map and the plan.

Parameter groups are built once, with every parameter any phase trains in the optimizer from the
start; a phase change only toggles requires_grad, so a resumed run restores the same optimizer.

Example:
    >>> groups = param_groups(model, layer_map, plan, cfg.train)             # doctest: +SKIP
    >>> schedule = lr_lambda(plan, steps_per_epoch=10, total_steps=30, train=cfg.train)  # doctest: +SKIP
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import nn

from hftl.config import TrainConfig
from hftl.models.layer_map import LayerMap
from hftl.models.strategies import Plan


def _no_decay(name: str, param: torch.Tensor) -> bool:
    # Weight decay only on weight matrices and kernels: not biases, norms or learned embeddings tokens.
    return param.ndim < 2 or any(k in name for k in ("cls_token", "mask_token", "position_embeddings", "masked_spec_embed"))


def layer_learning_rates(layer_map: LayerMap, train: TrainConfig) -> dict[str, float]:
    """Learning rate per part: the top block and neck at `learning_rate`, each lower block one more
    `layer_lr_decay` factor, embeddings below the lowest block, the head at `head_learning_rate`."""
    n = len(layer_map.blocks)
    lrs = {f"block.{i}": train.learning_rate * train.layer_lr_decay ** (n - 1 - i) for i in range(n)}
    lrs["embeddings"] = train.learning_rate * train.layer_lr_decay**n
    lrs["neck"] = train.learning_rate
    head = train.head_learning_rate
    lrs["head"] = head if isinstance(head, float) else train.learning_rate  # auto: until the range test sets it
    return lrs


def param_groups(model: nn.Module, layer_map: LayerMap, plan: Plan, train: TrainConfig) -> list[dict]:
    """AdamW parameter groups, built once: every parameter any phase trains is in from the start.

    A phase change only toggles requires_grad, so the optimizer (and a resumed run's optimizer state)
    stays the same object for the whole run. Each group carries `part` for inspection.
    """
    lrs = layer_learning_rates(layer_map, train)
    groups: dict[tuple[str, bool], dict] = {}
    trainable = plan.trainable_any
    for name, param in model.named_parameters():
        if name not in trainable:
            continue
        part = layer_map.part_of(name)
        no_decay = _no_decay(name, param)
        group = groups.setdefault(
            (part, no_decay),
            {"params": [], "part": part, "lr": lrs[part], "weight_decay": 0.0 if no_decay else train.weight_decay},
        )
        group["params"].append(param)
    order = {part: i for i, part in enumerate(layer_map.parts)}
    return [groups[k] for k in sorted(groups, key=lambda k: (order[k[0]], k[1]))]


def lr_lambda(plan: Plan, steps_per_epoch: int, total_steps: int, train: TrainConfig) -> Callable[[int], float]:
    """Schedule multiplier per optimizer step; each phase gets its own warm-up and decay.

    A pure function of the step, so a resumed scheduler needs nothing but its step count.
    """
    bounds = []
    for phase in plan.phases:
        start = min(phase.start_epoch * steps_per_epoch, total_steps)
        end = min(phase.end_epoch * steps_per_epoch, total_steps)
        bounds.append((start, end))

    def factor(step: int) -> float:
        for start, end in bounds:
            if step < end or (start, end) == bounds[-1]:
                length = max(end - start, 1)
                local = min(max(step - start, 0), length)
                warmup = int(train.warmup_ratio * length)
                if warmup and local < warmup:
                    return (local + 1) / (warmup + 1)
                progress = (local - warmup) / max(length - warmup, 1)
                if train.scheduler == "linear":
                    return max(0.0, 1.0 - progress)
                if train.scheduler == "cosine":
                    return 0.5 * (1.0 + math.cos(math.pi * progress))
                return 1.0
        return 1.0

    return factor
