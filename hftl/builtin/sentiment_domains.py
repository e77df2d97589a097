"""`builtin:sentiment-domains`: word polarity from the VADER lexicon, labelled in dictionary spelling (the source
domain) and asked of other words written the way social media writes them (the target domain).

Words with |mean valence| >= 1 are split (seeded, stratified by label) into source words and target words, so
the target test measures words the source never saw. Files, csv with columns `text,label`:

    dictionary-train.csv   the source words as the lexicon spells them ("thanks", "happy")
    social-train.csv       target words, social spelling: unlabelled target inputs for adaptation
    social-test.csv        the other target words, social spelling: the labelled target test

Why this is a real shift: user-generated text stretches letters ("goooood"), shouts (ALL CAPS), drops vowels
("thnks"), tags ("#happy") and adds "!!!". A subword tokenizer trained on edited text cuts those into pieces
unlike the dictionary word's, so a model that learnt polarity from dictionary words meets new token sequences.
It is the shift VADER itself was built for: its rules boost caps and exclamation marks because social media
text carries sentiment that way.

Example:
    >>> folder = write_sentiment_domains("/tmp/sentiment-domains")  # doctest: +SKIP
    >>> sorted(p.name for p in folder.glob("*.csv"))  # doctest: +SKIP
    ['dictionary-train.csv', 'social-test.csv', 'social-train.csv']
"""

from __future__ import annotations

import random
import re
from pathlib import Path

from hftl.builtin.vader import _vader_lexicon, _write_word_csv
from hftl.utils.errors import HftlError

VOWELS = "aeiou"
# A word: two letters or more, then hyphenated parts. Leaves out "l" and "x-d" / "x-p" (emoticons written with
# letters), which have no spelling to vary.
_WORD = re.compile(r"[a-z]{2,}(?:-[a-z]+)*")


def write_sentiment_domains(root: str | Path, min_valence: float = 1.0, source_fraction: float = 0.5, seed: int = 0) -> Path:
    """Write `dictionary-train.csv`, `social-train.csv` and `social-test.csv` into `root` (see the module doc).

    Args:
        root: Output folder (created if needed).
        min_valence: Keep lexicon words with |mean valence| at least this (VADER rates -4..4).
        source_fraction: Share of each label's words that are source words; the target words are halved
            between social-train and social-test.
        seed: Fixes the split and every spelling: the same arguments give the same bytes. Files are rewritten
            only when their content changes, so a second call is a no-op and an interrupted one is finished.

    Example:
        >>> folder = write_sentiment_domains("/tmp/sd")  # doctest: +SKIP
        >>> (folder / "social-test.csv").read_text().splitlines()[0]  # doctest: +SKIP
        'text,label'
    """
    if not 0 < source_fraction < 1:
        raise HftlError(f"source_fraction must be between 0 and 1 (exclusive), got {source_fraction}.")
    words = polar_words(min_valence)
    source, target_train, target_test = _split(words, source_fraction, seed)
    spelled = social_spellings(sorted(target_train + target_test), seed, taken=set(words))
    root = Path(root).expanduser()
    root.mkdir(parents=True, exist_ok=True)
    _write_word_csv(root / "dictionary-train.csv", "label", [(w, words[w]) for w in source])
    _write_word_csv(root / "social-train.csv", "label", [(spelled[w], words[w]) for w in target_train])
    _write_word_csv(root / "social-test.csv", "label", [(spelled[w], words[w]) for w in target_test])
    return root


def polar_words(min_valence: float = 1.0) -> dict[str, str]:
    """The lexicon's words with |mean valence| >= `min_valence`, each with `positive` or `negative`, in lexicon order.

    Example:
        >>> polar_words()["good"]  # doctest: +SKIP
        'positive'
    """
    words: dict[str, str] = {}
    for word, valence in _vader_lexicon():
        if abs(valence) >= min_valence and _WORD.fullmatch(word):
            words.setdefault(word, "positive" if valence > 0 else "negative")  # a repeated entry: the first
    return words


def social_spellings(words: list[str], seed: int = 0, taken: set[str] | None = None) -> dict[str, str]:
    """Each word written as social media might: stretched, shouted, vowels dropped, tagged or exclaimed, a mix
    drawn per word from `seed`. Every spelling differs from its word, from the other spellings and from the
    words in `taken` (so a target spelling never reads as some source word).

    Example:
        >>> social_spellings(["good", "thanks"])  # doctest: +SKIP
        {'good': 'GOOOOD!!', 'thanks': 'thnks'}
    """
    used = set(taken or ())
    spelled = {}
    for word in words:
        for attempt in range(100):
            text = social_spelling(word, random.Random(f"{seed}/{word}/{attempt}"))
            if text != word and text not in used:
                break
        else:  # not met in practice; kept so the loop cannot end on a clash
            raise HftlError(f"no social spelling of {word!r} is free of clashes after 100 draws; try another seed.")
        used.add(text)
        spelled[word] = text
    return spelled


def social_spelling(word: str, rng: random.Random) -> str:
    """One draw of `word` in social-media style (it can come out unchanged; `social_spellings` draws again then).

    Example:
        >>> social_spelling("good", random.Random(1))  # doctest: +SKIP
        'goooood'
    """
    # One spelling change at most (stretching a word with its vowels dropped reads as noise, not as a style),
    # then caps, then one decoration: the mix people type.
    change = rng.choices(("stretch", "no-vowels", "none"), weights=(0.45, 0.35, 0.2))[0]
    text = _stretch(word, rng) if change == "stretch" else _drop_vowels(word) if change == "no-vowels" else word
    if rng.random() < 0.35:
        text = text.upper()
    decoration = rng.choices(("", "!!", "!!!", "#"), weights=(0.4, 0.2, 0.15, 0.25))[0]
    if decoration == "#":
        return "#" + text.replace("-", "")  # hashtags cannot hold a hyphen
    return text + decoration


def _stretch(word: str, rng: random.Random) -> str:
    """Repeat the last vowel (the last letter when there is none) 2-4 more times: "good" -> "goooood"."""
    at = max((i for i, c in enumerate(word) if c in VOWELS), default=len(word) - 1)
    return word[: at + 1] + word[at] * rng.randint(2, 4) + word[at + 1 :]


def _drop_vowels(word: str) -> str:
    """Drop the vowels after each part's first letter: "thanks" -> "thnks", "awesome" -> "awsm". A word that
    would be left with a one-letter part ("ooo" -> "o") stays whole."""
    parts = [p[0] + "".join(c for c in p[1:] if c not in VOWELS) for p in word.split("-")]
    return word if any(len(p) < 2 for p in parts) else "-".join(parts)


def _split(words: dict[str, str], source_fraction: float, seed: int) -> tuple[list[str], list[str], list[str]]:
    """Source, target-train and target-test words, each label cut in the same proportions, each list sorted."""
    source, target_train, target_test = [], [], []
    for label in ("negative", "positive"):
        members = sorted(w for w, lab in words.items() if lab == label)
        random.Random(f"{seed}/split/{label}").shuffle(members)
        n_source = round(len(members) * source_fraction)
        n_train = (len(members) - n_source) // 2
        source += members[:n_source]
        target_train += members[n_source : n_source + n_train]
        target_test += members[n_source + n_train :]
    return sorted(source), sorted(target_train), sorted(target_test)
