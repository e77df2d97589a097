"""Where a run stands (`TrainState`, what a checkpoint carries besides tensors) and what it ended with (`TrainResult`).

Example:
    >>> state = TrainState(**json.loads((checkpoint / "trainer_state.json").read_text()))   # doctest: +SKIP
    >>> state.epoch, state.global_step                                                      # doctest: +SKIP
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass
class TrainState:
    """What a checkpoint must carry besides tensors to continue exactly where the run stopped."""

    epoch: int = 0
    batch_in_epoch: int = 0
    global_step: int = 0
    samples_seen: int = 0
    train_seconds: float = 0.0
    phase: str = ""
    best_metric: float | None = None
    best_epoch: int = -1
    best_metrics: dict[str, float] = field(default_factory=dict)
    epochs_without_improvement: int = 0
    history: list[dict[str, Any]] = field(default_factory=list)
    log_history: list[dict[str, float]] = field(default_factory=list)
    num_processes: int = 0  # processes that wrote the checkpoint; 0 in checkpoints from before it was stored
    nonfinite_skipped: int = 0  # optimizer steps dropped for a non-finite loss or gradient norm (on_nonfinite=skip)
    auto_rates: dict[str, float] = field(default_factory=dict)  # what train.*: auto resolved to ("head", "learning_rate")
    adapt: dict[str, Any] = field(default_factory=dict)  # adapt.method's record from the start (the shift before)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def improved(self, score: float, loss: float | None = None) -> bool:
        """Record an epoch's score (higher is better); True when it is the best so far. A tie goes to the
        lower validation `loss`: a WER stuck at 1.0 (or an accuracy at chance) while the loss falls is progress.

        Example:
            >>> TrainState(best_metric=-1.0, best_metrics={"loss": 5.0}).improved(-1.0, loss=4.0)
            True
            >>> TrainState(best_metric=-1.0, best_metrics={"loss": 5.0}).improved(-1.0, loss=5.5)
            False
        """
        if math.isnan(score) or (loss is not None and not math.isfinite(loss)):  # a diverged epoch is never the best
            self.epochs_without_improvement += 1
            return False
        best_loss = self.best_metrics.get("loss")
        tie_won = score == self.best_metric and loss is not None and best_loss is not None and loss < best_loss
        if self.best_metric is None or score > self.best_metric or tie_won:
            self.best_metric, self.best_epoch, self.epochs_without_improvement = score, self.epoch + 1, 0
            return True
        self.epochs_without_improvement += 1
        return False


@dataclass
class TrainResult:
    """What `fit` returns: the best epoch's metrics, the history, and what the run cost."""

    best_metrics: dict[str, float]
    best_epoch: int
    history: list[dict[str, Any]]
    global_step: int
    train_seconds: float
    samples_per_second: float
    peak_memory_mb: float
    test_metrics: dict[str, float] | None = None
    confusion_matrix: list[list[int]] | None = None
    stopped_early: bool = False
    log_history: list[dict[str, float]] = field(default_factory=list)
    feature_cache: dict[str, Any] | None = None
    per_class: dict[str, Any] | None = None  # per split: the evaluator's per-class (label, target) breakdown
    predictions: tuple[list, list] | None = None  # validation (predictions, references) of the final weights, for plots
    model_config: dict[str, Any] = field(default_factory=dict)  # what the exported config keeps (decision threshold)
    nonfinite_skipped: int = 0  # optimizer steps dropped under train.on_nonfinite=skip
    auto_rates: dict[str, float] = field(default_factory=dict)  # what train.*: auto resolved to (range test, or not)
    target_test_metrics: dict[str, float] | None = None  # data.target_test, the domain adaptation headline
    adapt: dict[str, Any] | None = None  # adapt.method, the shift before and after, what the method recorded
    # Per split, the evaluator's per-example table (eval_examples.json): what a study's paired bootstrap resamples.
    example_tables: dict[str, dict[str, Any]] = field(default_factory=dict)
