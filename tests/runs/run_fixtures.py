"""Tiny trained runs for the tests of what a finished run is used for (`hftl export`, `hftl app`), and a page
served in this process.

`train` makes a 1-epoch run of any task; `text_case` the text runs of each label shape (single-label, text
pairs, multi-label, regression, LoRA, token tagging) with two inputs to predict; `whisper_case` a tiny Whisper
run; `serving` launches a
`gr.Blocks` (`hftl.runs.app.build_app`) on a free loopback port in a thread, as `hftl app` would serve it.

Example:
    >>> run, data, inputs = text_case(tmp_path, tiny_bert, "pairs")   # doctest: +SKIP
"""

from __future__ import annotations

import random
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import yaml

from tests.conftest import run_cli
from tests.text_data import sentiment_rows, tagging_rows, write_jsonl

TEXT_KINDS = ("text", "pairs", "multi-label", "regression", "lora", "tokens")


def train(root: Path, task: str, model: Path, data: Path, *overrides: str) -> Path:
    """A 1-epoch run (the weights need not be good: the tests compare two ways of running the same model)."""
    config = {
        "task": task,
        "model": {"name_or_path": str(model)},
        "data": {"train": str(data), "validation_split": 0.25, "augment": False},
        "train": {"epochs": 1, "batch_size": 8, "report_to": "none", "learning_rate": 1e-3},
    }
    root.mkdir(parents=True, exist_ok=True)
    (root / "c.yaml").write_text(yaml.safe_dump(config))
    run_cli("train", str(root / "c.yaml"), f"output_dir={root / 'run'}", *overrides, in_process=True)
    return root / "run"


def text_case(tmp: Path, tiny_bert: Path, kind: str) -> tuple[Path, Path, list[str]]:
    """A tiny BERT run of `kind` (one of TEXT_KINDS), its data file and two inputs to predict."""
    rows = sentiment_rows(32)
    if kind == "pairs":
        rows = [{"text": a["text"], "second": b["text"], "label": a["label"]} for a, b in zip(rows, sentiment_rows(32, seed=3))]
        extra = ["data.text_pair_column=second"]
    elif kind == "multi-label":
        rows = [{"text": r["text"], "tags": [r["label"]] + (["long"] if len(r["text"]) > 20 else [])} for r in rows]
        extra = ["data.label_column=tags"]
    elif kind == "regression":
        rows = [{"text": r["text"], "score": len(r["text"]) / 10 + random.Random(i).random()} for i, r in enumerate(rows)]
        extra = ["data.label_column=score", "data.problem=regression"]
    else:
        extra = ["strategy=lora"] if kind == "lora" else []
    data = write_jsonl(tmp / "data.jsonl", rows)
    task = "text-classification"
    if kind == "tokens":
        task, data = "token-classification", write_jsonl(tmp / "tags.jsonl", tagging_rows(32))
    run = train(tmp, task, tiny_bert, data, *extra)
    return run, data, ["good film and a nice plot", "alice visited new york"]


def whisper_case(root: Path) -> tuple[Path, str]:
    """A 1-epoch run of a tiny Whisper (encoder-decoder speech recognition) on 12 tone words, and one clip."""
    from tests.audio_fixtures import write_tone_sequences
    from tests.whisper_fixtures import save_tiny_whisper

    words = write_tone_sequences(root / "words", n=12)
    whisper = save_tiny_whisper(root / "tiny-whisper")
    overrides = ("data.language=en", "train.generation_max_length=8", "train.batch_size=4")
    return train(root, "speech-recognition", whisper, words, *overrides), str(words.parent / "clips" / "0.wav")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def serving(demo: Any) -> Iterator[str]:
    """`demo` (a `gr.Blocks`) served on 127.0.0.1 at a free port from a thread of this process, as `hftl app`
    launches it (queue on, no share link); its URL while the block runs, closed after."""
    port = free_port()
    demo.queue().launch(
        server_name="127.0.0.1", server_port=port, share=False, inbrowser=False, quiet=True, prevent_thread_lock=True
    )
    try:
        yield f"http://127.0.0.1:{port}/"
    finally:
        demo.close()
