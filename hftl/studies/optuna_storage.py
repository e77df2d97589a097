"""Optuna's RDB storage as hftl's studies use it: a heartbeat that fails a dead process's trial and retries it once,
creation that survives processes racing to make the tables, and URLs printed without their password.

Shared by `hftl search` (trials sampled by TPE) and `hftl compare --storage` (the grid's cells as trials).

Example:
    >>> shown_url("postgresql+psycopg2://ann:secret@db.example:5432/studies")
    'postgresql+psycopg2://ann:***@db.example:5432/studies'
"""

from __future__ import annotations

import os
import time
from typing import Any

HEARTBEAT_SECONDS = int(os.environ.get("HFTL_SEARCH_HEARTBEAT", "10"))  # a dead process's trial fails after 3 of these


def shown_url(url: str) -> str:
    """The storage URL with any password masked, for messages and files (a study's URL may carry credentials)."""
    from sqlalchemy.engine import make_url

    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # noqa: BLE001 - not a URL SQLAlchemy reads: Optuna will say so; show nothing secret meanwhile
        return url.split("@")[-1]


def optuna_storage(url: str) -> Any:
    """Optuna's RDB storage with a heartbeat: a trial whose process died is failed, then retried (same parameters).

    Processes started together race to create the tables (measured: "UNIQUE constraint failed: alembic_version" in
    the second of two on SQLite; `type "studydirection" already exists` in 1 start of 40 on PostgreSQL); the loser
    tries again once they exist. SQLite waits up to a minute for a write lock.
    """
    import optuna
    import sqlalchemy.exc

    engine = {"connect_args": {"timeout": 60}} if url.startswith("sqlite") else None
    for attempt in range(5):
        try:
            return optuna.storages.RDBStorage(
                url,
                engine_kwargs=engine,
                heartbeat_interval=HEARTBEAT_SECONDS,
                grace_period=3 * HEARTBEAT_SECONDS,
                heartbeat_stale_trial_callback=optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=1),
            )
        except (sqlalchemy.exc.IntegrityError, sqlalchemy.exc.OperationalError, sqlalchemy.exc.ProgrammingError):
            if attempt == 4:
                raise
            time.sleep(0.5 + attempt)
    raise AssertionError("unreachable")
