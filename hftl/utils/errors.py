"""Errors a user can act on.

Everything raised as `HftlError` is a user mistake or an environment problem with a known fix: the
CLI prints its message without a traceback. Anything else is a bug in hftl and keeps its traceback.
"""


def first_line(error: BaseException, limit: int = 200) -> str:
    """The first line of `error`'s message, cut to `limit` characters: enough to say why in a one-line note.

    Example:
        >>> first_line(RuntimeError("shapes differ\\n  at layer 3"))
        'shapes differ'
    """
    return (str(error).strip().splitlines() or [""])[0][:limit]


class HftlError(Exception):
    """A problem the user can fix; the message says what was wrong, where, and what to do."""


class ConfigError(HftlError):
    """A config key or value that hftl refuses (names the key and the allowed values)."""


class DataError(HftlError):
    """A dataset problem (names the file, row or column and the fix)."""


class DivergedError(HftlError):
    """Training met a non-finite loss or gradient norm (names the step, the values and the likely fixes)."""


class DiskFullError(HftlError):
    """No space left where a checkpoint, the feature cache or `model/` was being written (names the folder)."""
