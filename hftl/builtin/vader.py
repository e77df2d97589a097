"""`builtin:vader-words` and `builtin:vader-valence`: the VADER sentiment lexicon's human ratings as a word-polarity
csv (classification) and a word-valence csv (regression).

Example:
    >>> write_vader_words("/tmp/vader.csv")  # doctest: +SKIP
    PosixPath('/tmp/vader.csv')
"""

from __future__ import annotations

import re
from pathlib import Path

from hftl.utils.errors import HftlError
from hftl.utils.files import atomic_write_text

VADER_PACKAGE = "vadersentiment"


def write_vader_words(path: str | Path, min_valence: float = 1.0) -> Path:
    """A real word-polarity set: VADER lexicon words with |mean valence| >= `min_valence`, as `text,label`.

    VADER's ratings are means of 10 human raters on a -4..4 scale; `positive` / `negative` by sign.
    Emoticons (no letters) are left out so the set is about words.

    Example:
        >>> write_vader_words("/tmp/vader.csv")  # doctest: +SKIP
        PosixPath('/tmp/vader.csv')
    """
    rows = [(w, "positive" if v > 0 else "negative") for w, v in _vader_lexicon() if abs(v) >= min_valence]
    return _write_word_csv(path, "label", rows)


def write_vader_valence(path: str | Path) -> Path:
    """A real regression set: every VADER lexicon word (7,500-odd) with its mean valence (-4..4, the mean of
    10 human ratings), as `text,valence`.

    Example:
        >>> write_vader_valence("/tmp/vader-valence.csv")  # doctest: +SKIP
        PosixPath('/tmp/vader-valence.csv')
    """
    return _write_word_csv(path, "valence", [(w, f"{v:g}") for w, v in _vader_lexicon()])


def _vader_lexicon() -> list[tuple[str, float]]:
    """(word, mean valence) of the VADER lexicon's words (emoticons, which have no letters, left out)."""
    try:
        import vaderSentiment
    except ImportError:
        raise HftlError(f"the VADER lexicon is not installed. Run: pip install {VADER_PACKAGE}") from None
    lexicon = Path(vaderSentiment.__file__).parent / "vader_lexicon.txt"
    rows = []
    for line in lexicon.read_text(encoding="utf-8", errors="replace").splitlines():
        parts = line.split("\t")
        if len(parts) >= 2 and re.fullmatch(r"[A-Za-z][A-Za-z'-]*", parts[0]):
            rows.append((parts[0], float(parts[1])))
    return rows


def _write_word_csv(path: str | Path, column: str, rows: list[tuple[str, str]]) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    text = f"text,{column}\n" + "".join(f'"{w.replace(chr(34), chr(34) * 2)}",{value}\n' for w, value in rows)
    if not path.is_file() or path.read_text() != text:
        atomic_write_text(path, text)
    return path
