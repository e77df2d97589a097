"""The study report: a table, PNG plots, the gap pretraining buys, and a recommendation from the numbers.

`report.md` links the plots in `plots/`; `report.html` embeds them (base64), so it can be mailed or
opened anywhere as one file. `study.json` holds the summary rows the tables are made from.

Example:
    >>> md, html = write_report(study)  # doctest: +SKIP
"""

from __future__ import annotations

import base64
import html
import json
import statistics
from pathlib import Path
from typing import Any

from hftl.config import LOWER_IS_BETTER, PROBLEM_METRICS, better, metric_names
from hftl.run_folder.layout import PLOTS_DIR, STUDY_FILE
from hftl.runs.export import per_class_table
from hftl.runs.plots import best_record, write_plots
from hftl.studies.adapt_report import TITLE as ADAPT_TITLE
from hftl.studies.adapt_report import adaptation_advice, adaptation_table
from hftl.studies.baselines import left_chance
from hftl.studies.significance import (
    StudyStatistics,
    comparison_table,
    curve_verdicts,
    fold_table,
    indistinguishable_from,
    scratch_row,
    settle_negative_transfer,
    study_statistics,
    write_curve_plot,
)
from hftl.utils.files import atomic_write_text

UNBOUNDED = frozenset({"rmse", "mae", "loss"})  # in the data's units: compared as a relative change, not in points


def _points(metric: str, a: float, b: float) -> float:
    """How much better `a` is than `b`: percentage points of a 0..1 metric, or percent of `b` for an
    unbounded one (rmse: 0.86 against 1.46 is 41% lower)."""
    if metric in UNBOUNDED:
        return 100 * (b - a) / abs(b) if b else 0.0
    return 100 * ((b - a) if metric in LOWER_IS_BETTER else (a - b))


def _unit(metric: str) -> str:
    return "%" if metric in UNBOUNDED else "points"


def _seconds(s: float) -> str:
    return f"{s:.1f} s" if s < 10 else f"{s:.0f} s"


def _fmt_count(n: float) -> str:
    for unit, size in (("B", 1e9), ("M", 1e6), ("k", 1e3)):
        if n >= size:
            return f"{n / size:.1f}{unit}"
    return str(int(n))


def recommend(rows: list[dict[str, Any]], metric: str, comparisons: list[dict[str, Any]] | None = None) -> list[str]:
    """Plain-language advice from the measured rows: the winner only when the paired intervals say it wins (else
    the arms it cannot be told apart from, and the cheapest of them), the smallest trainable set among those, and
    what the baselines honestly say (a run that never left chance, a strategy below scratch). Without comparisons
    (runs without per-example tables), "close" means within 1 point."""
    key = f"validation_{metric}"
    done = [r for r in rows if key in r]
    if not done:
        return ["No strategy finished, so there is nothing to recommend yet."]
    best = done[0]
    for r in done[1:]:
        if better(metric, r[key], best[key]):
            best = r
    tied = indistinguishable_from(best, done, comparisons or [])
    about = f"({best[key]:.4f} on validation, {_seconds(best['train_seconds'])} of training, "
    about += f"{_fmt_count(best['trainable_parameters'])} trainable parameters)"
    if tied is None:
        lines = [f"**Best {metric}: `{best['arm']}`** {about}."]
        close = [r for r in done if _points(metric, best[key], r[key]) <= 1.0]
        within = "within 1% of the best" if metric in UNBOUNDED else "within 1 point of the best"
    elif len(tied) == 1:
        lines = [f"**Best {metric}: `{best['arm']}`** {about}; better than every other arm beyond the noise "
                 "(95% paired bootstrap intervals of each difference exclude 0)."]  # fmt: skip
        close, within = tied, "indistinguishable from the best"
    else:
        names = ", ".join(f"`{r['arm']}` ({r[key]:.4f})" for r in tied)
        lines = [f"**No single winner on {metric}:** {names} are indistinguishable (the 95% paired bootstrap "
                 f"interval of each one's difference to `{best['arm']}` includes 0)."]  # fmt: skip
        close, within = tied, "indistinguishable from the best"
    fastest = min(close, key=lambda r: r["train_seconds"])
    if fastest is not best:
        ratio = best["train_seconds"] / max(fastest["train_seconds"], 1e-9)
        lines.append(
            f"**Cheapest {within}: `{fastest['arm']}`** ({fastest[key]:.4f}, "
            f"{_seconds(fastest['train_seconds'])}, "
            + (f"{ratio:.1f}x less training time)." if ratio >= 1.1 else "about the same training time).")
        )
    if metric not in LOWER_IS_BETTER:  # a ratio of an error to seconds would favour the slowest run
        per_second = max(done, key=lambda r: r[key] / max(r["train_seconds"], 1e-9))
        lines.append(f"Best {metric} per second of training: `{per_second['arm']}`.")
    smallest = min(close, key=lambda r: r["trainable_parameters"])
    lines.append(
        f"**Smallest trainable set {within}: `{smallest['arm']}`** "
        f"({_fmt_count(smallest['trainable_parameters'])} parameters, {smallest['trainable_percent']:.2f}% of the model): "
        + ("what to ship when many fine-tuned variants must be stored." if smallest is not best else "also the best.")
    )
    honest = _baseline_lines(done, best, metric)
    if honest and honest[0].startswith("**No run did better"):  # first, before any "best"
        return [honest[0], *lines, *honest[1:]]
    return lines + honest


def _baseline_lines(done: list[dict[str, Any]], best: dict[str, Any], metric: str) -> list[str]:
    """What scratch buys (said plainly when scratch only guessed), runs that never left chance, negative transfer."""
    key, lines = f"validation_{metric}", []
    scratch = scratch_row(done, best)
    if scratch is not None and best is not scratch:
        gap = _points(metric, best[key], scratch[key])
        what = f"{metric} {gap:.1f}% lower than" if metric in UNBOUNDED else f"{gap:+.1f} points of {metric} over"
        line = f"Pretraining buys {what} training the same architecture from scratch"
        if scratch.get("chance"):
            line += (
                f", but scratch {scratch['chance']}: that gap is measured against a guess, not a trained baseline "
                "(give scratch more epochs or a higher learning rate for a fair one)"
            )
        lines.append(line + ".")
    guessed = [r for r in done if r.get("chance")]
    if len(guessed) == len(done):
        return [
            f"**No run did better than a constant guess** ({done[0]['chance']}): these numbers say nothing about "
            "the strategies yet. Train longer, raise the learning rate, or check the labels.",
            *lines,
        ]
    lines += [f"`{r['arm']}` {r['chance']}." for r in guessed if r is not scratch]
    for r in done:
        if r.get("below_scratch"):
            lines.append(
                f"**Negative transfer: `{r['arm']}`** scores below training from scratch ({r[key]:.4f} against "
                f"{r['below_scratch']:.4f}): its pretrained features hurt on this data."
            )
    return lines


def summarize(study: Any) -> list[dict[str, Any]]:
    """One row per strategy (model study: per model and strategy): mean (and std over seeds) of the headline
    numbers, and the honest-baseline flags (`chance`: why it never beat a guess; `below_scratch`)."""
    rows = []
    for model, method, name, size in _arms(study):
        runs = [r for r in study.runs if (r.strategy, r.model, r.method, r.size) == (name, model, method, size)]
        done = [r for r in runs if r.metrics]
        failed = [r for r in runs if r.error]
        arm = runs[0].arm if runs else name
        which = {"strategy": name, "model": model, "method": method, "arm": arm, **({"train_size": size} if size else {})}
        if not done:
            rows.append({**which, "error": failed[0].error if failed else "not run"})
            continue
        m0 = done[0].metrics
        row: dict[str, Any] = {
            **which,
            "runs": len(done),
            "trainable_parameters": m0["trainable_parameters"],
            "total_parameters": m0["total_parameters"],
            "trainable_percent": 100 * m0["trainable_parameters"] / max(m0["total_parameters"], 1),
        }
        for split in ("validation", "test", "target_test"):
            keys = sorted({k for r in done for k in (r.metrics.get(split) or {})})
            for key in keys:
                values = [r.metrics[split][key] for r in done if (r.metrics.get(split) or {}).get(key) is not None]
                if values:
                    row[f"{split}_{key}"] = statistics.fmean(values)
                    row[f"{split}_{key}_std"] = statistics.stdev(values) if len(values) > 1 else 0.0
        for key in ("train_seconds", "samples_per_second", "peak_memory_mb", "best_epoch"):
            row[key] = statistics.fmean(r.metrics[key] for r in done)
        for key in ("shift_before", "shift_after"):  # an adapted run's proxy A-distance at the head's input
            values = [r.metrics["adapt"][key] for r in done if (r.metrics.get("adapt") or {}).get(key) is not None]
            if values:
                row[key] = statistics.fmean(values)
        reasons = [left_chance(r.metrics, study.metric) for r in done]
        if all(reasons):  # every seed only guessed
            row["chance"] = reasons[0] if len(done) == 1 else f"in every seed {reasons[0]}"
        rows.append(row)
    key = f"validation_{study.metric}"
    for row in rows:
        scratch = scratch_row([r for r in rows if key in r], row)
        if key in row and scratch is not None and row is not scratch and better(study.metric, scratch[key], row[key]):
            row["below_scratch"] = scratch[key]
    return rows


def _arms(study: Any) -> list[tuple[str | None, str | None, str, int | None]]:
    """(model, adapt.method, strategy, label budget) of every row, models outermost, then budgets; None where the
    study does not vary it."""
    methods = getattr(study, "methods", None) or [None]
    sizes = getattr(study, "sizes", None) or [None]
    return [(m, method, s, n) for m, s in study.arms for method in methods for n in sizes]


def _table(study: Any, rows: list[dict[str, Any]]) -> tuple[list[str], list[list[str]]]:
    # The label shape's metrics (a study of auto-detected multi-label data has multi-label ones), as present.
    shapes = [metric_names(study.task, p) for p in ("single_label", *PROBLEM_METRICS)]
    candidates = dict.fromkeys(m for names in shapes for m in names if m != "loss")
    metrics = [m for m in candidates if any(f"validation_{m}" in r for r in rows)] or [study.metric]
    has_test = any(f"test_{metrics[0]}" in r for r in rows)
    names = (["model"] if study.models else []) + (["adapt"] if getattr(study, "methods", None) else []) + ["strategy"]
    names += ["labels"] if getattr(study, "sizes", None) else []
    has_target = any(f"target_test_{metrics[0]}" in r for r in rows)
    header = [*names, "trainable params", *(f"target test {m}" for m in metrics if has_target)]
    header += [f"val {m}" for m in metrics]
    header += [f"test {m}" for m in metrics] if has_test else []
    header += ["train time (s)", "samples/s", "peak memory (MiB)", "best epoch"]
    key = f"validation_{study.metric}"
    has_scratch = any(r["strategy"] == "scratch" and key in r for r in rows)
    if has_scratch:
        header.append(f"vs scratch ({study.metric}, {_unit(study.metric)})")
    flagged = any(r.get("chance") or r.get("below_scratch") for r in rows)
    header += ["baseline check"] if flagged else []
    body = []
    for r in rows:
        first = [r[name] for name in ("model", "method") if r[name] is not None] + [r["strategy"]]
        first += [str(r["train_size"])] if "train_size" in r else []
        if "error" in r:
            text = r["error"] if r["error"].startswith("refused") else f"failed: {r['error']}"
            body.append([*first, text[:160]] + [""] * (len(header) - len(first) - 1))
            continue

        def value(split: str, m: str, r: dict = r) -> str:
            v = r.get(f"{split}_{m}")
            if v is None:
                return "-"
            std, ci = r.get(f"{split}_{m}_std"), r.get(f"{split}_{m}_ci")
            text = f"{v:.4f}" + (f" ± {std:.4f}" if r["runs"] > 1 else "")
            return text + (f" [{ci[0]:.4f}, {ci[1]:.4f}]" if ci else "")

        cells = [*first, f"{_fmt_count(r['trainable_parameters'])} ({r['trainable_percent']:.2f}%)"]
        cells += [value("target_test", m) for m in metrics] if has_target else []
        cells += [value("validation", m) for m in metrics]
        cells += [value("test", m) for m in metrics] if has_test else []
        cells += [f"{r['train_seconds']:.1f}", f"{r['samples_per_second']:.1f}"]
        cells += [f"{r['peak_memory_mb']:.0f}", f"{r['best_epoch']:.0f}"]
        if has_scratch:
            scratch = scratch_row([x for x in rows if key in x], r)
            cells.append("-" if scratch is None or r is scratch else f"{_points(study.metric, r[key], scratch[key]):+.1f}")
        if flagged:
            flags = {"chance": "never left chance", "below_scratch": "negative transfer"}
            cells.append("; ".join(text for flag, text in flags.items() if r.get(flag)) or "ok")
        body.append(cells)
    return header, body


def _grid(study: Any, rows: list[dict[str, Any]]) -> list[str]:
    """A model study's model x strategy table of the study metric (markdown rows), the best cell in bold."""
    key = f"validation_{study.metric}"
    done = [r for r in rows if key in r]
    best = None
    for r in done:
        best = r if best is None or better(study.metric, r[key], best[key]) else best
    lines = ["| model | " + " | ".join(study.strategies) + " |", "|" + "---|" * (len(study.strategies) + 1)]
    for model in study.models:
        cells = []
        for name in study.strategies:
            r = next((x for x in rows if x["model"] == model and x["strategy"] == name), None)
            text = "failed" if r is None or key not in r else f"{r[key]:.4f}"
            cells.append(f"**{text}**" if r is best and r is not None else text)
        lines.append(f"| {model} | " + " | ".join(cells) + " |")
    return lines


def write_report(study: Any) -> tuple[Path, Path]:
    """study.json, plots/*.png, report.md and a self-contained report.html in the study folder."""
    rows = summarize(study)
    stats = study_statistics(study, rows)
    settle_negative_transfer(rows, stats.comparisons)
    out = Path(study.output_dir)
    plots = write_plots(study, rows, out / PLOTS_DIR)
    if getattr(study, "sizes", None):
        plots.update(write_curve_plot(study, rows, out / PLOTS_DIR))
    page = _Page(study, rows, plots, stats)
    report_md, report_html = out / "report.md", out / "report.html"
    atomic_write_text(report_md, page.markdown())
    atomic_write_text(report_html, page.html())
    marker = out / STUDY_FILE
    info = json.loads(marker.read_text()) if marker.exists() else {}
    info.update({"metric": study.metric, "rows": rows, "recommendation": page.advice})
    info.update({"comparisons": stats.comparisons, "comparison_method": stats.method})
    info["runs"] = [
        {"model": r.model, "method": r.method, "strategy": r.strategy, "seed": r.seed, "fold": r.fold, "train_size": r.size,
         "run_dir": str(r.run_dir), "error": r.error}
        for r in study.runs
    ]  # fmt: skip
    atomic_write_text(marker, json.dumps(info, indent=2))
    return report_md, report_html


class _Page:
    """The parts of a study report, written out as markdown or as one self-contained HTML page."""

    def __init__(self, study: Any, rows: list[dict[str, Any]], plots: dict[str, Path], stats: StudyStatistics) -> None:
        self.study, self.plots, self.stats = study, plots, stats
        self.adaptation = adaptation_table(study, rows)
        sizes = getattr(study, "sizes", None)
        largest = [r for r in rows if r.get("train_size") == sizes[-1]] if sizes else rows  # one budget's arms compete
        self.advice = adaptation_advice(study, rows) + recommend(largest, study.metric, stats.comparisons)
        self.advice += curve_verdicts(study, rows, stats.comparisons)
        self.folds = fold_table(study, rows)
        self.comparisons = comparison_table(stats.comparisons)
        self.header, self.body = _table(study, rows)
        # An adaptation study's first table already has the model column; the grid would hide the method.
        self.grid = _grid(study, rows) if study.models and not self.adaptation else []
        kind = "Adaptation" if getattr(study, "methods", None) else "Model and strategy" if study.models else "Strategy"
        self.title = f"{kind} comparison: {study.task}"
        seeds = f"seed {study.seeds[0]}"
        if len(study.seeds) > 1:
            seeds = f"{len(study.seeds)} seeds ({', '.join(map(str, study.seeds))}), mean ± std"
        first = next((r.metrics for r in study.runs if r.metrics), None)
        models = ", ".join(f"`{m}`" for m in study.models.values()) if study.models else None
        self.intro = ""
        if first is not None:
            data = first["data"]
            train = f"{data['train_examples']} train" if not sizes else "label budgets of the training split"
            source = data["sources"]["train"].split("; label budget")[0]
            self.intro = f"{train} / {data['validation_examples']} validation examples from `{source}`; "
            self.intro += f"models {models}" if models else f"base model `{first['base_model']}`"
        self.intro += f". Same split, budget and {seeds}." if not getattr(study, "folds", None) else f". {seeds}."
        if getattr(study, "folds", None) and first is not None:
            self.intro += f" {study.folds}-fold cross-validation: {first['data']['sources']['validation']}."
        if sizes:
            self.intro += (
                f" Label budgets {', '.join(map(str, sizes))}: nested stratified subsets, the smaller inside the larger."
            )
        self.intro += f" Intervals: {stats.method}." if stats.comparisons else ""
        if stats.missing:
            self.intro += f" No per-example results (runs from an older hftl): {', '.join(stats.missing)}."
        self.best = best_record(study)
        per_class = []
        if self.best is not None:  # runs from before label shapes have no label_space
            problem = (self.best.metrics["data"].get("label_space") or {}).get("problem", "single_label")
            per_class = per_class_table(self.best.metrics.get("per_class"), problem)
        self.per_class = per_class[2:]
        self.per_class_title = f"{per_class[1].split(' (')[0]}: the best run ({self.best.arm})" if per_class else ""

    def sections(self) -> list[tuple[str, list[str]]]:
        """(title, markdown table) of the parts after the main table: per-fold results, paired comparisons."""
        found = [("Per fold", self.folds)] if self.folds else []
        if self.comparisons:
            found.append((f"Paired comparisons ({self.study.metric}, 95% intervals of a - b)", self.comparisons))
        return found

    def markdown(self) -> str:
        md = [f"# {self.title}", "", self.intro, ""]
        if self.grid:
            md += [f"## Validation {self.study.metric}: model x strategy", "", *self.grid, "", "## All numbers", ""]
        if self.adaptation:
            md += [f"## {ADAPT_TITLE}", "", *self.adaptation, "", "## All numbers", ""]
        md += ["| " + " | ".join(self.header) + " |", "|" + "---|" * len(self.header)]
        md += ["| " + " | ".join(cells) + " |" for cells in self.body]
        for title, table in self.sections():
            md += ["", f"## {title}", "", *table]
        if self.per_class:
            md += ["", f"## {self.per_class_title}", "", *self.per_class]
        md += ["", "## Recommendation", ""] + [f"- {line}" for line in self.advice] + ["", "## Plots", ""]
        md += [f"![{caption}]({PLOTS_DIR}/{path.name})" for caption, path in self.plots.items()]
        md += ["", "## Runs", ""]
        for r in self.study.runs:
            md.append(f"- `{r.arm}` {r.block}: `{r.run_dir}`" + (" (reused)" if r.reused else ""))
            if r.error:
                md[-1] += f" FAILED: {r.error}"
        return "\n".join(md) + "\n"

    def html(self) -> str:
        images = "".join(
            f'<figure><img alt="{html.escape(t)}" src="data:image/png;base64,{base64.b64encode(p.read_bytes()).decode()}">'
            f"<figcaption>{html.escape(t)}</figcaption></figure>"
            for t, p in self.plots.items()
        )
        grid = _html_table(self.grid, f"Validation {self.study.metric}: model x strategy") if self.grid else ""
        grid += _html_table(self.adaptation, ADAPT_TITLE) if self.adaptation else ""
        rows = ["| " + " | ".join(cells) + " |" for cells in (self.header, *self.body)]
        table = _html_table(rows, "") + "".join(_html_table(t, title) for title, t in self.sections())
        return f"""<!doctype html><html><head><meta charset="utf-8"><title>hftl study: {html.escape(self.study.task)}</title>
<style>body{{font-family:system-ui,sans-serif;margin:2em;max-width:1200px}}table{{border-collapse:collapse}}
td,th{{border:1px solid #ccc;padding:4px 8px;text-align:right}}td:first-child,th:first-child{{text-align:left}}
figure{{display:inline-block;margin:1em}}img{{max-width:560px}}</style></head><body>
<h1>{html.escape(self.title)}</h1><p>{_inline(self.intro)}</p>
{grid}{table}
{_html_table(self.per_class, self.per_class_title) if self.per_class else ""}
<h2>Recommendation</h2><ul>{"".join(f"<li>{_inline(line)}</li>" for line in self.advice)}</ul>
<h2>Plots</h2>{images}</body></html>
"""


def _inline(text: str) -> str:
    """HTML of the few markdown marks the report's prose uses (bold, code)."""
    text = html.escape(text)
    while "**" in text:
        text = text.replace("**", "<b>", 1).replace("**", "</b>", 1)
    while text.count("`") >= 2:
        text = text.replace("`", "<code>", 1).replace("`", "</code>", 1)
    return text


def _html_table(markdown_rows: list[str], title: str) -> str:
    """A markdown table (header, rule, rows) as an HTML table, under an h2 when `title`; bold cells stay bold."""
    cells = [[c.strip() for c in row.strip("|").split("|")] for row in markdown_rows if not row.startswith("|---")]
    head = "".join(f"<th>{html.escape(c)}</th>" for c in cells[0])
    body = "".join("<tr>" + "".join(f"<td>{_inline(c)}</td>" for c in row) + "</tr>" for row in cells[1:])
    return (f"<h2>{html.escape(title)}</h2>" if title else "") + f"<table><tr>{head}</tr>{body}</table>"


def format_table(study: Any) -> str:
    """The report's table as aligned plain text, for the terminal."""
    header, body = _table(study, summarize(study))
    keep = [i for i, h in enumerate(header) if not h.startswith("test ")]
    header, body = [header[i] for i in keep], [[c[i] if i < len(c) else "" for i in keep] for c in body]
    widths = [max(len(h), *(len(c[i]) for c in body)) for i, h in enumerate(header)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(header, widths))]
    lines += ["  ".join(c.ljust(w) for c, w in zip(cells, widths)) for cells in body]
    return "\n".join(lines)
