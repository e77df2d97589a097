"""The PNG plots of a study and of a single run: learning curves, metric against cost, confusion matrices.

Matplotlib runs headless (the Agg backend): files only, also in CI.

Example:
    >>> write_run_plots(summary, "f1", run_dir / "plots")      # doctest: +SKIP
    [PosixPath('runs/x/plots/learning_curves.png'), PosixPath('runs/x/plots/confusion_matrix.png')]
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from hftl.config import better


def write_plots(study: Any, rows: list[dict[str, Any]], folder: Path) -> dict[str, Path]:
    """The study's PNG plots; returns {title: path}."""
    import matplotlib

    matplotlib.use("Agg")  # files only: no display needed, also headless in CI
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    folder.mkdir(parents=True, exist_ok=True)
    metric = study.metric
    plots: dict[str, Path] = {}

    def save(fig: Any, name: str, title: str) -> None:
        path = folder / f"{name}.png"
        fig.tight_layout()
        fig.savefig(path, dpi=110)
        plt.close(fig)
        plots[title] = path

    # Learning curves: one figure per model in a model study (a line per strategy), else one for the study.
    for model in list(study.models) or [None]:
        first: dict[str, Any] = {}  # a line per strategy (adaptation study: per method and strategy), its first seed
        for r in study.runs:
            label = f"{r.method} / {r.strategy}" if getattr(r, "method", None) else r.strategy
            if r.model == model and r.metrics and label not in first:
                first[label] = r
        suffix, of = (f"_{_file_name(model)}", f" ({model})") if model else ("", "")
        fig, ax = plt.subplots(figsize=(7, 4.2))
        for name, record in first.items():
            if record:
                history = record.metrics["history"]
                ax.plot([h["epoch"] for h in history], [h[f"eval_{metric}"] for h in history], marker="o", label=name)
        ax.set(xlabel="epoch", ylabel=f"validation {metric}", title=f"Validation {metric} per epoch{of}")
        ax.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))  # epochs are whole
        ax.grid(alpha=0.3)
        _legend(ax)
        save(fig, f"validation_per_epoch{suffix}", f"Validation {metric} per epoch{of}")

        fig, ax = plt.subplots(figsize=(7, 4.2))
        for name, record in first.items():
            if record and record.metrics["log_history"]:
                log = record.metrics["log_history"]
                ax.plot([e["step"] for e in log], [e["loss"] for e in log], label=name)
        ax.set(xlabel="optimizer step", ylabel="training loss", title=f"Training loss per step{of}")
        ax.grid(alpha=0.3)
        _legend(ax)
        save(fig, f"train_loss{suffix}", f"Training loss per step{of}")

    done = [r for r in rows if f"validation_{metric}" in r]
    for x_key, x_label, name, log_x in (
        ("trainable_parameters", "trainable parameters", "metric_vs_parameters", True),
        ("train_seconds", "training time (s)", "metric_vs_time", False),
    ):
        fig, ax = plt.subplots(figsize=(6.5, 4.2))
        for r in done:
            ax.errorbar(r[x_key], r[f"validation_{metric}"], yerr=r.get(f"validation_{metric}_std") or None, fmt="o", capsize=3)
            ax.annotate(r["arm"], (r[x_key], r[f"validation_{metric}"]), textcoords="offset points", xytext=(6, 4))
        if log_x:
            ax.set_xscale("log")
        ax.set(xlabel=x_label, ylabel=f"validation {metric}", title=f"Validation {metric} vs {x_label}")
        ax.grid(alpha=0.3)
        save(fig, name, f"Validation {metric} vs {x_label}")

    best = best_record(study)
    if best is not None and best.metrics.get("confusion_matrix"):
        fig = confusion_figure(best.metrics["confusion_matrix"], best.metrics["data"]["labels"], f"{best.arm} (validation)")
        save(fig, "confusion_matrix", f"Confusion matrix of the best run ({best.arm})")
    for name, title in (("predicted_vs_true", "Predicted vs true"), ("precision_recall", "Precision-recall")):
        source = Path(best.run_dir) / "plots" / f"{name}.png" if best is not None else None
        if source is not None and source.is_file():  # the best run's own plot of its label shape
            (folder / f"best_{name}.png").write_bytes(source.read_bytes())
            plots[f"{title} of the best run ({best.arm})"] = folder / f"best_{name}.png"
    return plots


def _file_name(text: str) -> str:
    """`text` as a safe file-name part: letters, digits, dot, dash and underscore."""
    return "".join(c if c.isalnum() or c in "._-" else "_" for c in text)


def confusion_figure(matrix: list[list[int]], labels: list[str], title: str) -> Any:
    """A confusion-matrix figure (rows true, columns predicted), counts written in when it stays legible."""
    import matplotlib.pyplot as plt

    size = min(2 + 0.45 * len(labels), 12)
    fig, ax = plt.subplots(figsize=(size + 1, size))
    image = ax.imshow(matrix, cmap="Blues")
    fig.colorbar(image, ax=ax, fraction=0.046)
    if len(labels) <= 30:
        ax.set_xticks(range(len(labels)), labels, rotation=45, ha="right")
        ax.set_yticks(range(len(labels)), labels)
        peak = max(max(row) for row in matrix) or 1
        for i, row in enumerate(matrix):
            for j, value in enumerate(row):
                ax.text(j, i, value, ha="center", va="center", color="white" if value > peak / 2 else "black", fontsize=8)
    ax.set(xlabel="predicted", ylabel="true", title=f"Confusion matrix: {title}")
    return fig


def write_run_plots(summary: dict[str, Any], metric: str, folder: Path) -> list[Path]:
    """A run's own PNGs: learning curves (training loss per step, validation metric per epoch) and,
    for classification, the confusion matrix of the best epoch on validation."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    folder.mkdir(parents=True, exist_ok=True)
    written = []
    fig, (loss_ax, metric_ax) = plt.subplots(1, 2, figsize=(11, 4))
    log = summary["log_history"]
    loss_ax.plot([e["step"] for e in log], [e["loss"] for e in log])
    loss_ax.set(xlabel="optimizer step", ylabel="training loss", title="Training loss")
    history = summary["history"]
    metric_ax.plot([h["epoch"] for h in history], [h[f"eval_{metric}"] for h in history], marker="o")
    metric_ax.set(xlabel="epoch", ylabel=f"validation {metric}", title=f"Validation {metric}")
    metric_ax.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
    for ax in (loss_ax, metric_ax):
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(folder / "learning_curves.png", dpi=110)
    plt.close(fig)
    written.append(folder / "learning_curves.png")
    if summary.get("confusion_matrix"):
        fig = confusion_figure(summary["confusion_matrix"], summary["data"]["labels"], "validation, best epoch")
        fig.tight_layout()
        fig.savefig(folder / "confusion_matrix.png", dpi=110)
        plt.close(fig)
        written.append(folder / "confusion_matrix.png")
    return written


def write_prediction_plots(space: Any, predictions: list, references: list, folder: Path) -> list[Path]:
    """Validation predictions of the final weights: predicted against true per target (regression), or
    precision against recall per label (multi-label). Single-label has the confusion matrix instead."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    if space.problem not in ("regression", "multi_label") or not len(predictions):
        return []
    folder.mkdir(parents=True, exist_ok=True)
    pred, true = np.asarray(predictions, dtype=np.float64), np.asarray(references, dtype=np.float64)
    if space.problem == "regression":
        pred = pred.reshape(len(pred), -1) * np.asarray(space.std) + np.asarray(space.mean)
        true = true.reshape(len(true), -1)
        shown = space.names[:4]
        fig, axes = plt.subplots(1, len(shown), figsize=(4.5 * len(shown), 4.2), squeeze=False)
        for j, (ax, name) in enumerate(zip(axes[0], shown)):
            ax.scatter(true[:, j], pred[:, j], s=8, alpha=0.5)
            low, high = float(min(true[:, j].min(), pred[:, j].min())), float(max(true[:, j].max(), pred[:, j].max()))
            ax.plot([low, high], [low, high], color="grey", linestyle="--", linewidth=1)  # perfect predictions
            ax.set(xlabel=f"true {name}", ylabel=f"predicted {name}", title=f"Validation: {name}")
            ax.grid(alpha=0.3)
        path = folder / "predicted_vs_true.png"
    else:
        from sklearn.metrics import precision_recall_curve

        fig, ax = plt.subplots(figsize=(6, 5))
        truth = true > 0.5
        for j, name in enumerate(space.names[:10]):
            if truth[:, j].any():
                precision, recall, _ = precision_recall_curve(truth[:, j], pred[:, j])
                ax.plot(recall, precision, label=name, linewidth=1)
        precision, recall, _ = precision_recall_curve(truth.ravel(), pred.ravel())
        ax.plot(recall, precision, label="all labels (micro)", color="black", linewidth=2)
        ax.set(xlabel="recall", ylabel="precision", title="Precision-recall on validation", xlim=(0, 1), ylim=(0, 1.02))
        ax.legend(fontsize=8)
        ax.grid(alpha=0.3)
        path = folder / "precision_recall.png"
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return [path]


def best_record(study: Any) -> Any:
    """The finished run of the study with the best validation metric, or None."""
    key = study.metric
    done = [r for r in study.runs if r.metrics]
    best = None
    for r in done:
        if best is None or better(key, r.metrics["validation"][key], best.metrics["validation"][key]):
            best = r
    return best


def _legend(ax: Any) -> None:
    """A legend when the plot has lines (a study whose runs have not finished has none yet)."""
    if ax.get_legend_handles_labels()[0]:
        ax.legend()
