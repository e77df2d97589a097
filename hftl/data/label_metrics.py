"""Evaluators of the label shapes beyond single-label: multi-label (sigmoid scores, a decision threshold
chosen on validation) and regression (metrics in the data's own units).

Example:
    >>> ev = MultiLabelEvaluator(["even", "prime"], "auto")
    >>> ev.calibrate([[0.9, 0.2], [0.1, 0.7]], [[1, 0], [0, 1]])
    >>> ev.compute([[0.9, 0.2], [0.1, 0.7]], [[1, 0], [0, 1]])["f1"]
    1.0
"""

from __future__ import annotations

from typing import Any

import numpy as np
from sklearn.metrics import average_precision_score, f1_score, mean_absolute_error, precision_recall_fscore_support, r2_score

from hftl.data.metrics import Evaluator

THRESHOLDS = np.round(np.arange(0.05, 0.96, 0.05), 2)  # candidates for decision_threshold auto / per_label


class MultiLabelEvaluator(Evaluator):
    """Several labels per example: sigmoid scores, a label predicted where its score reaches the threshold.

    `mode` is train.decision_threshold: auto (one threshold for every label, the one with the best macro F1
    on validation), per_label (one per label, each its label's best F1) or a fixed number.
    """

    classification = False

    def __init__(self, names: list[str], mode: float | str | list[float] = "auto") -> None:
        super().__init__(names)
        self.mode = mode
        self.threshold: float | list[float] = mode if not isinstance(mode, str) else 0.5

    def predictions(self, logits: Any, batch: dict[str, Any], model: Any) -> Any:
        return logits.float().sigmoid()

    def example_losses(self, logits: Any, labels: Any) -> Any:
        import torch

        bce = torch.nn.functional.binary_cross_entropy_with_logits(logits.float(), labels.float(), reduction="none")
        return bce.mean(dim=-1)

    def _decide(self, scores: np.ndarray) -> np.ndarray:
        return scores >= np.asarray(self.threshold)

    def calibrate(self, predictions: list, references: list) -> None:
        if not isinstance(self.mode, str) or not len(predictions):
            return
        scores, truth = np.asarray(predictions), np.asarray(references) > 0.5
        if self.mode == "per_label":
            best = []
            for j in range(scores.shape[1]):
                f1s = [f1_score(truth[:, j], scores[:, j] >= t, zero_division=0) for t in THRESHOLDS]
                best.append(float(_best(THRESHOLDS, f1s)))
            self.threshold = best
        else:
            f1s = [f1_score(truth, scores >= t, average="macro", zero_division=0) for t in THRESHOLDS]
            self.threshold = float(_best(THRESHOLDS, f1s))

    def compute(self, predictions: list, references: list) -> dict[str, float]:
        scores = np.asarray(predictions).reshape(len(predictions), -1)
        truth = np.asarray(references).reshape(len(references), -1) > 0.5
        decided = self._decide(scores)
        p, r, f, _ = precision_recall_fscore_support(truth, decided, average="macro", zero_division=0)
        return {
            "f1": float(f),
            "micro_f1": float(f1_score(truth, decided, average="micro", zero_division=0)),
            "precision": float(p),
            "recall": float(r),
            "mean_average_precision": _mean_ap(truth, scores),
            "exact_match": float((decided == truth).all(axis=1).mean()) if len(truth) else 0.0,
        }

    def example_table(self, predictions: list, references: list) -> dict[str, Any]:
        """Per example and label: the decision (as `compute` decided it), the score (mean average precision
        ranks by it) and the truth, with the threshold(s) used."""
        scores = np.asarray(predictions).reshape(len(predictions), -1)
        truth = np.asarray(references).reshape(len(references), -1) > 0.5
        threshold = self.threshold if isinstance(self.threshold, list) else float(self.threshold)
        return {
            "kind": "multi_label",
            "threshold": threshold,
            "decided": self._decide(scores).astype(int).tolist(),
            "truth": truth.astype(int).tolist(),
            "scores": _short_scores(scores),
        }

    def details(self, predictions: list, references: list) -> dict[str, Any]:
        scores, truth = np.asarray(predictions), np.asarray(references) > 0.5
        p, r, f, n = precision_recall_fscore_support(truth, self._decide(scores), average=None, zero_division=0)
        thresholds = self.threshold if isinstance(self.threshold, list) else [self.threshold] * len(self.names)
        return {
            name: {
                "precision": float(p[j]),
                "recall": float(r[j]),
                "f1": float(f[j]),
                "support": int(n[j]),
                "average_precision": float(average_precision_score(truth[:, j], scores[:, j])) if truth[:, j].any() else None,
                "threshold": thresholds[j],
            }
            for j, name in enumerate(self.names)
        }

    def config_updates(self) -> dict[str, Any]:
        return {"decision_threshold": self.threshold}


def _best(candidates: np.ndarray, scores: list[float]) -> float:
    """The candidate with the best score; among ties the one nearest 0.5 (the untuned default)."""
    top = max(scores)
    tied = [c for c, s in zip(candidates, scores) if s >= top - 1e-12]
    return min(tied, key=lambda c: abs(c - 0.5))


def _short_scores(scores: np.ndarray) -> list[list[float]]:
    """Scores as JSON numbers, as short as their order allows: the decisions are kept beside them, so only
    the order and ties matter, and the shortest decimal of a float32 (sigmoids gathered from the model)
    keeps both at half the length of its exact float64 digits."""
    values = np.asarray(scores, dtype=np.float64)
    narrow = values.astype(np.float32)
    if not np.array_equal(narrow.astype(np.float64), values):
        return values.tolist()
    return [[float(str(x)) for x in row] for row in narrow]


def _mean_ap(truth: np.ndarray, scores: np.ndarray) -> float:
    """Mean over labels with a positive example of the average precision (area under the PR curve)."""
    aps = [average_precision_score(truth[:, j], scores[:, j]) for j in range(truth.shape[1]) if truth[:, j].any()]
    return float(np.mean(aps)) if aps else 0.0


class RegressionEvaluator(Evaluator):
    """Numeric targets: in training the head predicts standardised targets (z = (y - mean) / std, the MSE
    loss on them); references are in the data's units, and so are the metrics, each averaged over targets.
    An exported model predicts in the data's units: mean 0 and std 1 here."""

    classification = False

    def __init__(self, names: list[str], mean: list[float] | None, std: list[float] | None) -> None:
        super().__init__(names)
        self.mean = np.asarray(mean if mean is not None else [0.0] * len(names))
        self.std = np.asarray(std if std is not None else [1.0] * len(names))

    def predictions(self, logits: Any, batch: dict[str, Any], model: Any) -> Any:
        return logits.float().reshape(len(logits), -1)

    def example_losses(self, logits: Any, labels: Any) -> Any:
        import torch

        m = torch.tensor(self.mean, dtype=torch.float32, device=logits.device)
        s = torch.tensor(self.std, dtype=torch.float32, device=logits.device)
        target = (labels.float().reshape(len(labels), -1) - m) / s
        return torch.square(logits.float().reshape(target.shape) - target).mean(dim=-1)

    def _units(self, predictions: list, references: list) -> tuple[np.ndarray, np.ndarray]:
        width = len(self.names)
        pred = np.asarray(predictions, dtype=np.float64).reshape(-1, width) * self.std + self.mean
        return pred, np.asarray(references, dtype=np.float64).reshape(-1, width)

    def per_target(self, pred: np.ndarray, true: np.ndarray) -> list[dict[str, float]]:
        from scipy.stats import pearsonr, spearmanr

        out = []
        for j in range(pred.shape[1]):
            p, t = pred[:, j], true[:, j]
            constant = len(p) < 2 or np.ptp(p) == 0 or np.ptp(t) == 0  # correlation undefined: say 0
            out.append(
                {
                    "rmse": float(np.sqrt(np.mean((p - t) ** 2))) if len(p) else 0.0,
                    "mae": float(mean_absolute_error(t, p)) if len(p) else 0.0,
                    "r2": float(r2_score(t, p)) if len(p) > 1 else 0.0,
                    "pearson": 0.0 if constant else float(pearsonr(p, t)[0]),
                    "spearman": 0.0 if constant else float(spearmanr(p, t)[0]),
                }
            )
        return out

    def compute(self, predictions: list, references: list) -> dict[str, float]:
        rows = self.per_target(*self._units(predictions, references))
        return {key: float(np.mean([row[key] for row in rows])) for key in ("rmse", "mae", "r2", "pearson", "spearman")}

    def details(self, predictions: list, references: list) -> dict[str, Any]:
        pred, true = self._units(predictions, references)
        return {name: row for name, row in zip(self.names, self.per_target(pred, true))}

    def example_table(self, predictions: list, references: list) -> dict[str, Any]:
        """Per example: the prediction and the truth in the data's units, one value per target."""
        pred, true = self._units(predictions, references)
        return {"kind": "regression", "prediction": pred.tolist(), "truth": true.tolist()}

    def in_units(self, predictions: list, references: list) -> tuple[list[list[float]], list[list[float]]]:
        """Predictions and targets in the data's units (for the predicted-vs-true plot)."""
        pred, true = self._units(predictions, references)
        return pred.tolist(), true.tolist()


def evaluator_for(space: Any, threshold: float | str = "auto") -> Evaluator:
    """The evaluator of a classification label space (`labels.LabelSpace`): single-, multi-label or regression.

    Example:
        >>> evaluator_for(LabelSpace("multi_label", ["cat", "dog"])).classification   # doctest: +SKIP
        False
    """
    if space.problem == "multi_label":
        return MultiLabelEvaluator(space.names, threshold)
    if space.problem == "regression":
        return RegressionEvaluator(space.names, space.mean, space.std)
    return Evaluator(space.names)
