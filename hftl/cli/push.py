"""`hftl push RUN --repo-id OWNER/NAME [--space OWNER/NAME]`: upload a finished run (model, card, metrics) to
the Hugging Face Hub, and with `--space` a Gradio Space that loads it and serves the `hftl app` page.

Example:
    $ hftl push runs/vit-lora --repo-id me/vit-lora-digits --private
    $ hftl push runs/vit-lora --space me/vit-lora-digits          # model repo and Space, both me/vit-lora-digits
    $ hftl push runs/vit-lora --repo-id me/vit --space me/vit-demo --space-only   # the model is already up
"""

from __future__ import annotations

import argparse
from typing import Any

from hftl.config import check_repo_id
from hftl.utils.errors import HftlError

HELP = "upload a finished run (model, card, metrics) to the Hugging Face Hub, and optionally a Space that serves it"


def add_parser(sub: Any) -> None:
    p = sub.add_parser("push", help=HELP, description=HELP)
    p.add_argument("run_dir")
    p.add_argument("--repo-id", default=None, help="the model repo, OWNER/NAME; created if missing (default: --space's id)")
    p.add_argument("--private", action="store_true", help="create the repo (and the Space) private")
    p.add_argument("--adapter-only", action="store_true", help="LoRA runs: push adapter/ (load with peft on the base)")
    p.add_argument(
        "--space", default=None, metavar="OWNER/NAME",
        help="also push a Gradio Space that loads the model repo and serves the hftl app page",
    )  # fmt: skip
    p.add_argument("--space-only", action="store_true", help="push the Space only: the model repo is already on the Hub")
    p.add_argument("--endpoint", default=None, help="Hub URL (default: HF_ENDPOINT or huggingface.co)")
    p.set_defaults(func=run)


def _check(args: argparse.Namespace) -> str:
    """The model repo id; the flag combinations that cannot work are refused before anything is uploaded."""
    if not args.repo_id and not args.space:
        raise HftlError("hftl push needs --repo-id OWNER/NAME (the model repo), or --space OWNER/NAME")
    if args.space_only and not args.space:
        raise HftlError("--space-only pushes a Space; name it with --space OWNER/NAME")
    if args.space and args.adapter_only:
        raise HftlError(
            "a Space loads the whole model through transformers.pipeline, not a LoRA adapter; "
            "push the merged model (leave out --adapter-only) for a Space"
        )
    for repo in (args.repo_id, args.space):  # both checked before the first upload
        if repo:
            check_repo_id(repo)
    return args.repo_id or args.space


def run(args: argparse.Namespace) -> None:
    from hftl.runs.hub import files_to_push, push_run

    model_repo = _check(args)
    files_to_push(args.run_dir, args.adapter_only)  # a run that cannot be pushed is refused before any upload
    if not args.space_only:
        url = push_run(args.run_dir, model_repo, private=args.private, adapter_only=args.adapter_only, endpoint=args.endpoint)
        print(f"pushed {args.run_dir} to {model_repo}: {url}")
    if args.space:
        from hftl.runs.space import push_space

        url = push_space(args.run_dir, args.space, model_repo, private=args.private, endpoint=args.endpoint)
        print(f"pushed the Space {args.space} (loads {model_repo}): {url}")
