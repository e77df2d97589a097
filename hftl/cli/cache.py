"""`hftl cache list|clear`: the feature cache folder (frozen-prefix features reused across runs).

Example:
    $ hftl cache list
    $ hftl cache clear --max-gb 5
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

HELP = "list or clear the feature cache (frozen-prefix features reused across runs)"


def add_parser(sub: Any) -> None:
    p = sub.add_parser("cache", help=HELP, description=HELP)
    p.add_argument("action", choices=["list", "clear"])
    p.add_argument("--dir", default=None, help="cache folder (default: $HFTL_FEATURE_CACHE or ~/.cache/hftl/features)")
    p.add_argument("--max-gb", type=float, default=None, help="clear: only least recently used entries, down to this size")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> None:
    from hftl.training.feature_cache import default_cache_dir
    from hftl.training.feature_cache.folder import entries, format_entries, prune

    root = Path(args.dir).expanduser() if args.dir else default_cache_dir()
    if args.action == "list":
        print(format_entries(entries(root), root))
        return
    # clear: everything, or down to --max-gb; by hand, so entries in use a moment ago go too.
    cap = int(args.max_gb * 2**30) if args.max_gb is not None else 0
    removed = prune(root, cap, min_idle_seconds=0.0)
    freed = sum(e.size_bytes for e in removed)
    left = entries(root)
    print(f"removed {len(removed)} entries ({freed / 2**30:.2f} GB); {len(left)} left in {root}")
