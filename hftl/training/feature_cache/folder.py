"""The feature cache folder: what it holds, and keeping it under a size cap (least recently used first).

Each entry is one split's features for one frozen prefix (`<root>/<key>/`, see `hftl.training.feature_cache`).
A run touches an entry's `meta.json` when it uses it, so the file's mtime is the entry's last use.
After a fill, the runs prune the folder to `train.feature_cache_max_gb`; `hftl cache` lists and clears
it by hand. Entries used in the last hour are never pruned automatically: another run may be reading
them (a deleted entry stays readable to a run that already mapped it, but one about to open it would
have to fill it again).

Example:
    >>> for entry in entries(default_cache_dir()):  # doctest: +SKIP
    ...     print(entry.key, entry.size_bytes, entry.split)
    >>> prune(default_cache_dir(), max_bytes=10 * 2**30)  # doctest: +SKIP
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

META = "meta.json"
PARTIAL = ".partial-"  # `.<key>.partial-<token>`: a fill in progress, or one a crash left behind
IDLE_SECONDS = 3600.0  # automatic pruning leaves entries used more recently than this alone


@dataclass(frozen=True)
class Entry:
    """One cache entry (or a partial fill) and what `hftl cache list` shows of it."""

    path: Path
    key: str
    size_bytes: int
    last_used: float  # seconds since the epoch
    split: str = ""
    model: str = ""
    examples: int = 0
    partial: bool = False


def _walk(path: Path) -> tuple[int, float]:
    """(bytes in the files under `path`, newest mtime there); (0, 0) if it vanished meanwhile."""
    total, newest = 0, 0.0
    for dirpath, _, files in os.walk(path):
        for name in files:
            try:
                st = os.stat(os.path.join(dirpath, name))
            except OSError:
                continue
            total, newest = total + st.st_size, max(newest, st.st_mtime)
    return total, newest


def entries(root: Path) -> list[Entry]:
    """Every entry under `root`, least recently used first."""
    found = []
    if not root.is_dir():
        return found
    for path in root.iterdir():
        if not path.is_dir():
            continue
        partial = PARTIAL in path.name
        meta_file = path / META
        try:
            meta = json.loads(meta_file.read_text()) if meta_file.is_file() else {}
            touched = meta_file.stat().st_mtime if meta_file.is_file() else 0.0
        except (OSError, ValueError):
            meta, touched = {}, 0.0
        if not meta and not partial:
            continue  # not ours (or not complete): never touched
        size, newest = _walk(path)
        info = meta.get("about", {})
        found.append(
            Entry(
                path=path,
                key=path.name.split(PARTIAL)[0].lstrip("."),
                size_bytes=size,
                last_used=newest if partial else touched,  # a fill in progress writes all the time
                split=info.get("split", ""),
                model=info.get("model", ""),
                examples=int(meta.get("count", 0)),
                partial=partial,
            )
        )
    return sorted(found, key=lambda e: e.last_used)


def touch(folder: Path) -> None:
    """Record a use of the entry in `folder` (its meta.json's mtime)."""
    with contextlib.suppress(OSError):  # a read-only shared cache still works; it just ages
        os.utime(folder / META)


def prune(
    root: Path,
    max_bytes: int,
    protect: set[Path] | frozenset[Path] = frozenset(),
    min_idle_seconds: float = IDLE_SECONDS,
) -> list[Entry]:
    """Delete least recently used entries until the folder holds at most `max_bytes`; returns what went.

    Entries in `protect`, and entries used within `min_idle_seconds`, are kept even if the folder
    stays over the cap. Partial fills that wrote nothing for an hour (left by a crash) go first; a
    fill still writing is never deleted.
    """
    now = time.time()
    listed = entries(root)
    total = sum(e.size_bytes for e in listed)
    protected = {p.resolve() for p in protect}
    removed = []
    for entry in sorted(listed, key=lambda e: (not e.partial, e.last_used)):
        if entry.partial:
            if now - entry.last_used < IDLE_SECONDS:
                continue  # a fill in progress
        elif total <= max_bytes or now - entry.last_used < min_idle_seconds or entry.path.resolve() in protected:
            continue
        shutil.rmtree(entry.path, ignore_errors=True)
        total -= entry.size_bytes
        removed.append(entry)
    return removed


def format_entries(listed: list[Entry], root: Path) -> str:
    """The `hftl cache list` table."""
    if not listed:
        return f"{root}: empty"
    lines = [f"{'key':<24}  {'size':>9}  {'last used':<16}  {'split':<10}  {'examples':>8}  model"]
    for e in reversed(listed):  # most recently used first
        when = time.strftime("%Y-%m-%d %H:%M", time.localtime(e.last_used))
        lines.append(
            f"{e.key[:24]:<24}  {_size(e.size_bytes):>9}  {when:<16}  {('(partial)' if e.partial else e.split):<10}  "
            f"{e.examples:>8}  {e.model}"
        )
    lines.append(f"{len(listed)} entries, {_size(sum(e.size_bytes for e in listed))} in {root}")
    return "\n".join(lines)


def _size(n: int) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TB"
