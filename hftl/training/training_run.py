"""`TrainingRun`: everything the trainer's set-up prepared for the loop, and the two things every part of the loop
(the epochs, the range tests before them) does with it: score a batch, and switch the feature cache to a phase.

Example:
    >>> run = trainer._setup(cfg, model, layer_map, plan, data, run_dir, accelerator)   # doctest: +SKIP
    >>> run.loss(run.raw, batch)                                                      # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from accelerate import Accelerator
from torch import nn
from torch.utils.data import DataLoader

from hftl.backends import Backend
from hftl.config import Config
from hftl.data.sources import TrainData
from hftl.models.layer_map import LayerMap
from hftl.models.strategies import Phase, Plan
from hftl.training.checkpointer import Checkpointer
from hftl.training.feature_cache import FeatureCache
from hftl.training.preemption import StopSignals

EpochHook = Callable[[int, dict[str, float]], None]  # (epoch, its validation metrics), after the epoch's checkpoint


@dataclass
class TrainingRun:
    """Everything `trainer._setup` prepared for the loop."""

    cfg: Config  # with any `auto` learning rate resolved, once it is (the run folder's config.yaml keeps `auto`)
    accelerator: Accelerator
    backend: Backend
    model: nn.Module  # as prepared (DDP- or engine-wrapped)
    raw: nn.Module  # the task model inside
    layer_map: LayerMap
    plan: Plan
    data: TrainData
    cache: FeatureCache
    train_loader: DataLoader
    eval_loaders: list[DataLoader]
    workers: int
    optimizer: Any
    scheduler: Any
    checkpoints: Checkpointer
    steps_per_epoch: int
    total_steps: int
    stop: StopSignals | None = None  # SIGTERM / SIGINT while training: checkpoint at the next step, then exit
    # Validation (predictions, references) of the best and the last epoch, by epoch: the end of the run reuses
    # them for the weights it ends on instead of a second validation pass (a whole pass per run and strategy).
    kept: dict[int, tuple[list, list]] = field(default_factory=dict)
    cached_phase: str | None = None  # the phase the feature cache was last activated for
    on_epoch: EpochHook | None = None
    adaptation: Any = None  # an adapt.methods.Adaptation when adapt.method is set or data.target given
    target_test_loader: DataLoader | None = None  # data.target_test, evaluated once at the end

    def step_loss(self, model: nn.Module, batch: dict[str, Any], state: Any) -> torch.Tensor:
        """A training step's loss: the task's, plus what adapt.method adds on a target batch."""
        if self.adaptation is None:
            return self.loss(model, batch)
        return self.adaptation.loss(self, model, batch, state)

    def loss(self, model: nn.Module, batch: dict[str, Any]) -> torch.Tensor:
        """The model's own loss, or the task's (class weights, label smoothing, multi-label, regression) on its logits."""
        if self.data.loss is None:
            return model(**batch).loss
        logits = model(**{k: v for k, v in batch.items() if k != "labels"}).logits
        return self.data.loss(logits, batch["labels"])

    def activate_cache(self, phase: Phase) -> None:
        """Fill or reuse the cache of what `phase` keeps frozen; loaders over cached data drop their workers."""
        self.cache.activate(phase)
        self.cached_phase = phase.name
        data = self.data
        for dl, ds in ((self.train_loader, data.train), *zip(self.eval_loaders, (data.validation, data.test))):
            dl.num_workers = 0 if ds.cached is not None else self.workers  # workers only cost time on cached reads
