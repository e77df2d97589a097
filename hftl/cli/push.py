"""`hftl push RUN --repo-id OWNER/NAME`: upload a finished run (model, card, metrics) to the Hugging Face Hub.

Example:
    $ hftl push runs/vit-lora --repo-id me/vit-lora-digits --private
"""

from __future__ import annotations

import argparse
from typing import Any

HELP = "upload a finished run (model, card, metrics) to the Hugging Face Hub"


def add_parser(sub: Any) -> None:
    p = sub.add_parser("push", help=HELP, description=HELP)
    p.add_argument("run_dir")
    p.add_argument("--repo-id", required=True, help="OWNER/NAME; created if missing")
    p.add_argument("--private", action="store_true", help="create the repo private")
    p.add_argument("--adapter-only", action="store_true", help="LoRA runs: push adapter/ (load with peft on the base)")
    p.add_argument("--endpoint", default=None, help="Hub URL (default: HF_ENDPOINT or huggingface.co)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> None:
    from hftl.runs.hub import push_run

    url = push_run(args.run_dir, args.repo_id, private=args.private, adapter_only=args.adapter_only, endpoint=args.endpoint)
    print(f"pushed {args.run_dir} to {args.repo_id}: {url}")
