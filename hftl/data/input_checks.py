"""Checking every input file before training: in parallel, a chunk of the column at a time, remembered.

Decoding 10,000 JPEGs one by one took a minute before each run, each resume and each strategy of a study.
Here the files are checked by a thread pool (PIL and soundfile decode outside the GIL), the column is read
a chunk at a time (an embedded-bytes column never sits whole in memory), and each verdict is remembered
in `~/.cache/hftl/input-checks.sqlite` under the file's path, size and modification time (embedded
bytes: their hash) and the check's kind, so a re-run asks the database instead of the decoder.
`data.check_inputs`: `full` (decode every input), `header` (open it and read its header only), `off`.

Example:
    >>> verdicts = check_column(ds, "image", IMAGE_CHECK, "full")   # doctest: +SKIP
    >>> [i for i, problem in enumerate(verdicts) if problem]      # doctest: +SKIP
    [17]
"""

from __future__ import annotations

import hashlib
import os
import sqlite3
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

CHUNK = 1024  # rows read from the column at a time
VERSION = 1  # bump when a check's verdicts change meaning: older remembered verdicts are then ignored


@dataclass(frozen=True)
class InputCheck:
    """One modality's checks: `full` decodes an input, `header` only opens it; each returns a problem or None."""

    kind: str
    full: Callable[[Any], str | None]
    header: Callable[[Any], str | None]

    def run(self, mode: str) -> Callable[[Any], str | None]:
        return self.full if mode == "full" else self.header


def check_root() -> Path:
    """Where verdicts are remembered: beside the feature cache (`$HFTL_FEATURE_CACHE`'s parent, else ~/.cache/hftl)."""
    if os.environ.get("HFTL_FEATURE_CACHE"):
        return Path(os.environ["HFTL_FEATURE_CACHE"]).expanduser().parent
    return Path(os.environ.get("XDG_CACHE_HOME", "~/.cache")).expanduser() / "hftl"


def identity(value: Any) -> str | None:
    """What a verdict is remembered under: path + size + mtime, or the embedded bytes' hash; None: not remembered."""
    if isinstance(value, dict):
        if value.get("bytes"):
            return "bytes:" + hashlib.blake2b(value["bytes"], digest_size=16).hexdigest()
        value = value.get("path")
    if not isinstance(value, (str, Path)):
        return None
    try:
        stat = os.stat(value)
    except OSError:
        return None  # missing: checked (cheaply) every time, so a file that appears later is seen
    return f"file:{os.path.abspath(value)}:{stat.st_size}:{stat.st_mtime_ns}"


class _Memory:
    """The remembered verdicts (sqlite, safe for several processes); every failure just means "not remembered"."""

    def __init__(self, kind: str, mode: str) -> None:
        self.prefix = f"{VERSION}:{kind}:{mode}:"
        self.db: sqlite3.Connection | None = None
        try:
            check_root().mkdir(parents=True, exist_ok=True)
            self.db = sqlite3.connect(check_root() / "input-checks.sqlite", timeout=30)
            self.db.execute("CREATE TABLE IF NOT EXISTS verdicts (key TEXT PRIMARY KEY, problem TEXT)")
        except sqlite3.Error:
            self.db = None

    def get(self, keys: list[str]) -> dict[str, str | None]:
        if self.db is None or not keys:
            return {}
        found: dict[str, str | None] = {}
        try:
            for start in range(0, len(keys), 500):
                part = [self.prefix + k for k in keys[start : start + 500]]
                marks = ",".join("?" * len(part))
                rows = self.db.execute(f"SELECT key, problem FROM verdicts WHERE key IN ({marks})", part)  # noqa: S608
                found.update({key[len(self.prefix) :]: problem for key, problem in rows})
        except sqlite3.Error:
            return {}
        return found

    def put(self, verdicts: dict[str, str | None]) -> None:
        if self.db is None or not verdicts:
            return
        try:
            with self.db:
                rows = [(self.prefix + k, v) for k, v in verdicts.items()]
                self.db.executemany("INSERT OR REPLACE INTO verdicts VALUES (?, ?)", rows)
        except sqlite3.Error:
            pass

    def close(self) -> None:
        if self.db is not None:
            self.db.close()


def column_chunks(ds: Any, column: str) -> Iterator[tuple[int, list[Any]]]:
    """(first row, values) of `column`, CHUNK rows at a time: the column never sits whole in memory."""
    only = ds.select_columns([column])
    for start in range(0, len(ds), CHUNK):
        yield start, only[start : start + CHUNK][column]


def check_column(ds: Any, column: str, check: InputCheck, mode: str, desc: str = "checking inputs") -> list[str | None]:
    """Each row's problem (None: usable), checked in parallel and remembered; `mode` full or header.

    Example:
        >>> check_column(ds, "audio", audio_check, "header")   # doctest: +SKIP
        [None, 'file not found', None]
    """
    if mode == "off":  # trusted: only empty cells, which need no file
        return [f"no {check.kind} (empty cell)" if v is None else None for _, vs in column_chunks(ds, column) for v in vs]
    run, memory = check.run(mode), _Memory(check.kind, mode)
    workers = max(1, min(16, os.cpu_count() or 1))
    verdicts: list[str | None] = []
    bar = tqdm(total=len(ds), desc=desc, leave=False, unit="input", disable=len(ds) < 256)
    try:
        with ThreadPoolExecutor(workers) as pool:
            for _, values in column_chunks(ds, column):
                keys = [identity(v) for v in values]
                known = memory.get([k for k in keys if k is not None])
                todo = [i for i, k in enumerate(keys) if k is None or k not in known]
                fresh = dict(zip(todo, pool.map(run, [values[i] for i in todo])))
                memory.put({keys[i]: fresh[i] for i in todo if keys[i] is not None})
                verdicts += [fresh[i] if i in fresh else known[keys[i]] for i in range(len(values))]
                bar.update(len(values))
    finally:
        bar.close()
        memory.close()
    return verdicts
