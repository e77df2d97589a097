"""The shift's verdict and report: which blocks see the domain shift and what it suggests, shift.md and shift.png.

The verdict reads the A-distance curve at its two ends, the lowest block (`bottom`) and the last (`top`):

- every block below `ALIKE` (0.5: the domain classifier errs on more than 37.5% of held-out examples): the
  domains look alike to this model, and adaptation has little to remove;
- `bottom` at or above `HIGH` (1.2: it errs on at most 20%, so it tells 4 of 5 examples' domain from the
  lowest block's features already): a statistics-level, low-level shift (colour, brightness, noise, recording
  conditions, spelling): AdaBN is the cheap first try (`low_level`); where the curve also climbs more than
  `FLAT` (0.4) to the top, a backbone-training method is named as the next step;
- `top` at or above `HIGH` and at least `RISE` (0.5) above `bottom`: the top blocks separate the domains, which
  a method that trains the backbone addresses (`top_blocks`);
- anything else is a `moderate` shift, and the advice follows the curve's slope.

With a few dozen examples each value is uncertain by ±0.2 or more (`ADistance.uncertainty`): where a value lies
that close to a threshold the verdict says so, and that more target inputs would settle it.

Example:
    >>> read_shift([1.9, 1.8, 1.9], batchnorm=True, held_out=400)[0]
    'low_level'
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from hftl.utils.files import atomic_write_text

ALIKE = 0.5  # every block below: the domains look alike
HIGH = 1.2  # a block at or above: a linear boundary tells the domains apart
RISE = 0.5  # top - bottom at least this: the distance grows with depth
FLAT = 0.4  # top within this of bottom: roughly flat
NOISY = 0.15  # an uncertainty above this gets a note (fewer than ~180 held-out examples)
BACKBONE = "adapt.method=dann or adapt.method=coral with strategy.name=full, freeze or lora, or adapt.method=self_training"


def read_shift(distances: list[float], batchnorm: bool, held_out: int) -> tuple[str, str]:
    """(kind, verdict): the kind of shift the A-distances (block 1 first) show, and what to try, in words.

    Example:
        >>> kind, verdict = read_shift([0.2, 0.6, 1.7], batchnorm=False, held_out=400)
        >>> kind, verdict.startswith("The top blocks separate the domains")
        ('top_blocks', True)
    """
    bottom, top, peak = distances[0], distances[-1], max(distances)
    at, last = distances.index(peak) + 1, len(distances)
    if peak < ALIKE:
        kind = "alike"
        text = (
            f"The domains look alike to this model: the A-distance stays below {ALIKE} at every block (highest "
            f"{peak:.2f}, block {at}). Adaptation has little to remove; a source-only run is the baseline to beat, "
            "and where the target still scores worse, its labels rather than its inputs may differ."
        )
    elif bottom >= HIGH:
        kind = "low_level"
        text = f"A low-level, statistics-level shift: the A-distance is already {bottom:.2f} at block 1"
        if top < bottom - FLAT:
            text += f"; the upper blocks remove part of it (block {last}: {top:.2f}). " + _adabn(batchnorm)
        elif top > bottom + FLAT:
            text += f" and grows to {top:.2f} at block {last}. " + _adabn(batchnorm)
            text += f" Where it leaves the target behind, the top blocks need adapting too: {BACKBONE}."
        else:
            text += f" and stays high up to block {last} ({top:.2f}). " + _adabn(batchnorm)
    elif top >= HIGH and top - bottom >= RISE:
        kind = "top_blocks"
        text = (
            f"The top blocks separate the domains: the A-distance rises from {bottom:.2f} at block 1 to {top:.2f} at "
            f"block {last}, so the features the head reads are domain-specific. Adapt the backbone: {BACKBONE}."
        )
    else:
        kind = "moderate"
        text = f"A moderate shift: the A-distance peaks at {peak:.2f} (block {at}) and is {top:.2f} at block {last}. "
        if top - bottom >= RISE:
            text += f"It grows with depth, so a method that trains the backbone is the likelier help: {BACKBONE}."
        else:
            text += _adabn(batchnorm) + f" If the target still lags, {BACKBONE}."
    uncertainty = 2.0 / max(held_out, 1) ** 0.5  # at its widest (domain error near 0.5)
    if uncertainty > NOISY and any(abs(d - t) < uncertainty for d in distances for t in (ALIKE, HIGH)):
        text += (
            f" Few examples: each value rests on {held_out} held-out examples and is uncertain by up to "
            f"±{uncertainty:.2f}; more target inputs give a firmer reading."
        )
    return kind, text


def short_name(name: str) -> str:
    """A checkpoint's or data source's last path part; a run's `model/` keeps its run's name.

    Example:
        >>> short_name("runs/vit-dann/model"), short_name("google/vit-base-patch16-224")
        ('vit-dann/model', 'vit-base-patch16-224')
    """
    path = Path(name)
    return f"{path.parent.name}/{path.name}" if path.name == "model" and path.parent.name else path.name or name


def _adabn(batchnorm: bool) -> str:
    if batchnorm:
        return "AdaBN (adapt.method=adabn: BatchNorm statistics re-estimated on the target) is the cheap first try."
    return (
        "AdaBN (adapt.method=adabn) would be the cheap first try, but this model has no BatchNorm layers for it to "
        "re-estimate: try adapt.method=coral (feature statistics aligned while the backbone trains: strategy.name=full, "
        "freeze or lora)."
    )


def shift_table(result: Any) -> tuple[list[str], list[list[str]]]:
    """(header, rows) of the measurement, block 1 first.

    Example:
        >>> shift_table(result)[0]  # doctest: +SKIP
        ['block', 'A-distance', '±', 'domain error']
    """
    header = ["block", "A-distance", "±", "domain error"]
    rows = [[str(b.block), f"{b.a_distance:.3f}", f"{b.uncertainty:.2f}", f"{b.domain_error:.3f}"] for b in result.blocks]
    return header, rows


def write_shift_report(result: Any) -> tuple[Path, Path]:
    """shift.md and shift.png in the shift's folder.

    Example:
        >>> md, png = write_shift_report(result)  # doctest: +SKIP
    """
    out = Path(result.output_dir)
    plot = _plot(result, out / "shift.png")
    header, rows = shift_table(result)
    ex = result.examples
    md = [
        f"# Domain shift: {result.source} -> {result.target}",
        "",
        f"Model `{result.model}`, frozen; {ex['source']} source (data.train, training split) and {ex['target']} target "
        f"(data.target) examples, {ex.get('per_domain', 0)} of each used (the larger domain subsampled). At every block, "
        "a linear classifier learns which domain an example's pooled features come from on one half and is scored on "
        "the other; the proxy A-distance is 2 x (1 - 2 x its error): 0 when the block sees no difference, 2 when a "
        "linear boundary separates the domains.",
        "",
        "| " + " | ".join(header) + " |",
        "|" + "---|" * len(header),
        *("| " + " | ".join(r) + " |" for r in rows),
        "",
        "## Verdict",
        "",
        result.verdict,
        "",
        "## A-distance against depth",
        "",
        f"![A-distance against depth]({plot.name})",
        "",
    ]
    report = out / "shift.md"
    atomic_write_text(report, "\n".join(md))
    return report, plot


def _plot(result: Any, path: Path) -> Path:
    """A-distance against block (with about one standard error), the alike and high bands shaded."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    depth = [b.block for b in result.blocks]
    fig, ax = plt.subplots(figsize=(7, 4.6))
    ax.axhspan(0, ALIKE, color="tab:green", alpha=0.08, label=f"alike (< {ALIKE})")
    ax.axhspan(HIGH, 2.05, color="tab:red", alpha=0.08, label=f"separable (>= {HIGH})")
    ax.errorbar(depth, [b.a_distance for b in result.blocks], yerr=[b.uncertainty for b in result.blocks],
                marker="o", capsize=3, label="proxy A-distance")  # fmt: skip
    ax.set(xlabel="block (1 = lowest)", ylabel="proxy A-distance", ylim=(-0.05, 2.05),
           title=f"{short_name(result.source)} -> {short_name(result.target)}: {short_name(result.model)}")  # fmt: skip
    ax.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
    ax.grid(alpha=0.3)
    ax.set_xlim(0.5, len(depth) + 0.5)
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.16), ncol=3, frameon=False)  # below: never over a point
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
