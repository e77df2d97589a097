"""Target-domain batches by training step: a pure function of (seed, epoch, batch), so a resumed run draws
the batches an uninterrupted one would, whatever the source loader did.

Example:
    >>> stream = TargetStream(data.target, data.collate, batch_size=32, seed=42)   # doctest: +SKIP
    >>> batch = stream.batch(epoch=0, index=5, device=accelerator.device)          # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch


class TargetStream:
    """Batches of `dataset` (or of the examples in `pool`), drawn without replacement in a seeded order per
    epoch and cycle; process `rank` of `world` takes every world-th batch."""

    def __init__(
        self, dataset: Any, collate: Callable[[list[dict]], dict], batch_size: int, seed: int, rank: int = 0, world: int = 1
    ) -> None:
        self.dataset, self.collate, self.batch_size, self.seed = dataset, collate, batch_size, seed
        self.rank, self.world = rank, world
        self.pool: Sequence[int] = range(len(dataset))
        self._perms: dict[tuple[int, int], list[int]] = {}  # (epoch, cycle) -> order; the latest few

    def _order(self, epoch: int, cycle: int) -> list[int]:
        key = (epoch, cycle)
        if key not in self._perms:
            if len(self._perms) > 4:
                self._perms.clear()
            generator = torch.Generator().manual_seed((self.seed * 1_000_003 + epoch) * 1_009 + cycle)
            self._perms[key] = torch.randperm(len(self.pool), generator=generator).tolist()
        return self._perms[key]

    def set_pool(self, pool: Sequence[int]) -> None:
        """Draw from these examples only (self-training: the confidently pseudo-labelled ones)."""
        self.pool, self._perms = list(pool), {}

    def indices(self, epoch: int, index: int) -> list[int]:
        """The examples of batch `index` of `epoch`: positions in a permutation of the pool, cycling as needed."""
        n = len(self.pool)
        size = min(self.batch_size, n)
        start = (index * self.world + self.rank) * size
        picked = []
        for position in range(start, start + size):
            cycle, offset = divmod(position, n)
            picked.append(self.pool[self._order(epoch, cycle)[offset]])
        return picked

    def batch(self, epoch: int, index: int, device: torch.device) -> dict[str, Any]:
        """Batch `index` of `epoch`, collated and moved to `device`."""
        self.dataset.set_epoch(epoch)
        items = self.dataset.__getitems__(self.indices(epoch, index))
        batch = self.collate(items)
        return {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}
