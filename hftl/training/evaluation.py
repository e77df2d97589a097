"""Evaluation over a loader on every process: loss and the task's metrics, gathered without duplicates.

Example:
    >>> metrics, preds, refs = evaluate_loop(accelerator, model, loader, evaluator)   # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from accelerate import Accelerator
from torch import nn
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from hftl.backends import backend_for
from hftl.data.metrics import IGNORE, Evaluator


def evaluate_loop(
    accelerator: Accelerator,
    model: nn.Module,
    loader: DataLoader,
    evaluator: Evaluator | None = None,
    desc: str = "eval",
    feed: Callable[[dict], None] | None = None,
    calibrate: bool = False,
) -> tuple[dict[str, float], list[Any], list[Any]]:
    """Loss and the task's metrics over `loader`, gathered across processes without duplicates.

    Sequence predictions (tags, CTC frames) are padded with IGNORE to a common length before the
    gather, since processes' batches differ in length; the evaluator strips the padding.
    `feed` hands a batch's cached features to the feature cache's stand-ins. `calibrate` (the validation
    split) first fits what the evaluator chooses on it, such as a multi-label decision threshold.
    """
    evaluator = evaluator or Evaluator()
    raw = backend_for(accelerator).unwrap(model)
    model.eval()
    preds, refs, losses, count = [], [], 0.0, 0
    with torch.no_grad():
        for batch in tqdm(loader, desc=desc, leave=False, disable=not accelerator.is_local_main_process):
            if feed is not None:
                feed(batch)
            # Labels stay out of the model unless its loss is the one reported: float labels (multi-label,
            # regression) would meet heads that only know class ids.
            out = model(**(batch if evaluator.model_loss else {k: v for k, v in batch.items() if k != "labels"}))
            p, r = evaluator.predictions(out.logits, batch, raw), batch["labels"]
            if p.dim() > 1:
                p = accelerator.pad_across_processes(p.contiguous(), dim=1, pad_index=IGNORE)
                r = accelerator.pad_across_processes(r.contiguous(), dim=1, pad_index=IGNORE)
            p, r = accelerator.gather_for_metrics((p, r))
            per_example = evaluator.example_losses(out.logits.detach(), batch["labels"])
            if per_example is None:  # sequence tasks: the batch mean, once per example
                per_example = out.loss.detach().float().repeat(len(batch["labels"]))
            loss = accelerator.gather_for_metrics(per_example)
            preds += p.tolist()
            refs += r.tolist()
            losses += loss.sum().item()
            count += loss.numel()
    if calibrate:
        evaluator.calibrate(preds, refs)
    metrics = evaluator.compute(preds, refs)
    metrics["loss"] = losses / max(count, 1)
    return metrics, preds, refs
