"""`hftl app RUN`: try a finished run in a browser (a Gradio page on 127.0.0.1, served until Ctrl-C).

Example:
    $ hftl app runs/vit-lora                   # http://127.0.0.1:7860
    $ hftl app runs/bert-full --port 8000
"""

from __future__ import annotations

import argparse
from typing import Any

HELP = "try a finished run in a browser: a Gradio page (needs the app extra)"


def add_parser(sub: Any) -> None:
    p = sub.add_parser("app", help=HELP, description=HELP)
    p.add_argument("run_dir")
    p.add_argument("--port", type=int, default=None, help="port to serve on (default: the first free one from 7860)")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)")
    p.add_argument("--share", action="store_true", help="also open a public gradio.live link (off unless given)")
    p.add_argument(
        "--onnx", nargs="?", const="", default=None, metavar="PATH",
        help="run the exported ONNX graph on onnxruntime (default RUN/onnx; see hftl export)",
    )  # fmt: skip
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> None:
    from hftl.runs.app import launch

    try:
        launch(args.run_dir, host=args.host, port=args.port, share=args.share, onnx=args.onnx)
    except KeyboardInterrupt:  # Ctrl-C is how the page is meant to stop: not an error
        print("hftl app: stopped")
