"""How training visits its examples: a stratified hold-out, and an epoch order that depends only on
(seed, epoch), so a killed run resumes into exactly the batches it would have seen.

Example:
    >>> train, val = stratified_split([0, 0, 1, 1], 0.5, seed=0)
    >>> sorted(train + val)
    [0, 1, 2, 3]
"""

from __future__ import annotations

from collections import defaultdict

import numpy as np
import torch


def stratified_split(labels: list[int], fraction: float, seed: int) -> tuple[list[int], list[int]]:
    """Indices (train, validation) holding out `fraction` of every class (at least one of classes with 2+)."""
    rng = np.random.default_rng(seed)
    by_class: dict[int, list[int]] = defaultdict(list)
    for i, label in enumerate(labels):
        by_class[label].append(i)
    train_idx, val_idx = [], []
    for label in sorted(by_class):
        idx = rng.permutation(by_class[label]).tolist()
        k = 0 if len(idx) < 2 else min(max(1, round(len(idx) * fraction)), len(idx) - 1)
        val_idx += idx[:k]
        train_idx += idx[k:]
    return sorted(train_idx), sorted(val_idx)


class EpochSampler(torch.utils.data.Sampler[int]):
    """Shuffles with a permutation that depends only on (seed, epoch): resumable without RNG state."""

    def __init__(
        self,
        size: int,
        seed: int,
        shuffle: bool = True,
        lengths: list[int] | None = None,
        batch_size: int = 1,
        weights: list[float] | None = None,
    ) -> None:
        self.size, self.seed, self.shuffle, self.epoch = size, seed, shuffle, 0
        self.lengths, self.batch_size = lengths, batch_size
        # data.sampler=balanced: an epoch draws `size` examples with replacement in proportion to these.
        self.weights = torch.as_tensor(weights, dtype=torch.float64) if weights is not None else None

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self):
        if not self.shuffle:
            return iter(range(self.size))
        generator = torch.Generator().manual_seed(self.seed * 100_003 + self.epoch)
        if self.weights is not None:
            order = torch.multinomial(self.weights, self.size, replacement=True, generator=generator).tolist()
        else:
            order = torch.randperm(self.size, generator=generator).tolist()
        if self.lengths is None:
            return iter(order)
        # Length grouping as transformers' LengthGroupedSampler: shuffled mega-batches of 50 batches,
        # each sorted longest first, so a batch pads to similar lengths and the first batch is the
        # longest (an out-of-memory error shows at once, not an hour in).
        mega = self.batch_size * 50
        groups = [sorted(order[i : i + mega], key=lambda j: -self.lengths[j]) for i in range(0, self.size, mega)]
        return iter([j for group in groups for j in group])

    def __len__(self) -> int:
        return self.size
