"""`builtin:spoken-digit-accents`: the words zero..nine in six English accents (the source) and in Caribbean English
(the target), a speech domain pair for audio classification.

The classification twin of `builtin:spoken-accents`: the same espeak-ng voices, accents, held-out accent and
clip writer (`hftl.builtin.spoken`, whose worker runs espeak-ng in its own process), with the digit words of
`builtin:spoken-digits` as the classes. The four parts use disjoint voice variants, so the target parts are new
voices as well as a new accent, and target/test shares no voice with target/train.

Example:
    >>> root = write_spoken_digit_accents("/tmp/spoken-digit-accents", scale=0.1)  # doctest: +SKIP
    >>> sorted(p.name for p in (root / "target" / "test").iterdir())[:3]          # doctest: +SKIP
    ['eight', 'five', 'four']
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from pathlib import Path

from hftl.builtin.spoken import (
    ACCENTS,
    HELD_OUT_ACCENT,
    WORDS,
    Clip,
    Speaker,
    _check,
    _clip,
    _scaled,
    _variant_groups,
    _write_set,
)

NAME = "spoken-digit-accents"
MARKER = f".hftl-{NAME}.json"
SOURCE_ACCENTS = tuple(accent for accent in ACCENTS if accent != HELD_OUT_ACCENT)
# Clips per word of each part at scale 1.0 (600 / 150 / 200 / 200 clips), and the share of the 36 voice variants
# each part gets (by gender): 17 / 6 / 6 / 7 variants, so 102 / 36 / 6 / 7 speakers. The target parts get more
# variants than spoken-accents' (there 3 / 7): adapting to an accent should not mean adapting to three voices.
PARTS = {"source/train": 60, "source/validation": 15, "target/train": 20, "target/test": 20}
VARIANT_SHARES = (0.5, 0.15, 0.15, 0.2)


def write_spoken_digit_accents(root: str | Path, seed: int = 0, scale: float = 1.0, python: Sequence[str] | None = None) -> Path:
    """The words zero..nine as a domain pair: six English accents as the source, Caribbean English as the target.

    `root/source/{train,validation}/<word>/` (600 / 150 clips of the six source accents) and
    `root/target/{train,test}/<word>/` (200 / 200 clips, Caribbean), 16 kHz mono wavs named
    `<speaker>-<n>.wav`, each part balanced over the ten words; `root/speakers.csv` lists speaker, accent,
    variant, voice and part (its `split` column). The parts' voice variants are disjoint. A part's clips are
    dealt over its speakers in turn, so each speaker says some of the words, some twice or more, each clip
    with its own seeded rate and pitch.

    Args:
        root: The folder to write (replaced whole when it holds an older write of this set).
        seed: Which variants go to which part and each clip's rate and pitch; the same seed gives the same bytes.
        scale: Keep this fraction of each part's clips and speakers (at least one clip a word, one speaker).
        python: The interpreter command that runs the espeak worker; default `[sys.executable]`.

    Example:
        >>> root = write_spoken_digit_accents("/tmp/spoken-digit-accents", scale=0.1)  # doctest: +SKIP
        >>> len(list((root / "source" / "train" / "seven").glob("*.wav")))            # doctest: +SKIP
        6
    """
    _check(scale, 1)
    groups = _variant_groups(VARIANT_SHARES, seed)
    clips: list[Clip] = []
    for (part, per_word), variants in zip(PARTS.items(), groups):
        accents = list(SOURCE_ACCENTS) if part.startswith("source") else [HELD_OUT_ACCENT]
        speakers = _part_speakers(accents, variants, part, seed, scale)
        clips += _word_clips(speakers, _scaled(per_word, scale), seed)
    return _write_set(root, NAME, {"seed": seed, "scale": scale}, clips, metadata=False, python=python)


def _part_speakers(accents: list[str], variants: list[str], part: str, seed: int, scale: float) -> list[Speaker]:
    """Every accent x variant of a part, the accents taken in turn, cut to `scale` of them.

    In turn rather than shuffled whole (as spoken.py's `_speakers` does): a cut keeps every accent (ten speakers
    hold all six), and the words, dealt over consecutive speakers, each hear the accents evenly.
    """
    rng = random.Random(f"{seed}/{NAME}/{part}")
    columns = []
    for accent in accents:
        order = list(variants)
        rng.shuffle(order)
        columns.append([Speaker(accent, variant, part) for variant in order])
    speakers = [column[i] for i in range(len(variants)) for column in columns]
    return speakers[: _scaled(len(speakers), scale)]


def _word_clips(speakers: list[Speaker], per_word: int, seed: int) -> list[Clip]:
    """`per_word` clips of each word, the part's clips dealt to its speakers in turn.

    Clip j goes to speaker j mod len(speakers) as that speaker's clip number j // len(speakers): names stay unique
    when a speaker says a word twice, and no speaker says more than one clip above another.
    """
    clips = []
    for w, word in enumerate(WORDS):
        for j in range(w * per_word, (w + 1) * per_word):
            speaker, n = speakers[j % len(speakers)], j // len(speakers)
            path = f"{speaker.split}/{word}/{speaker.name}-{n}.wav"
            clips.append(_clip(path, word, speaker, f"{seed}/{NAME}/{speaker.name}/{word}/{n}"))
    return clips
