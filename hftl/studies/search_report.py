"""The search's report: the optimisation history, the parameters' importances, and every trial.

Example:
    >>> md, html = write_search_report(study, result)  # doctest: +SKIP
"""

from __future__ import annotations

import base64
import html
from pathlib import Path
from typing import Any

from hftl.run_folder.layout import PLOTS_DIR
from hftl.utils.files import atomic_write_text


def importances(study: Any) -> dict[str, float]:
    """Optuna's parameter importances (fANOVA); empty until two trials finished with different parameters."""
    import optuna

    complete = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    if len(complete) < 2 or len({tuple(sorted(t.params.items())) for t in complete}) < 2:
        return {}
    try:
        return dict(optuna.importance.get_param_importances(study))
    except (RuntimeError, ValueError):  # e.g. a parameter that took one value in every finished trial
        return {}


def write_search_report(study: Any, result: Any) -> tuple[Path, Path]:
    """report.md and report.html (plots embedded) in the search folder."""
    out = Path(result.output_dir)
    weights = importances(study)
    plots = {"Optimisation history": _history_plot(result, out / PLOTS_DIR)}
    if weights:
        plots["Parameter importances"] = _importance_plot(weights, out / PLOTS_DIR)
    keys = sorted({k for t in result.trials for k in t["params"]})
    header = ["trial", "state", f"validation {result.metric}", *keys, "epochs", "seconds", "run folder"]
    rows = [
        [str(t["number"]), t["state"], "-" if t["value"] is None else f"{t['value']:.4f}",
         *(_fmt(t["params"].get(k)) for k in keys), str(t["epochs_reported"]),
         "-" if t["seconds"] is None else f"{t['seconds']:.1f}", t["run_dir"] or "-"]
        for t in result.trials
    ]  # fmt: skip
    counts = {s: sum(t["state"] == s for t in result.trials) for s in ("COMPLETE", "PRUNED", "FAIL")}
    states = f"{counts['COMPLETE']} complete, {counts['PRUNED']} pruned, {counts['FAIL']} failed"
    summary = [f"{len(result.trials)} trials ({states}), TPE sampling, median pruning on each epoch's validation "
               f"{result.metric} ({result.direction})."]  # fmt: skip
    if result.best_value is not None:
        summary.append(f"Best: validation {result.metric} {result.best_value:.4f} with {result.best_params}; "
                       f"`hftl train {result.best_yaml}` runs it.")  # fmt: skip
    if weights:
        summary.append("Importance (fANOVA): " + ", ".join(f"{k} {v:.2f}" for k, v in weights.items()) + ".")
    md = ["# Hyperparameter search", "", *summary, "", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    md += ["| " + " | ".join(r) + " |" for r in rows]
    md += ["", *(f"![{title}]({PLOTS_DIR}/{path.name})" for title, path in plots.items()), ""]
    report_md = out / "report.md"
    atomic_write_text(report_md, "\n".join(md))
    images = "".join(
        f'<figure><img alt="{html.escape(t)}" src="data:image/png;base64,{base64.b64encode(p.read_bytes()).decode()}">'
        f"<figcaption>{html.escape(t)}</figcaption></figure>"
        for t, p in plots.items()
    )
    table = "<tr>" + "".join(f"<th>{html.escape(h)}</th>" for h in header) + "</tr>"
    table += "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in r) + "</tr>" for r in rows)
    page = f"""<!doctype html><html><head><meta charset="utf-8"><title>hftl search</title>
<style>body{{font-family:system-ui,sans-serif;margin:2em;max-width:1200px}}table{{border-collapse:collapse}}
td,th{{border:1px solid #ccc;padding:4px 8px;text-align:right}}figure{{display:inline-block;margin:1em}}
img{{max-width:560px}}</style></head><body><h1>Hyperparameter search</h1>
{"".join(f"<p>{html.escape(s)}</p>" for s in summary)}<table>{table}</table>{images}</body></html>
"""
    report_html = out / "report.html"
    atomic_write_text(report_html, page)
    return report_md, report_html


def _fmt(value: Any) -> str:
    if value is None:
        return "-"
    return f"{value:.3g}" if isinstance(value, float) else str(value)


def _history_plot(result: Any, folder: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    folder.mkdir(parents=True, exist_ok=True)
    done = [t for t in result.trials if t["state"] == "COMPLETE" and t["value"] is not None]
    fig, ax = plt.subplots(figsize=(7, 4.2))
    if done:
        xs, ys = [t["number"] for t in done], [t["value"] for t in done]
        pick = min if result.direction == "minimize" else max
        best = [pick(ys[: i + 1]) for i in range(len(ys))]
        ax.plot(xs, ys, "o", label="trial")
        ax.step(xs, best, where="post", color="tab:red", label="best so far")
        ax.legend()
    ax.set(xlabel="trial", ylabel=f"validation {result.metric}", title="Optimisation history")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    path = folder / "search_history.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _importance_plot(weights: dict[str, float], folder: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 0.6 * len(weights) + 1.5))
    names = list(weights)[::-1]
    ax.barh(names, [weights[n] for n in names])
    ax.set(xlabel="importance (fANOVA, sums to 1)", title="Parameter importances")
    fig.tight_layout()
    path = folder / "search_importances.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
