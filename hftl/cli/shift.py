"""`hftl shift CONFIG_OR_RUN`: how far data.target lies from data.train at every block, and what to try about it.

Example:
    $ hftl shift configs/vision/vit-head-only.yaml data.train=photos/ data.target=sketches/
    $ hftl shift runs/vit-dann --output runs/vit-dann-shift
"""

from __future__ import annotations

import argparse
from typing import Any

HELP = "how far the target domain lies from the source at every block (proxy A-distance), and what to try"


def add_parser(sub: Any) -> None:
    p = sub.add_parser("shift", help=HELP, description=HELP)
    p.add_argument(
        "config", metavar="CONFIG_OR_RUN",
        help="YAML config with data.train and data.target, or a finished run folder (its config and fine-tuned model/)",
    )  # fmt: skip
    p.add_argument("overrides", nargs="*", help="key=value, e.g. data.target=PATH model.name_or_path=ID")
    p.add_argument(
        "--output", default=None, metavar="DIR",
        help="folder for shift.json, shift.md and shift.png (default: the config's output_dir + '-shift', or RUN/shift/)",
    )  # fmt: skip
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> None:
    from hftl.studies.shift import SHIFT_FILE, run_shift
    from hftl.studies.shift_report import shift_table

    result = run_shift(args.config, args.overrides, args.output)
    header, rows = shift_table(result)
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(header)]
    print("\n" + "  ".join(h.ljust(w) for h, w in zip(header, widths)))
    print("\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths)) for r in rows))
    print(f"\n{result.verdict}")
    print(f"\nreport: {result.report_md}  (plot: {result.plot}); distances: {result.output_dir / SHIFT_FILE}")
