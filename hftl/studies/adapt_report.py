"""The adaptation part of a study report (`hftl compare --adapt`): per method and strategy, the target test (the
headline), what it gained over source-only, what it cost on the source, the shift before and after, and time;
negative transfer flagged, refused pairs listed with the reason.

Example:
    >>> adaptation_table(study, rows)[0]   # doctest: +SKIP
    '| adapt | strategy | target test accuracy | vs none (points) | source val accuracy | shift before -> after | ...'
"""

from __future__ import annotations

from typing import Any

from hftl.config import better

TITLE = "Domain adaptation: the target test"


def _source_only(rows: list[dict[str, Any]], row: dict[str, Any]) -> dict[str, Any] | None:
    """The same model and strategy without adaptation (adapt.method=none), if the study ran it and it finished."""
    return next(
        (r for r in rows if r.get("method") == "none" and r["model"] == row["model"] and r["strategy"] == row["strategy"]
         and "error" not in r),
        None,
    )  # fmt: skip


def _points(metric: str, a: float, b: float) -> float:
    return 100 * (a - b) if better(metric, 1.0, 0.0) else 100 * (b - a)


def adaptation_table(study: Any, rows: list[dict[str, Any]]) -> list[str]:
    """Markdown rows (header, rule, one per method x strategy); [] outside an adaptation study."""
    if not getattr(study, "methods", None):
        return []
    m = study.metric
    header = ["adapt", "strategy", f"target test {m}", "vs none (points)", f"source val {m}", "shift before -> after"]
    header += ["train time (s)", "note"]
    if study.models:
        header.insert(0, "model")
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for r in rows:
        first = ([r["model"]] if study.models else []) + [r["method"], r["strategy"]]
        if "error" in r:
            lines.append("| " + " | ".join([*first, "-", "-", "-", "-", "-", r["error"][:400]]) + " |")
            continue
        target, source = r.get(f"target_test_{m}"), r.get(f"validation_{m}")
        base = _source_only(rows, r)
        gain = "-"
        note = "source only" if r["method"] == "none" else "ok"
        if target is not None and base is not None and base is not r and base.get(f"target_test_{m}") is not None:
            points = _points(m, target, base[f"target_test_{m}"])
            gain = f"{points:+.1f}"
            note = "negative transfer: below source only" if points < 0 else note
        shift = f"{r['shift_before']:.2f} -> {r['shift_after']:.2f}" if "shift_after" in r and "shift_before" in r else "-"
        cells = [*first, _fmt(target), gain, _fmt(source), shift, f"{r['train_seconds']:.1f}", note]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def adaptation_advice(study: Any, rows: list[dict[str, Any]]) -> list[str]:
    """The recommendation's first lines in an adaptation study: the best arm on the target test, and against source only."""
    if not getattr(study, "methods", None):
        return []
    key = f"target_test_{study.metric}"
    done = [r for r in rows if key in r]
    if not done:
        return ["No run measured the target test: give data.target_test (labelled target data) to compare the methods on it."]
    best = done[0]
    for r in done[1:]:
        best = r if better(study.metric, r[key], best[key]) else best
    base = _source_only(rows, best)
    lines = [f"**Best on the target test: `{best['arm']}`** ({best[key]:.4f}, {best['train_seconds']:.0f} s of training)."]
    if best.get("method") == "none":
        lines[0] += " No adaptation method beat training on the source alone here."
    elif base is not None and key in base:
        lines[0] += f" Source only (`{base['arm']}`): {base[key]:.4f}, {_points(study.metric, best[key], base[key]):+.1f} points."
    negative = [r["arm"] for r in done if (b := _source_only(rows, r)) is not None and b is not r and key in b
                and better(study.metric, b[key], r[key])]  # fmt: skip
    if negative:
        lines.append("Negative transfer (below source only on the target test): " + ", ".join(f"`{a}`" for a in negative) + ".")
    refused = [r["arm"] for r in rows if str(r.get("error", "")).startswith("refused")]
    if refused:
        lines.append("Refused before training (the table says why): " + ", ".join(f"`{a}`" for a in refused) + ".")
    return lines


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.4f}"
