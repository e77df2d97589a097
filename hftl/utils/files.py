"""Writing files so a crash never leaves a torn one where a reader would trust it.

Text files are written beside their name and renamed over it; folders (a checkpoint, `model/`,
`adapter/`) are built beside their final name and swapped in with two renames.

Example:
    >>> atomic_write_text(run_dir / "metrics.json", "{}")        # doctest: +SKIP
    >>> replace_dir(run_dir / ".model.tmp-1234", run_dir / "model")  # doctest: +SKIP
"""

from __future__ import annotations

import errno
import os
import shutil
import tempfile
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from hftl.utils.errors import DiskFullError


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


def build_folder_once(target: Path, write: Callable[[Path], None], is_complete: Callable[[Path], bool]) -> Path:
    """Make `target` by `write(tmp)` into a sibling temp folder, then rename it into place.

    Readers never see a half-written folder, and an interrupted write leaves nothing that a later call would
    mistake for a finished one. The files get normal modes (mkdtemp and safetensors' writer make them
    owner-only). Another process that finished `target` first wins (`is_complete(target)`).
    """
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=target.parent))
    try:
        write(tmp)
        tmp.chmod(0o755)
        for file in tmp.iterdir():
            file.chmod(0o644)
        try:
            # rename() replaces an empty directory (a pre-made cache_dir) but not a non-empty one.
            tmp.rename(target)
        except OSError:
            if not is_complete(target):
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def free_bytes(folder: Path) -> int:
    """Free space on the device of `folder` (or of its nearest existing parent)."""
    existing = next((p for p in (folder, *folder.parents) if p.exists()), Path("/"))
    return shutil.disk_usage(existing).free


def _is_disk_full(e: BaseException, folder: Path) -> bool:
    if isinstance(e, OSError) and e.errno in (errno.ENOSPC, errno.EDQUOT):
        return True
    # torch.save and safetensors report a failed write as errors of their own ("unexpected pos 576 vs 534",
    # "I/O error: No space left on device"): read the message, and the device itself.
    return "No space left" in str(e) or "Disk quota exceeded" in str(e) or free_bytes(folder) < 2**20


@contextmanager
def disk_full_guard(folder: Path, what: str, partial: Path | None, intact: str) -> Iterator[None]:
    """A full disk (or quota) while writing `what` into `folder`: the half-written `partial` goes, and a
    DiskFullError names the folder, its free space, what is `intact`, and what to do.

    Example:
        >>> with disk_full_guard(run / "checkpoints", "the checkpoint of step 6", tmp, "step-4 is intact"):  # doctest: +SKIP
        ...     write(tmp)
    """
    try:
        yield
    except Exception as e:  # noqa: BLE001 - writers fail in their own types; only a full disk is handled here
        if not _is_disk_full(e, folder):
            raise
        if partial is not None:
            shutil.rmtree(partial, ignore_errors=True)
        free = free_bytes(folder) / 2**20
        raise DiskFullError(
            f"no space left on the device of {folder} while writing {what} ({free:.0f} MiB free after removing the "
            f"partial write). {intact}. Free space there (`hftl cache clear` empties the feature cache), then run the "
            "same command with resume=true"
        ) from None
