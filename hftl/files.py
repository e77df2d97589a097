"""Writing files so a crash never leaves a torn one where a reader would trust it.

Text files are written beside their name and renamed over it; folders (a checkpoint, `model/`,
`adapter/`) are built beside their final name and swapped in with two renames.

Example:
    >>> atomic_write_text(run_dir / "metrics.json", "{}")        # doctest: +SKIP
    >>> replace_dir(run_dir / ".model.tmp-1234", run_dir / "model")  # doctest: +SKIP
"""

from __future__ import annotations

import os
import shutil
import uuid
from pathlib import Path


def fsync_dir(path: Path) -> None:
    """Make a folder's entries (renames into it) durable."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write_text(path: Path, text: str) -> None:
    """Write a text file so readers see the old or the new content, never a torn one."""
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    with open(tmp, "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def replace_dir(tmp: Path, final: Path) -> None:
    """Put the finished folder `tmp` at `final`, replacing what is there.

    A folder cannot be renamed over a non-empty one, so the old one is first renamed aside (a reader
    sees the old folder or the new one, each whole) and deleted once the new one is in place.
    """
    if final.exists():
        trash = final.with_name(f".{final.name}.old-{uuid.uuid4().hex}")
        os.rename(final, trash)
        os.rename(tmp, final)
        shutil.rmtree(trash, ignore_errors=True)
    else:
        os.rename(tmp, final)
