"""What a study's numbers can and cannot tell apart: intervals on every row's metrics, the paired comparisons of
study.json, the winner (or the indistinguishable set) the recommendation starts from, per-fold results and the
label-budget curve's verdict on scratch.

Example:
    >>> stats = study_statistics(study, rows)        # doctest: +SKIP
    >>> stats.comparisons[0]["verdict"]              # doctest: +SKIP
    'a better'
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

from hftl.config import LOWER_IS_BETTER
from hftl.studies.paired import (
    CONFIDENCE,
    POOLING,
    RESAMPLES,
    Draws,
    Scored,
    all_comparisons,
    arm_interval,
    bootstrap,
    verdict_between,
)

SPLITS = ("validation", "target_test")  # what is resampled: every run scores the same examples of these


@dataclass
class StudyStatistics:
    comparisons: list[dict[str, Any]] = field(default_factory=list)
    method: str = ""  # how the intervals were made, for the report
    missing: list[str] = field(default_factory=list)  # arms without per-example tables (runs from before them)


def study_statistics(study: Any, rows: list[dict[str, Any]], resamples: int = RESAMPLES) -> StudyStatistics:
    """Bootstrap the study's runs: add `<split>_<metric>_ci` [low, high] to the rows and return the comparisons of
    the study metric between arms of the same label budget (validation; the target test too in adaptation studies)."""
    stats = StudyStatistics(method=POOLING.format(resamples=f"{resamples:,}") + f"; {CONFIDENCE:.0%} intervals")
    by_arm = {r["arm"]: r for r in rows if "error" not in r}
    for split in SPLITS:
        scored = [
            Scored(r.arm, r.block, r.tables[split])
            for r in study.runs
            if r.metrics and r.tables and split in r.tables and r.arm in by_arm
        ]
        if split == "validation":
            stats.missing = sorted({r.arm for r in study.runs if r.metrics and not (r.tables and split in r.tables)})
        if not scored:
            continue
        metrics = sorted({k[len(split) + 1 :] for row in by_arm.values() for k in row if _is_metric(k, split)})
        draws = bootstrap(scored, metrics, resamples=resamples)
        for arm, row in by_arm.items():
            for m in metrics:
                found = arm_interval(draws, arm, m)
                if found is not None:
                    row[f"{split}_{m}_ci"] = [found[1], found[2]]
        stats.comparisons += _comparisons(study, draws, by_arm, split)
    return stats


def _is_metric(key: str, split: str) -> bool:
    return key.startswith(f"{split}_") and not key.endswith(("_std", "_ci")) and not key.endswith("_loss")


def _comparisons(study: Any, draws: Draws, by_arm: dict[str, dict[str, Any]], split: str) -> list[dict[str, Any]]:
    """Every pair of arms with the same label budget, on the study metric of `split`."""
    groups: dict[Any, list[str]] = defaultdict(list)
    for arm, row in by_arm.items():
        groups[row.get("train_size")].append(arm)
    found = []
    for size, arms in groups.items():
        for c in all_comparisons(draws, arms, study.metric, study.metric in LOWER_IS_BETTER):
            found.append({**c, "split": split, **({"train_size": size} if size else {})})
    return found


def scratch_row(rows: list[dict[str, Any]], row: dict[str, Any]) -> dict[str, Any] | None:
    """The scratch row of `row`'s model, adaptation method and label budget (the same architecture from random
    init, trained on the same data), if the study ran one."""
    same = ("model", "method", "train_size")
    return next((r for r in rows if r["strategy"] == "scratch" and all(r.get(k) == row.get(k) for k in same)), None)


def settle_negative_transfer(rows: list[dict[str, Any]], comparisons: list[dict[str, Any]]) -> None:
    """A row below scratch is flagged as negative transfer only when the paired comparison says scratch is better
    beyond the noise; within it (or without a comparison of the two: older runs) the point estimates decide."""
    validation = [c for c in comparisons if c["split"] == "validation"]
    for row in rows:
        if not row.get("below_scratch"):
            continue
        scratch = scratch_row(rows, row)
        c = verdict_between(validation, row["arm"], scratch["arm"]) if scratch is not None else None
        if c is not None and c["verdict"] != "b better":
            del row["below_scratch"]


def indistinguishable_from(
    best: dict[str, Any], rows: list[dict[str, Any]], comparisons: list[dict[str, Any]]
) -> list[dict[str, Any]] | None:
    """The rows the best row cannot be told apart from on validation (the best first), or None where the study has
    no comparison of the best (no per-example tables)."""
    mine = [c for c in comparisons if c["split"] == "validation" and best["arm"] in (c["a"], c["b"])]
    if not mine:
        return None
    tied = {c["b"] if c["a"] == best["arm"] else c["a"] for c in mine if c["verdict"] == "indistinguishable"}
    return [best] + [r for r in rows if r["arm"] in tied]


def fold_table(study: Any, rows: list[dict[str, Any]]) -> list[str]:
    """Markdown rows: the study metric of every arm on every fold (--folds), with the mean and std."""
    if not study.folds:
        return []
    header = ["arm", *(f"fold {k}" for k in range(study.folds)), "mean", "std"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in rows:
        if "error" in row:
            continue
        cells = []
        for k in range(study.folds):
            values = [
                r.metrics["validation"].get(study.metric) for r in study.runs if r.arm == row["arm"] and r.fold == k and r.metrics
            ]
            values = [v for v in values if v is not None]
            cells.append(f"{sum(values) / len(values):.4f}" if values else "-")
        mean, std = row.get(f"validation_{study.metric}"), row.get(f"validation_{study.metric}_std")
        lines.append("| " + " | ".join([row["arm"], *cells, _num(mean), _num(std)]) + " |")
    return lines


def curve_verdicts(study: Any, rows: list[dict[str, Any]], comparisons: list[dict[str, Any]]) -> list[str]:
    """Per pretrained strategy: at which label budgets its lead over scratch (same model and method) is beyond the
    noise, and from which budget on it falls inside it."""
    if not study.sizes:
        return []
    lines = []
    arms = ((r["model"], r["method"], r["strategy"]) for r in rows if r["strategy"] != "scratch" and "error" not in r)
    pretrained = list(dict.fromkeys(arms))  # the study's order
    for model, method, strategy in pretrained:
        beyond, inside, worse = [], [], []
        for size in study.sizes:
            arm = _arm(rows, model, method, strategy, size)
            scratch = _arm(rows, model, method, "scratch", size)
            c = _between(comparisons, arm, scratch)
            if c is None:
                continue
            {"a better": beyond, "b better": worse}.get(c["verdict"], inside).append((size, c))
        if not beyond and not inside and not worse:
            continue
        name = " / ".join(p for p in (model, method, strategy) if p)
        text = f"`{name}` against scratch: "
        text += (
            f"better beyond the noise at {', '.join(str(s) for s, _ in beyond)} labels"
            if beyond
            else "never better beyond the noise"
        )
        if inside:
            first = min(s for s, _ in inside)
            guessed = [s for s, _ in inside if _row(rows, model, method, strategy, s).get("chance")]
            text += f"; inside the noise at {', '.join(str(s) for s, _ in inside)} labels"
            text += f" (at {', '.join(map(str, guessed))} it never left chance: not trained enough to tell)" if guessed else ""
            if all(s >= first for s, _ in inside) and beyond and max(s for s, _ in beyond) < first:
                text += f": from {first} labels on, pretraining no longer matters measurably here"
        if worse:
            text += f"; **worse than scratch** at {', '.join(str(s) for s, _ in worse)} labels (negative transfer)"
        lines.append(text + ".")
    return lines


def _row(rows: list[dict[str, Any]], model: Any, method: Any, strategy: str, size: int) -> dict[str, Any]:
    which = (model, method, strategy, size)
    return next((r for r in rows if (r["model"], r["method"], r["strategy"], r.get("train_size")) == which), {"error": "-"})


def _arm(rows: list[dict[str, Any]], model: Any, method: Any, strategy: str, size: int) -> str | None:
    row = _row(rows, model, method, strategy, size)
    return None if "error" in row else row["arm"]


def _between(comparisons: list[dict[str, Any]], a: str | None, b: str | None) -> dict[str, Any] | None:
    if a is None or b is None:
        return None
    return verdict_between([c for c in comparisons if c["split"] == "validation"], a, b)


def _num(value: float | None) -> str:
    return "-" if value is None else f"{value:.4f}"


def comparison_table(comparisons: list[dict[str, Any]]) -> list[str]:
    """Markdown rows of the paired comparisons: difference, interval, p-value, verdict (winner in bold)."""
    if not comparisons:
        return []
    sizes = any("train_size" in c for c in comparisons)
    splits = len({c["split"] for c in comparisons}) > 1
    header = [*(["split"] if splits else []), *(["labels"] if sizes else []), "a", "b", "a - b", "95% interval"]
    lines = ["| " + " | ".join([*header, "p", "verdict"]) + " |", "|" + "---|" * (len(header) + 2)]
    for c in comparisons:
        verdict = {"a better": f"**{c['a']}** better", "b better": f"**{c['b']}** better"}.get(c["verdict"], c["verdict"])
        cells = [*([c["split"]] if splits else []), *([str(c.get("train_size", "-"))] if sizes else [])]
        cells += [c["a"], c["b"], f"{c['difference']:+.4f}", f"[{c['ci_low']:+.4f}, {c['ci_high']:+.4f}]"]
        lines.append("| " + " | ".join([*cells, f"{c['p_value']:.3g}", verdict]) + " |")
    return lines


def write_curve_plot(study: Any, rows: list[dict[str, Any]], folder: Any) -> dict[str, Any]:
    """plots/label_budget.png: validation metric against the labels used (log x), a line per arm, 95% intervals."""
    import matplotlib

    matplotlib.use("Agg")  # files only, also headless in CI
    import matplotlib.pyplot as plt

    folder.mkdir(parents=True, exist_ok=True)
    key = f"validation_{study.metric}"
    lines: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for r in rows:
        if key in r and "train_size" in r:
            lines[" / ".join(p for p in (r["model"], r["method"], r["strategy"]) if p)].append(r)
    fig, ax = plt.subplots(figsize=(7, 4.4))
    for name, points in lines.items():
        xs = [p["train_size"] for p in points]
        ys = [p[key] for p in points]
        cis = [p.get(f"{key}_ci") or [y, y] for p, y in zip(points, ys)]
        err = [[y - lo for y, (lo, _) in zip(ys, cis)], [hi - y for y, (_, hi) in zip(ys, cis)]]
        ax.errorbar(xs, ys, yerr=err, marker="o", capsize=3, label=name)
    ax.set_xscale("log")
    ax.set(xlabel="training labels used", ylabel=f"validation {study.metric}", title=f"Label budget: validation {study.metric}")
    ax.set_xticks(study.sizes, [str(n) for n in study.sizes])
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    path = folder / "label_budget.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return {f"Label budget: validation {study.metric} (95% intervals)": path}
