"""A throwaway PostgreSQL server for the tests: `initdb` into a temporary folder, started on a free port of
127.0.0.1, one database created, stopped and removed at the end.

PostgreSQL refuses to run as root, so under root (CI's containers) the server runs as the `postgres` user that
Debian's `postgresql` package creates; otherwise as the current user. Trust authentication: the server listens on
127.0.0.1 only and lives as long as the test session.

Example:
    >>> with postgres_server() as url:  # doctest: +SKIP
    ...     optuna.create_study(storage=url)
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import socket
import stat
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

SERVER_USER = "postgres"  # Debian's package creates it; the server's user when the tests run as root
START_SECONDS = 60
# A throwaway cluster needs no durability; without the syncs it starts and writes faster on a busy machine.
SETTINGS = ("fsync=off", "synchronous_commit=off", "full_page_writes=off")


def bin_dir() -> Path | None:
    """The folder holding `initdb` and `pg_ctl`: the one on PATH (symlinks resolved, so its sibling tools are
    PostgreSQL's and not Debian's wrappers), else the newest /usr/lib/postgresql/*/bin."""
    candidates = [Path(found).resolve().parent] if (found := shutil.which("initdb")) else []
    versions = glob.glob("/usr/lib/postgresql/*/bin")
    candidates += sorted((Path(p) for p in versions), key=lambda p: _version(p.parent.name), reverse=True)
    return next((d for d in candidates if (d / "initdb").is_file() and (d / "pg_ctl").is_file()), None)


def _version(name: str) -> tuple[int, ...]:
    return tuple(int(part) for part in name.split(".") if part.isdigit())


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _traversable(folder: Path) -> bool:
    """Whether any user can reach `folder` (every folder above it searchable by others)."""
    return all(p.stat().st_mode & stat.S_IXOTH for p in (folder, *folder.parents))


def _as_server_user(root: Path) -> tuple[str, list[str]]:
    """(user the server runs as, command prefix that runs a tool as it), with `root` handed to that user."""
    if os.geteuid() != 0:
        return pwd.getpwuid(os.geteuid()).pw_name, []
    try:
        user = pwd.getpwnam(SERVER_USER)
    except KeyError:
        raise RuntimeError(f"PostgreSQL will not run as root and there is no {SERVER_USER!r} user to run it") from None
    if shutil.which("runuser") is None:
        raise RuntimeError("PostgreSQL will not run as root, and runuser (util-linux) is missing to run it as postgres")
    os.chown(root, user.pw_uid, user.pw_gid)
    return SERVER_USER, ["runuser", "-u", SERVER_USER, "--"]


def _run(cmd: list[str], root: Path) -> subprocess.CompletedProcess:
    # cwd=root: the server user may not be able to enter the caller's folder (root's home, say).
    return subprocess.run(cmd, cwd=root, capture_output=True, text=True, timeout=START_SECONDS)


def _start(bindir: Path, root: Path, prefix: list[str]) -> int:
    """Start the server on a free port (another port if it was taken meanwhile); the port."""
    data, log = root / "data", root / "server.log"
    for attempt in range(3):
        port = _free_port()
        options = f"-h 127.0.0.1 -p {port} -k {root} " + " ".join(f"-c {s}" for s in SETTINGS)
        cmd = [*prefix, str(bindir / "pg_ctl"), "-D", str(data), "-l", str(log), "-o", options]
        proc = _run([*cmd, "-w", "-t", str(START_SECONDS), "start"], root)
        if proc.returncode == 0:
            return port
        text = log.read_text(errors="replace") if log.exists() else ""
        if "could not bind" not in text or attempt == 2:
            raise RuntimeError(f"PostgreSQL did not start ({proc.returncode}):\n{proc.stdout}{proc.stderr}\n{text[-3000:]}")
    raise AssertionError("unreachable")


def _wait_ready(bindir: Path, root: Path, port: int) -> None:
    """Until the server accepts connections on its TCP port (pg_ctl -w watched the unix socket)."""
    deadline = time.monotonic() + START_SECONDS
    while _run([str(bindir / "pg_isready"), "-q", "-h", "127.0.0.1", "-p", str(port)], root).returncode != 0:
        if time.monotonic() > deadline:
            log = (root / "server.log").read_text(errors="replace")
            raise RuntimeError(f"PostgreSQL on 127.0.0.1:{port} never became ready:\n{log[-3000:]}")
        time.sleep(0.2)


@contextmanager
def postgres_server(database: str = "hftl") -> Iterator[str]:
    """A running throwaway server holding an empty `database`: yields its SQLAlchemy URL
    `postgresql+psycopg2://USER@127.0.0.1:PORT/DATABASE`; stops the server and removes its folder on exit."""
    bindir = bin_dir()
    if bindir is None:
        raise RuntimeError("no PostgreSQL server binaries (initdb, pg_ctl): apt-get install postgresql")
    base = Path(tempfile.gettempdir())
    # The server user must reach the folder; a root-only TMPDIR would stop it, /tmp does not.
    root = Path(tempfile.mkdtemp(prefix="hftl-pg-", dir=base if _traversable(base) else "/tmp"))
    started = False
    try:
        user, prefix = _as_server_user(root)
        init = [*prefix, str(bindir / "initdb"), "-D", str(root / "data"), "-U", user, "--auth=trust"]
        proc = _run([*init, "--encoding=UTF8", "--no-locale", "--no-sync"], root)
        if proc.returncode != 0:
            raise RuntimeError(f"initdb failed ({proc.returncode}):\n{proc.stdout}{proc.stderr}")
        port = _start(bindir, root, prefix)
        started = True
        _wait_ready(bindir, root, port)
        proc = _run([str(bindir / "createdb"), "-h", "127.0.0.1", "-p", str(port), "-U", user, database], root)
        if proc.returncode != 0:
            raise RuntimeError(f"createdb {database} failed ({proc.returncode}): {proc.stderr}")
        yield f"postgresql+psycopg2://{user}@127.0.0.1:{port}/{database}"
    finally:
        if started:  # immediate: nothing in it is worth a clean shutdown
            _run([*prefix, str(bindir / "pg_ctl"), "-D", str(root / "data"), "-m", "immediate", "-w", "stop"], root)
        shutil.rmtree(root, ignore_errors=True)
