"""Evaluation metrics as `evaluate` modules that work offline.

`evaluate.load("accuracy")` fetches its script from the Hub at run time, which fails offline, so hftl
defines its metrics as `evaluate.Metric` subclasses (the same module API: `add_batch`, `compute`,
distributed-safe) computed with scikit-learn, as the Hub's accuracy/precision/recall/f1 scripts are.

Example:
    >>> ClassificationMetrics(keep_in_memory=True).compute(predictions=[0, 1, 1], references=[0, 1, 0])["accuracy"]
    0.6666666666666666
"""

from __future__ import annotations

import datasets
import evaluate
from sklearn.metrics import accuracy_score, confusion_matrix, precision_recall_fscore_support


class ClassificationMetrics(evaluate.Metric):
    """Accuracy and macro-averaged precision, recall and F1 of single-label classification."""

    def _info(self) -> evaluate.MetricInfo:
        return evaluate.MetricInfo(
            description="Accuracy and macro precision / recall / F1 (scikit-learn).",
            citation="",
            inputs_description="predictions and references: class ids (int).",
            features=datasets.Features({"predictions": datasets.Value("int64"), "references": datasets.Value("int64")}),
        )

    def _compute(self, predictions: list[int], references: list[int]) -> dict[str, float]:
        precision, recall, f1, _ = precision_recall_fscore_support(references, predictions, average="macro", zero_division=0)
        return {
            "accuracy": float(accuracy_score(references, predictions)),
            "precision": float(precision),
            "recall": float(recall),
            "f1": float(f1),
        }


def classification_metrics(predictions: list[int], references: list[int]) -> dict[str, float]:
    """Accuracy, precision, recall and F1 (macro) of class-id lists."""
    return ClassificationMetrics(keep_in_memory=True).compute(predictions=predictions, references=references)


def confusion(predictions: list[int], references: list[int], num_labels: int) -> list[list[int]]:
    """Confusion matrix (rows: true label, columns: predicted) as nested lists for JSON."""
    return confusion_matrix(references, predictions, labels=list(range(num_labels))).tolist()
