"""Self-training (Noisy Student; FixMatch's confidence threshold): the first epoch trains on the source alone;
at the start of each round the model labels data.target, and the examples it labels with confidence at least
`adapt.threshold` join training under a strong augmentation. Target labels are never read: the pseudo-labels
come from the model, and each round's are saved with their confidence in `pseudo_labels/round-N.csv`.

Example:
    >>> round_starts(epochs=5, rounds=2)
    [1, 3]
    >>> round_at(2, [1, 3])
    1
"""

from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Any

import torch
from torch import nn
from tqdm.auto import tqdm

from hftl.adapt.features import model_inputs
from hftl.utils.files import atomic_write_text

PSEUDO_LABELS_DIR = "pseudo_labels"


def round_starts(epochs: int, rounds: int | None) -> list[int]:
    """The (0-based) epochs at whose start the model relabels the target: spread over epochs 1 .. epochs-1."""
    span = epochs - 1
    count = min(rounds or span, span)
    return sorted({1 + (i * span) // count for i in range(count)})


def round_at(epoch: int, starts: list[int]) -> int | None:
    """The round (1-based) that epoch `epoch` trains in, or None before the first."""
    done = [s for s in starts if s <= epoch]
    return len(done) or None


def pseudo_label(model: nn.Module, batches: Any, device: torch.device) -> tuple[list[int], list[float]]:
    """The model's label and its softmax confidence for every target example, in order (eval mode, no gradient)."""
    was_training = model.training
    model.eval()
    labels, confidence = [], []
    try:
        with torch.no_grad():
            for batch in tqdm(batches, desc="pseudo-labels", leave=False):
                probs = model(**model_inputs(batch, device)).logits.float().softmax(dim=-1)
                top = probs.max(dim=-1)
                labels += top.indices.tolist()
                confidence += top.values.tolist()
    finally:
        model.train(was_training)
    return labels, confidence


def write_pseudo_labels(path: Path, labels: list[int], confidence: list[float], names: list[str], threshold: float) -> None:
    """`index,label,confidence,used` per target example (index: its row in data.target), written atomically."""
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(["index", "label", "confidence", "used"])
    for i, (label, conf) in enumerate(zip(labels, confidence)):
        writer.writerow([i, names[label], f"{conf:.6f}", int(conf >= threshold)])
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, out.getvalue())


def read_pseudo_labels(path: Path, names: list[str]) -> tuple[list[int], list[int]]:
    """What `write_pseudo_labels` wrote: the label id of every target example, and the indices used. A run reads
    its round's file back even right after writing it, so a resumed run uses exactly the same examples."""
    ids = {name: i for i, name in enumerate(names)}
    with path.open(newline="") as f:
        rows = list(csv.DictReader(f))
    return [ids[r["label"]] for r in rows], [int(r["index"]) for r in rows if r["used"] == "1"]
