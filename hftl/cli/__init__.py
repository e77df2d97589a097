"""The `hftl` command (also `python -m hftl`): one module per subcommand, each with `add_parser` and `run`.

Example:
    $ hftl train configs/vision/vit-lora.yaml data.train=digits/ output_dir=runs/vit-lora
    $ hftl predict runs/vit-lora cat.png dog.jpg
    $ hftl compare configs/text/bert-full.yaml --strategies scratch,head_only,lora,full data.train=reviews.csv
    $ hftl demo
"""

from __future__ import annotations

import argparse
import os
import sys

from hftl.cli import app, cache, compare, demo, evaluate, export, predict, probe, push, search, shift, train
from hftl.utils.errors import HftlError

# In the order `hftl --help` lists them.
COMMANDS = (train, evaluate, predict, export, app, push, compare, probe, shift, search, cache, demo)


def build_parser() -> argparse.ArgumentParser:
    """The whole `hftl` parser: every subcommand's arguments (the docs' CLI reference is generated from it)."""
    parser = argparse.ArgumentParser(prog="hftl", description="Transfer learning on the Hugging Face stack.")
    parser.add_argument("--debug", action="store_true", help="show full tracebacks for errors")
    sub = parser.add_subparsers(dest="command", required=True)
    for command in COMMANDS:
        command.add_parser(sub)
    return parser


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Parse a command line as `hftl` does: `key=value` overrides may also come after the options."""
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if extra and hasattr(args, "overrides") and all("=" in e and not e.startswith("-") for e in extra):
        args.overrides = [*args.overrides, *extra]
    elif extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        args.func(args)
    except HftlError as e:
        if args.debug or os.environ.get("HFTL_DEBUG"):
            raise
        print(f"hftl: error: {e}", file=sys.stderr)
        return getattr(e, "exit_code", 2)  # 128 + the signal for a run stopped by SIGTERM / SIGINT
    except KeyboardInterrupt:
        print("hftl: interrupted; resume with resume=true", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
