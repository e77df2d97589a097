"""One writer per run folder: an OS lock (`flock`) on `<run>/.hftl.lock`, held for the run's life.

The kernel drops the lock when the holding process dies, however it dies, so a crashed run never blocks
the next; a second process meanwhile (a scheduler restarting a job that still runs, a user's second
terminal) is refused with the holder's pid, host and start time. Multi-process launches take it once,
in the launch's first process.

Example:
    >>> with run_lock(Path("runs/vit")):   # doctest: +SKIP
    ...     train()
"""

from __future__ import annotations

import json
import os
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from hftl.utils.errors import HftlError

LOCK_FILE = ".hftl.lock"


def launch_rank() -> int:
    """This process's rank in a launch (accelerate launch, torchrun), read before any process group exists."""
    return int(os.environ.get("RANK", os.environ.get("PMI_RANK", "0")) or 0)


@contextmanager
def run_lock(run_dir: Path) -> Iterator[None]:
    """Hold the run folder's lock (creating the folder) in the launch's first process; others pass through.

    Raises HftlError naming the holder when another live process holds it.
    """
    if launch_rank() != 0:
        yield
        return
    import fcntl

    run_dir.mkdir(parents=True, exist_ok=True)
    path = run_dir / LOCK_FILE
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise HftlError(
                f"{run_dir} is being written by {_holder(path)}; wait for it to end, or use another output_dir"
            ) from None
        os.ftruncate(fd, 0)
        about = {"pid": os.getpid(), "host": socket.gethostname(), "started": time.strftime("%Y-%m-%d %H:%M:%S")}
        os.write(fd, json.dumps(about).encode())
        yield
    finally:
        os.close(fd)  # closing the descriptor releases the lock


def _holder(path: Path) -> str:
    try:
        about = json.loads(path.read_text() or "{}")
    except (OSError, ValueError):
        about = {}
    if not about:
        return "another process"
    return f"another hftl process (pid {about.get('pid')} on host {about.get('host')}, since {about.get('started')})"
