"""Honest baselines for a study: what a run scores by guessing, so "points over scratch" cannot flatter.

On hidden Fashion-MNIST the shipped Lite0 config's `scratch` ended at exactly 0.100 accuracy after 2 epochs:
it predicted one class for everything. A study that reports pretraining's gain over that is comparing
against a guess. `left_chance` reads a finished run's metrics.json and says whether it did better than
the constant guess of its label shape, by more than `MARGIN`:

- single-label classification: the majority class of the validation set, every metric scored exactly as
  the run's (from the confusion matrix's true counts); a run predicting one class for all is a guess too;
- regression: the training mean (r2 0, pearson and spearman 0);
- token classification: no entity (F1 0); speech recognition: nothing right (WER and CER 1.0).

Example:
    >>> chance_level({"confusion_matrix": [[5, 0], [5, 0]], "validation": {"accuracy": 0.5}}, "accuracy")
    0.5
"""

from __future__ import annotations

from typing import Any

from hftl.config import LOWER_IS_BETTER

MARGIN = 0.01  # a run within one point of the guess never left chance
_FIXED = {"r2": 0.0, "pearson": 0.0, "spearman": 0.0, "wer": 1.0, "cer": 1.0}


def chance_level(metrics: dict[str, Any], metric: str) -> float | None:
    """`metric` of the constant guess on the run's validation set; None where no guess is defined (loss, rmse).

    Example:
        >>> chance_level({"validation": {"r2": 0.3}}, "r2")
        0.0
    """
    matrix = metrics.get("confusion_matrix")
    if matrix and metric in ("accuracy", "f1", "precision", "recall"):
        from hftl.data.metrics import classification_metrics

        counts = [sum(row) for row in matrix]
        majority = max(range(len(counts)), key=counts.__getitem__)
        refs = [label for label, n in enumerate(counts) for _ in range(n)]
        return classification_metrics([majority] * len(refs), refs)[metric]
    if metrics.get("task") == "token-classification" and metric in ("f1", "precision", "recall"):
        return 0.0
    return _FIXED.get(metric)


def one_class_only(metrics: dict[str, Any]) -> bool:
    """Whether the best epoch predicted the same class for every validation example.

    Example:
        >>> one_class_only({"confusion_matrix": [[3, 0], [4, 0]]})
        True
    """
    matrix = metrics.get("confusion_matrix")
    if not matrix or len(matrix) < 2:
        return False
    used = [j for j in range(len(matrix[0])) if any(row[j] for row in matrix)]
    return len(used) == 1


def left_chance(metrics: dict[str, Any], metric: str) -> str | None:
    """None when the run beat the guess; else why not, in words for the report.

    Example:
        >>> left_chance({"confusion_matrix": [[5, 0], [5, 0]], "validation": {"accuracy": 0.5}}, "accuracy")
        'predicted one class for every validation example (accuracy 0.5000, the majority-class guess scores 0.5000)'
    """
    score = (metrics.get("validation") or {}).get(metric)
    guess = chance_level(metrics, metric)
    if score is None or guess is None:
        return None
    margin = (guess - score) if metric in LOWER_IS_BETTER else (score - guess)
    what = "the majority-class guess" if metrics.get("confusion_matrix") else "a constant guess"
    scores = f"{metric} {score:.4f}, {what} scores {guess:.4f}"
    if one_class_only(metrics):
        return f"predicted one class for every validation example ({scores})"
    if margin <= MARGIN + 1e-9:  # 1.0 - 0.99 is 0.0100000000000000009
        return f"never left chance ({scores})"
    return None
