"""`hftl probe CONFIG --models M1,M2`: which model and which block transfer, scored on frozen features.

Example:
    $ hftl probe configs/text/minilm-vader-head-only.yaml --models builtin:all-minilm-l6-v2
"""

from __future__ import annotations

import argparse
from typing import Any

HELP = "which model and which block transfer: frozen features scored, no fine-tuning"


def add_parser(sub: Any) -> None:
    p = sub.add_parser("probe", help=HELP, description=HELP)
    p.add_argument("config", help="YAML config with the data (its model is replaced by each of --models)")
    p.add_argument("overrides", nargs="*", help="key=value, e.g. data.train=PATH output_dir=runs/probe")
    p.add_argument("--models", required=True, help="comma-separated checkpoints (paths, Hub ids, builtin:NAME)")
    p.add_argument("--study", default=None, help="a `hftl compare --models` folder: Kendall tau against its fine-tuned ranking")
    p.add_argument("--rank-by", default="logme", choices=["logme", "linear"], help="the score models are ranked by")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> None:
    from hftl.studies.probe import probe
    from hftl.studies.probe_report import ranking_table

    result = probe(args.config, args.models, overrides=args.overrides, study=args.study, rank_by=args.rank_by)
    header, rows = ranking_table(result)
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(header)]
    print("\n" + "  ".join(h.ljust(w) for h, w in zip(header, widths)))
    print("\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths)) for r in rows))
    for rank_key, tau in result.kendall_tau.items():
        print(f"Kendall tau ({rank_key} vs fine-tuned): {tau:+.2f}")
    print(f"\nreport: {result.report_md}  (self-contained: {result.report_html}); scores: {result.output_dir / 'probe.json'}")
