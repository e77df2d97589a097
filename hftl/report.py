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
from hftl.export import per_class_table
from hftl.files import atomic_write_text
from hftl.plots import best_record, write_plots
from hftl.run_dir import PLOTS_DIR, STUDY_FILE

UNBOUNDED = frozenset({"rmse", "mae", "loss"})  # in the data's units: compared as a relative change, not in points


def _points(metric: str, a: float, b: float) -> float:
    """How much better `a` is than `b`: percentage points of a 0..1 metric, or percent of `b` for an
    unbounded one (rmse: 0.86 against 1.46 is 41% lower)."""
    if metric in UNBOUNDED:
        return 100 * (b - a) / abs(b) if b else 0.0
    return 100 * ((b - a) if metric in LOWER_IS_BETTER else (a - b))


def _unit(metric: str) -> str:
    return "%" if metric in UNBOUNDED else "points"


def _fmt_count(n: float) -> str:
    for unit, size in (("B", 1e9), ("M", 1e6), ("k", 1e3)):
        if n >= size:
            return f"{n / size:.1f}{unit}"
    return str(int(n))


def recommend(rows: list[dict[str, Any]], metric: str) -> list[str]:
    """Plain-language advice from the measured rows: best, best per second, smallest within 1 point."""
    key = f"validation_{metric}"
    done = [r for r in rows if key in r]
    if not done:
        return ["No strategy finished, so there is nothing to recommend yet."]
    best = done[0]
    for r in done[1:]:
        if better(metric, r[key], best[key]):
            best = r
    lines = [
        f"**Best {metric}: `{best['strategy']}`** ({best[key]:.4f} on validation, "
        f"{best['train_seconds']:.0f} s of training, {_fmt_count(best['trainable_parameters'])} trainable parameters)."
    ]
    close = [r for r in done if _points(metric, best[key], r[key]) <= 1.0]
    within = "1%" if metric in UNBOUNDED else "1 point"
    fastest = min(close, key=lambda r: r["train_seconds"])
    if fastest is not best:
        lines.append(
            f"**Fastest within {within} of the best: `{fastest['strategy']}`** ({fastest[key]:.4f}, "
            f"{fastest['train_seconds']:.0f} s, {best['train_seconds'] / max(fastest['train_seconds'], 1e-9):.1f}x less "
            "training time)."
        )
    if metric not in LOWER_IS_BETTER:  # a ratio of an error to seconds would favour the slowest run
        per_second = max(done, key=lambda r: r[key] / max(r["train_seconds"], 1e-9))
        lines.append(f"Best {metric} per second of training: `{per_second['strategy']}`.")
    smallest = min(close, key=lambda r: r["trainable_parameters"])
    lines.append(
        f"**Smallest trainable set within {within} of the best: `{smallest['strategy']}`** "
        f"({_fmt_count(smallest['trainable_parameters'])} parameters, {smallest['trainable_percent']:.2f}% of the model): "
        + ("what to ship when many fine-tuned variants must be stored." if smallest is not best else "also the best.")
    )
    scratch = next((r for r in done if r["strategy"] == "scratch"), None)
    if scratch is not None and best is not scratch:
        gap = _points(metric, best[key], scratch[key])
        what = f"{metric} {gap:.1f}% lower than" if metric in UNBOUNDED else f"{gap:+.1f} points of {metric} over"
        lines.append(f"Pretraining buys {what} training the same architecture from scratch.")
    return lines


def summarize(study: Any) -> list[dict[str, Any]]:
    """One row per strategy: mean (and std over seeds) of the headline numbers."""
    rows = []
    for name in study.strategies:
        done = [r for r in study.runs if r.strategy == name and r.metrics]
        failed = [r for r in study.runs if r.strategy == name and r.error]
        if not done:
            rows.append({"strategy": name, "error": failed[0].error if failed else "not run"})
            continue
        m0 = done[0].metrics
        row: dict[str, Any] = {
            "strategy": name,
            "runs": len(done),
            "trainable_parameters": m0["trainable_parameters"],
            "total_parameters": m0["total_parameters"],
            "trainable_percent": 100 * m0["trainable_parameters"] / max(m0["total_parameters"], 1),
        }
        for split in ("validation", "test"):
            keys = sorted({k for r in done for k in (r.metrics.get(split) or {})})
            for key in keys:
                values = [r.metrics[split][key] for r in done if (r.metrics.get(split) or {}).get(key) is not None]
                if values:
                    row[f"{split}_{key}"] = statistics.fmean(values)
                    row[f"{split}_{key}_std"] = statistics.stdev(values) if len(values) > 1 else 0.0
        for key in ("train_seconds", "samples_per_second", "peak_memory_mb", "best_epoch"):
            row[key] = statistics.fmean(r.metrics[key] for r in done)
        rows.append(row)
    return rows


def _table(study: Any, rows: list[dict[str, Any]]) -> tuple[list[str], list[list[str]]]:
    # The label shape's metrics (a study of auto-detected multi-label data has multi-label ones), as present.
    shapes = [metric_names(study.task, p) for p in ("single_label", *PROBLEM_METRICS)]
    candidates = dict.fromkeys(m for names in shapes for m in names if m != "loss")
    metrics = [m for m in candidates if any(f"validation_{m}" in r for r in rows)] or [study.metric]
    has_test = any(f"test_{metrics[0]}" in r for r in rows)
    header = ["strategy", "trainable params", *(f"val {m}" for m in metrics)]
    header += [f"test {m}" for m in metrics] if has_test else []
    header += ["train time (s)", "samples/s", "peak memory (MiB)", "best epoch"]
    scratch = next((r for r in rows if r["strategy"] == "scratch" and f"validation_{study.metric}" in r), None)
    if scratch:
        header.append(f"vs scratch ({study.metric}, {_unit(study.metric)})")
    body = []
    for r in rows:
        if "error" in r:
            body.append([r["strategy"], f"failed: {r['error'][:120]}"] + [""] * (len(header) - 2))
            continue

        def value(split: str, m: str, r: dict = r) -> str:
            v = r.get(f"{split}_{m}")
            if v is None:
                return "-"
            std = r.get(f"{split}_{m}_std")
            return f"{v:.4f}" + (f" ± {std:.4f}" if r["runs"] > 1 else "")

        cells = [r["strategy"], f"{_fmt_count(r['trainable_parameters'])} ({r['trainable_percent']:.2f}%)"]
        cells += [value("validation", m) for m in metrics]
        cells += [value("test", m) for m in metrics] if has_test else []
        cells += [f"{r['train_seconds']:.1f}", f"{r['samples_per_second']:.1f}"]
        cells += [f"{r['peak_memory_mb']:.0f}", f"{r['best_epoch']:.0f}"]
        if scratch:
            m = f"validation_{study.metric}"
            cells.append("-" if r is scratch else f"{_points(study.metric, r[m], scratch[m]):+.1f}")
        body.append(cells)
    return header, body


def write_report(study: Any) -> tuple[Path, Path]:
    """study.json, plots/*.png, report.md and a self-contained report.html in the study folder."""
    rows = summarize(study)
    out = Path(study.output_dir)
    plots = write_plots(study, rows, out / PLOTS_DIR)
    advice = recommend(rows, study.metric)
    header, body = _table(study, rows)
    seeds = f"seed {study.seeds[0]}"
    if len(study.seeds) > 1:
        seeds = f"{len(study.seeds)} seeds ({', '.join(map(str, study.seeds))}), mean ± std"
    first = next((r.metrics for r in study.runs if r.metrics), None)
    data_line = (
        f"{first['data']['train_examples']} train / {first['data']['validation_examples']} validation examples "
        f"from `{first['data']['sources']['train']}`; base model `{first['base_model']}`"
        if first
        else ""
    )

    md = [f"# Strategy comparison: {study.task}", "", f"{data_line}. Same split, budget and {seeds}.", ""]
    md += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    md += ["| " + " | ".join(cells) + " |" for cells in body]
    best = best_record(study)
    per_class = []
    if best is not None:  # runs from before label shapes have no label_space
        problem = (best.metrics["data"].get("label_space") or {}).get("problem", "single_label")
        per_class = per_class_table(best.metrics.get("per_class"), problem)
    what = per_class[1].split(" (")[0] if per_class else ""  # "Per class", "Per label" or "Per target"
    if per_class:
        md += ["", f"## {what}: the best run ({best.strategy})", "", *per_class[2:]]
    md += ["", "## Recommendation", ""] + [f"- {line}" for line in advice] + ["", "## Plots", ""]
    md += [f"![{title}]({PLOTS_DIR}/{path.name})" for title, path in plots.items()]
    md += ["", "## Runs", ""]
    for r in study.runs:
        md.append(f"- `{r.strategy}` seed {r.seed}: `{r.run_dir}`" + (" (reused)" if r.reused else ""))
        if r.error:
            md[-1] += f" FAILED: {r.error}"
    report_md = out / "report.md"
    atomic_write_text(report_md, "\n".join(md) + "\n")

    def inline(text: str) -> str:  # the few markdown marks the advice uses
        text = html.escape(text)
        while "**" in text:
            text = text.replace("**", "<b>", 1).replace("**", "</b>", 1)
        while text.count("`") >= 2:
            text = text.replace("`", "<code>", 1).replace("`", "</code>", 1)
        return text

    images = "".join(
        f'<figure><img alt="{html.escape(t)}" src="data:image/png;base64,{base64.b64encode(p.read_bytes()).decode()}">'
        f"<figcaption>{html.escape(t)}</figcaption></figure>"
        for t, p in plots.items()
    )
    page = f"""<!doctype html><html><head><meta charset="utf-8"><title>hftl study: {html.escape(study.task)}</title>
<style>body{{font-family:system-ui,sans-serif;margin:2em;max-width:1200px}}table{{border-collapse:collapse}}
td,th{{border:1px solid #ccc;padding:4px 8px;text-align:right}}td:first-child,th:first-child{{text-align:left}}
figure{{display:inline-block;margin:1em}}img{{max-width:560px}}</style></head><body>
<h1>Strategy comparison: {html.escape(study.task)}</h1><p>{inline(data_line)}. Same split, budget and {html.escape(seeds)}.</p>
<table><tr>{"".join(f"<th>{html.escape(h)}</th>" for h in header)}</tr>
{"".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in cells) + "</tr>" for cells in body)}</table>
{_html_table(per_class[2:], f"{what}: the best run ({best.strategy})") if per_class else ""}
<h2>Recommendation</h2><ul>{"".join(f"<li>{inline(line)}</li>" for line in advice)}</ul>
<h2>Plots</h2>{images}</body></html>
"""
    report_html = out / "report.html"
    atomic_write_text(report_html, page)
    marker = out / STUDY_FILE
    info = json.loads(marker.read_text()) if marker.exists() else {}
    info.update({"metric": study.metric, "rows": rows, "recommendation": advice})
    info["runs"] = [{"strategy": r.strategy, "seed": r.seed, "run_dir": str(r.run_dir), "error": r.error} for r in study.runs]
    atomic_write_text(marker, json.dumps(info, indent=2))
    return report_md, report_html


def _html_table(markdown_rows: list[str], title: str) -> str:
    """A markdown table (header, rule, rows) as an HTML table under an h2."""
    cells = [[c.strip() for c in row.strip("|").split("|")] for row in markdown_rows if not row.startswith("|---")]
    head = "".join(f"<th>{html.escape(c)}</th>" for c in cells[0])
    body = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>" for row in cells[1:])
    return f"<h2>{html.escape(title)}</h2><table><tr>{head}</tr>{body}</table>"


def format_table(study: Any) -> str:
    """The report's table as aligned plain text, for the terminal."""
    header, body = _table(study, summarize(study))
    keep = [i for i, h in enumerate(header) if not h.startswith("test ")]
    header, body = [header[i] for i in keep], [[c[i] if i < len(c) else "" for i in keep] for c in body]
    widths = [max(len(h), *(len(c[i]) for c in body)) for i, h in enumerate(header)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(header, widths))]
    lines += ["  ".join(c.ljust(w) for c, w in zip(cells, widths)) for cells in body]
    return "\n".join(lines)
