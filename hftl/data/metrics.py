"""Evaluation metrics as `evaluate` modules that work offline.

`evaluate.load("accuracy")` fetches its script from the Hub at run time, which fails offline, so hftl
defines its metrics as `evaluate.Metric` subclasses (the same module API: `add_batch`, `compute`,
distributed-safe) computed with scikit-learn, as the Hub's accuracy/precision/recall/f1 scripts are.

Example:
    >>> ClassificationMetrics(keep_in_memory=True).compute(predictions=[0, 1, 1], references=[0, 1, 0])["accuracy"]
    0.6666666666666666
"""

from __future__ import annotations

from typing import Any

import datasets
import evaluate
import numpy as np
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


IGNORE = -100  # label id of positions that are not scored (padding, special tokens, later sub-words)


class SeqevalMetrics(evaluate.Metric):
    """Entity-level precision / recall / F1 (micro, seqeval) and token accuracy of tag sequences."""

    def _info(self) -> evaluate.MetricInfo:
        return evaluate.MetricInfo(
            description="Entity precision / recall / F1 computed by seqeval, as the Hub's seqeval metric, plus token accuracy.",
            citation="",
            inputs_description="predictions and references: lists of tag strings per sentence (IOB tags).",
            features=datasets.Features(
                {
                    "predictions": datasets.Sequence(datasets.Value("string")),
                    "references": datasets.Sequence(datasets.Value("string")),
                }
            ),
        )

    def _compute(self, predictions: list[list[str]], references: list[list[str]]) -> dict[str, float]:
        from seqeval.metrics import f1_score, precision_score, recall_score

        tokens = sum(len(r) for r in references)
        correct = sum(p == r for ps, rs in zip(predictions, references) for p, r in zip(ps, rs))
        return {
            "precision": float(precision_score(references, predictions, zero_division=0)),
            "recall": float(recall_score(references, predictions, zero_division=0)),
            "f1": float(f1_score(references, predictions, zero_division=0)),
            "accuracy": correct / max(tokens, 1),
        }


def iob_tags(label_names: list[str]) -> list[str]:
    """Tag names seqeval can parse: IOB names as they are; plain names (`PER`) become `I-PER` (IO scheme).

    Example:
        >>> iob_tags(["O", "PER", "LOC"])
        ['O', 'I-PER', 'I-LOC']
    """
    prefixed = all(name == "O" or (len(name) > 2 and name[1] == "-" and name[0] in "BIESLU") for name in label_names)
    return list(label_names) if prefixed else [name if name == "O" else f"I-{name}" for name in label_names]


class Evaluator:
    """How one task turns logits into predictions and predictions into metrics (single-label classification here).

    `predictions` runs per batch on the device; `compute` once on the gathered lists. Sequence tasks
    return rows padded with IGNORE, which `compute` strips. `calibrate` fits what is chosen on the
    validation split (a decision threshold), `details` gives the per-class breakdown, and
    `config_updates` what the exported model's config keeps of it.
    """

    classification = True  # one class id per example: a confusion matrix makes sense
    model_loss = False  # True: the loss is the model's own (sequence tasks); else example_losses, labels kept from the model

    def __init__(self, names: list[str] | None = None) -> None:
        self.names = list(names or [])

    def predictions(self, logits: Any, batch: dict[str, Any], model: Any) -> Any:
        return logits.argmax(-1)

    def compute(self, predictions: list, references: list) -> dict[str, float]:
        return classification_metrics(predictions, references)

    def example_table(self, predictions: list, references: list) -> dict[str, Any]:
        """Per example, what `compute`'s metrics are made of, as JSON: `resampled_metrics.metrics_under_weights`
        recomputes every metric from it for many resamples at once (paired bootstrap intervals)."""
        return {
            "kind": "single_label",
            "prediction": [int(p) for p in predictions],
            "reference": [int(r) for r in references],
        }

    def calibrate(self, predictions: list, references: list) -> None:
        """Fit what the validation split decides (nothing for single-label)."""

    def details(self, predictions: list, references: list) -> dict[str, Any] | None:
        """Precision, recall, F1 and support per class (scikit-learn's classification report)."""
        if not self.names:
            return None
        ids = list(range(len(self.names)))
        p, r, f, n = precision_recall_fscore_support(references, predictions, labels=ids, average=None, zero_division=0)
        return {
            name: {"precision": float(p[i]), "recall": float(r[i]), "f1": float(f[i]), "support": int(n[i])}
            for i, name in enumerate(self.names)
        }

    def config_updates(self) -> dict[str, Any]:
        """Settings the exported model's config.json keeps (read back by `hftl predict` / `hftl evaluate`)."""
        return {}

    def example_losses(self, logits: Any, labels: Any) -> Any:
        """Loss per example (the model's cross-entropy, unreduced), or None where the task has none.

        Per-example losses gather exactly across processes; a batch's mean would carry the samples
        Accelerate repeats to even out the last batches into the result.
        """
        import torch

        return torch.nn.functional.cross_entropy(logits.float(), labels, reduction="none")


class TokenClassificationEvaluator(Evaluator):
    """Entity F1 over words: only positions with a label (each word's first sub-token) are scored."""

    classification = False
    model_loss = True

    def example_losses(self, logits: Any, labels: Any) -> Any:
        return None  # token-weighted within a batch: the batch mean is used

    def __init__(self, label_names: list[str]) -> None:
        super().__init__()
        self.tags = iob_tags(label_names)

    def tag_sequences(self, predictions: list, references: list) -> tuple[list[list[str]], list[list[str]]]:
        """The scored positions' tags per sentence, predicted and true (an id outside the tags reads as O)."""
        preds, refs = [], []
        for p_row, r_row in zip(predictions, references):
            kept = [(p, r) for p, r in zip(p_row, r_row) if r != IGNORE]
            preds.append([self.tags[p] if 0 <= p < len(self.tags) else "O" for p, _ in kept])
            refs.append([self.tags[r] for _, r in kept])
        return preds, refs

    def compute(self, predictions: list, references: list) -> dict[str, float]:
        preds, refs = self.tag_sequences(predictions, references)
        return SeqevalMetrics(keep_in_memory=True).compute(predictions=preds, references=refs)

    def example_table(self, predictions: list, references: list) -> dict[str, Any]:
        return {"kind": "token_classification", **entity_counts(*self.tag_sequences(predictions, references))}


def entity_counts(predictions: list[list[str]], references: list[list[str]]) -> dict[str, list[int]]:
    """Per sentence: entities found (true positives), predicted and true, and correct and scored tags.

    Entities are read as seqeval's micro scores read them (its default, conlleval-compatible mode): from all
    sentences joined with an O between them, each a (type, start, end) that counts once; summed over
    sentences, these columns give seqeval's precision, recall and F1.

    Example:
        >>> entity_counts([["B-PER", "I-PER", "O"], ["B-LOC"]], [["B-PER", "I-PER", "O"], ["O"]])
        {'true_positives': [1, 0], 'predicted': [1, 1], 'actual': [1, 0], 'correct': [3, 0], 'tokens': [3, 1]}
    """
    from seqeval.metrics.sequence_labeling import get_entities

    starts = np.cumsum([0] + [len(r) + 1 for r in references])[:-1]  # each sentence's offset in the joined list

    def per_sentence(entities: set[tuple[str, int, int]]) -> list[int]:
        rows = np.searchsorted(starts, [start for _, start, _ in entities], side="right") - 1
        return np.bincount(rows.astype(np.int64), minlength=len(references)).tolist()

    true = set(get_entities([list(r) for r in references]))
    pred = set(get_entities([list(p) for p in predictions]))
    return {
        "true_positives": per_sentence(true & pred),
        "predicted": per_sentence(pred),
        "actual": per_sentence(true),
        "correct": [sum(p == r for p, r in zip(ps, rs)) for ps, rs in zip(predictions, references)],
        "tokens": [len(r) for r in references],
    }
