"""`builtin:spoken-digits`, `builtin:spoken-sentences`, `builtin:spoken-accents`: real speech made on this machine with
espeak-ng voices, for audio classification, speech recognition and accent adaptation without the Hub.

A speaker is an English accent (an espeak-ng language voice) said with a voice variant (a timbre: `m3`, `f2`,
`klatt4`, ...); every clip also draws its own speaking rate and pitch, seeded. Splits are by variant, so no
speaker is in two splits and no test timbre is heard in training, in any accent.

espeak-ng (GPL-3.0) runs in its own process, `espeak_worker.py`, started here with `subprocess`; nothing in hftl
imports it or its loader. It needs the PyPI package espeakng-loader (`pip install -e ".[speech-data]"`), which
ships libespeak-ng and its voices: no apt, no network.

Example:
    >>> root = write_spoken_digits("/tmp/spoken-digits", scale=0.05)   # doctest: +SKIP
    >>> sorted(p.name for p in (root / "train").iterdir())[:3]          # doctest: +SKIP
    ['eight', 'five', 'four']
"""

from __future__ import annotations

import csv
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from hftl.utils.errors import HftlError
from hftl.utils.files import replace_dir

SPEECH_DATA_INSTALL = 'pip install espeakng-loader==0.2.4 (or the speech-data extra: pip install -e ".[speech-data]")'
# Launched by its path, not `-m hftl.builtin.espeak_worker` (which works too): the child then never imports hftl
# (nor yaml, torch, ... through it), starts faster, and runs under `python -I -S` as well.
WORKER = Path(__file__).with_name("espeak_worker.py")
EXIT_NO_ESPEAK = 3  # espeak_worker.EXIT_NO_ESPEAK; not imported, to keep the worker out of hftl's imports
DATA_VERSION = 2  # bump when the voices, sentences or draws change, so old folders are rewritten
BATCH = 1000  # clips per worker process: a failure shows early, and a job file stays small
SPEAKERS_FILE = "speakers.csv"

# Readable accent -> espeak-ng language voice. Left out: en-us-nyc (status "testing"; its phonemes are en-us's:
# 0.2% apart on the sentences below) and en-shaw (the Shavian alphabet, not an accent).
ACCENTS = {
    "american": "en-us",
    "british": "en",
    "rp": "en-gb-x-rp",
    "lancastrian": "en-gb-x-gbclan",
    "west-midlands": "en-gb-x-gbcwmd",
    "scottish": "en-gb-scotland",
    "caribbean": "en-029",
}
# The held-out accent of builtin:spoken-accents. espeak-ng's Caribbean English is the one it renders most unlike
# the others: it stops "th" (the -> "de", thin -> "tin") and changes unstressed vowels, so its phonemes are 10% apart
# from the other accents' on the sentences below (British-family accents 5-7%), and a US recogniser (PocketSphinx)
# got the most words wrong on it (WER 0.89, against 0.59 for American and 0.70-0.86 for the rest).
HELD_OUT_ACCENT = "caribbean"
# Variants (espeak-ng-data/voices/!v) that sound like one human speaker: all 104 speak English, but these were
# kept after leaving out effects (whisper, echo and robot voices: robosoft*, RicishayMax*, UniRobot, Demonic),
# the "fast" test switch (no change of voice), near-copies of a kept one (steph2/3, linda, klatt2/3/5/6), and the
# ten a closed-vocabulary recogniser knew least (under 31% of digits right, against 78% for the plain voice).
FEMALE_VARIANTS = ("f1", "f2", "f3", "f4", "f5", "Annie", "anika", "aunty", "belinda", "grandma", "steph")
MALE_VARIANTS = (
    "m1", "m2", "m3", "m4", "m5", "m6", "m7", "m8", "klatt", "klatt4", "adam", "david", "edward", "croak", "grandpa",
    "ed", "michel", "Diogo", "max", "victor", "Gene", "john", "paul", "rob", "quincy",
)  # fmt: skip
RATE_WPM = (130, 200)  # espeak-ng's default is 175 words a minute; 130 keeps the longest sentence under 4 s
PITCH = (30, 70)  # espeak-ng's 0-99 scale around each variant's own pitch; 50 is its default
WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
# Plain sentences of 5-8 common words, written for this set (lower case, no punctuation: the transcription
# is exactly what is said).
SENTENCES = tuple(
    line.strip()
    for line in """
    the cat sat on the warm mat|we walked to the shop after lunch|please close the door behind you
    the sun is bright this morning|my brother plays the piano every day|she drinks tea with milk and sugar
    the dog ran across the green field|open the window and let the air in|we ate bread and soup for dinner
    the children are playing in the park|it will rain later this afternoon|he lost his keys on the bus
    the train leaves in an hour|put the books back on the shelf|the river is cold in the winter
    i like to read before bed|the baby is sleeping in the next room|turn off the lights when you leave
    my mother grows roses in the garden|the car would not start today|we need more milk and eggs
    the bird sang outside my window|she wrote a long letter to her friend|the old man sat on the bench
    can you pass me the salt|the shop opens at nine in the morning|they painted the fence bright blue
    the wind blew the leaves away|he fixed the broken chair|the apples are ripe and sweet
    we watched a film last night|the kettle is on the stove|our teacher told us a funny story
    the boat sailed slowly down the river|i forgot my umbrella at home|the floor is wet so be careful
    she bought new shoes for the party|the clock on the wall is slow|we heard thunder in the distance
    the soup is too hot to eat|he runs five miles every morning|the road was long and quiet
    please write your name at the top|the cake smells very good|they moved to a house by the sea
    my phone needs a new battery|the glass fell and broke on the floor|the moon was full last night
    we planted trees along the road|she laughed at the silly joke|the horse jumped over the gate
    the library is closed on sunday|he wore a thick coat in the snow|the fish swam under the bridge
    i will call you after work|the kitchen table is made of oak|the bus was late again today
    we climbed the hill to see the view|the music was loud and happy|she carried the basket to the market
    the room was dark and silent|he painted a picture of the lake|the tea is in the top cupboard
    my sister works at the hospital|the plane flew high above the clouds|the snow melted in the spring sun
    we sat by the fire and talked|the paper is on the kitchen table|a small boy waved from the window
    the farmer fed the hungry cows|the stars are bright over the hills|she keeps her money in a red box
    the game ended in a draw|he reads the news every morning|the ice on the pond is thin
    we packed our bags for the trip|the lamp on the desk is broken|the garden gate was left open
    her coffee went cold on the desk|the wheel of the cart was loose
    """.replace("\n", "|").split("|")
    if line.strip()
)
# Every fourth sentence is said only in the test parts (test, target/test): a speech recogniser fine-tuned on
# the rest cannot pass by remembering whole sentences, so its test WER measures hearing, not recall.
TEST_SENTENCES = tuple(range(3, len(SENTENCES), 4))
TRAIN_SENTENCES = tuple(i for i in range(len(SENTENCES)) if i not in TEST_SENTENCES)


@dataclass(frozen=True)
class Speaker:
    """An accent said in a variant's voice, e.g. `scottish-m3` (en-gb-scotland+m3)."""

    accent: str
    variant: str
    split: str

    @property
    def name(self) -> str:
        return f"{self.accent}-{self.variant.lower()}"

    @property
    def voice(self) -> str:
        return f"{ACCENTS[self.accent]}+{self.variant}"


@dataclass(frozen=True)
class Clip:
    """One wav to write: `path` relative to the data set's root."""

    path: str
    text: str
    speaker: Speaker
    rate: int
    pitch: int


def write_spoken_digits(
    root: str | Path, seed: int = 0, scale: float = 1.0, clips_per_word: int = 1, python: Sequence[str] | None = None
) -> Path:
    """The words zero..nine spoken by 252 speakers (7 accents x 36 variants) as an audiofolder by split.

    `root/{train,validation,test}/<word>/<speaker>-<n>.wav` (16 kHz mono 16-bit), with 70/15/15% of the variants
    (by gender) in each split: 175 / 42 / 35 speakers, 1,750 / 420 / 350 clips at the defaults. `root/speakers.csv`
    lists speaker, accent, variant, voice and split.

    Args:
        root: The folder to write (replaced whole when it holds an older write of this set).
        seed: Which variants go to which split and each clip's rate and pitch; the same seed gives the same bytes.
        scale: Keep this fraction of each split's speakers (at least one), for tests and quick looks.
        clips_per_word: Clips per speaker and word, each with its own rate and pitch.
        python: The interpreter command that runs the espeak worker; default `[sys.executable]`.

    Example:
        >>> root = write_spoken_digits("/tmp/spoken-digits", scale=0.05)  # doctest: +SKIP
        >>> len(list((root / "train" / "seven").glob("*.wav")))          # doctest: +SKIP
        9
    """
    _check(scale, clips_per_word)
    groups = _variant_groups((0.7, 0.15, 0.15), seed)
    clips = []
    for split, variants in zip(("train", "validation", "test"), groups):
        for speaker in _speakers(list(ACCENTS), variants, split, seed, scale):
            for word in WORDS:
                for n in range(clips_per_word):
                    path = f"{split}/{word}/{speaker.name}-{n}.wav"
                    clips.append(_clip(path, word, speaker, f"{seed}/{speaker.name}/{word}/{n}"))
    settings = {"seed": seed, "scale": scale, "clips_per_word": clips_per_word}
    return _write_set(root, "spoken-digits", settings, clips, metadata=False, python=python)


def write_spoken_sentences(root: str | Path, seed: int = 0, scale: float = 1.0, python: Sequence[str] | None = None) -> Path:
    """A speech-recognition set: 80 plain sentences said by 252 speakers (7 accents x 36 variants), split by variant.

    `root/{train,validation,test}/metadata.csv` (file_name, transcription, speaker, accent) beside its wavs: 350 /
    100 / 100 clips of 175 / 42 / 35 speakers at the defaults, each speaker saying a seeded subset of the
    sentences. train and validation share 60 sentences; test says the other 20 (`TEST_SENTENCES`), so the
    test split is new voices saying new sentences.

    Args: as `write_spoken_digits` (scale shrinks each split's speakers and clips alike).

    Example:
        >>> root = write_spoken_sentences("/tmp/spoken-sentences", scale=0.05)  # doctest: +SKIP
        >>> (root / "test" / "metadata.csv").read_text().splitlines()[0]        # doctest: +SKIP
        'file_name,transcription,speaker,accent'
    """
    _check(scale, 1)
    groups = _variant_groups((0.7, 0.15, 0.15), seed)
    clips = []
    for split, variants, total in zip(("train", "validation", "test"), groups, (350, 100, 100)):
        speakers = _speakers(list(ACCENTS), variants, split, seed, scale)
        clips += _sentence_clips(speakers, _scaled(total, scale), seed, _pool(split))
    return _write_set(root, "spoken-sentences", {"seed": seed, "scale": scale}, clips, metadata=True, python=python)


def write_spoken_accents(root: str | Path, seed: int = 0, scale: float = 1.0, python: Sequence[str] | None = None) -> Path:
    """An accent shift for domain adaptation: six English accents as the source, Caribbean English as the target.

    `root/source/{train,validation}/` (360 / 108 clips, 120 / 36 speakers of the six source accents) and
    `root/target/{train,test}/` (40 clips of 3 speakers / 60 clips of 7 other speakers, all Caribbean), each with
    a metadata.csv (file_name, transcription, speaker, accent). target/test says the 20 sentences no other part
    says (`TEST_SENTENCES`); the other parts share the remaining 60. The four parts use
    disjoint variants, so both held-out parts are new voices and the gap between them is the accent alone.
    Caribbean is held out because espeak-ng renders it most unlike the rest (see HELD_OUT_ACCENT).

    Args: as `write_spoken_digits`.

    Example:
        >>> root = write_spoken_accents("/tmp/spoken-accents", scale=0.1)  # doctest: +SKIP
        >>> sorted(p.name for p in (root / "target").iterdir())           # doctest: +SKIP
        ['test', 'train']
    """
    _check(scale, 1)
    source = [accent for accent in ACCENTS if accent != HELD_OUT_ACCENT]
    parts = (
        ("source/train", source, 360),
        ("source/validation", source, 108),
        ("target/train", [HELD_OUT_ACCENT], 40),
        ("target/test", [HELD_OUT_ACCENT], 60),
    )
    groups = _variant_groups((0.55, 0.17, 0.08, 0.2), seed)
    clips = []
    for (part, accents, total), variants in zip(parts, groups):
        speakers = _speakers(accents, variants, part, seed, scale)
        clips += _sentence_clips(speakers, _scaled(total, scale), seed, _pool(part))
    return _write_set(root, "spoken-accents", {"seed": seed, "scale": scale}, clips, metadata=True, python=python)


def _check(scale: float, clips_per_word: int) -> None:
    if not 0 < scale <= 1:
        raise HftlError(f"scale must be in (0, 1], got {scale}.")
    if clips_per_word < 1:
        raise HftlError(f"clips_per_word must be at least 1, got {clips_per_word}.")


def _scaled(count: int, scale: float) -> int:
    return max(1, round(count * scale))


def _variant_groups(shares: Sequence[float], seed: int) -> list[list[str]]:
    """The variants dealt into len(shares) disjoint groups, each gender by the shares (largest remainder)."""
    groups: list[list[str]] = [[] for _ in shares]
    for gender, pool in (("female", FEMALE_VARIANTS), ("male", MALE_VARIANTS)):
        order = list(pool)
        random.Random(f"{seed}/variants/{gender}").shuffle(order)
        exact = [share * len(order) for share in shares]
        sizes = [int(x) for x in exact]
        by_remainder = sorted(range(len(shares)), key=lambda i: exact[i] - sizes[i], reverse=True)
        for i in by_remainder[: len(order) - sum(sizes)]:
            sizes[i] += 1
        start = 0
        for group, size in zip(groups, sizes):
            group += order[start : start + size]
            start += size
    return groups


def _speakers(accents: list[str], variants: list[str], split: str, seed: int, scale: float) -> list[Speaker]:
    """Every accent x variant of a split, in a seeded order, cut to `scale` of them."""
    speakers = [Speaker(accent, variant, split) for accent in accents for variant in variants]
    random.Random(f"{seed}/speakers/{split}").shuffle(speakers)
    return speakers[: _scaled(len(speakers), scale)]


def _clip(path: str, text: str, speaker: Speaker, key: str) -> Clip:
    # Drawn from the clip's own key, so a clip is the same whatever else is written (a small set is part of the full one).
    rng = random.Random(key)
    return Clip(path, text, speaker, rng.randint(*RATE_WPM), rng.randint(*PITCH))


def _pool(part: str) -> tuple[int, ...]:
    return TEST_SENTENCES if part.endswith("test") else TRAIN_SENTENCES


def _sentence_clips(speakers: list[Speaker], total: int, seed: int, pool: Sequence[int]) -> list[Clip]:
    """`total` clips spread evenly over the speakers, each saying a seeded sample of different sentences of `pool`."""
    clips = []
    for i, speaker in enumerate(speakers):
        count = total // len(speakers) + (i < total % len(speakers))
        chosen = random.Random(f"{seed}/sentences/{speaker.name}").sample(list(pool), count)
        for n in chosen:
            path = f"{speaker.split}/{speaker.name}-s{n:02d}.wav"
            clips.append(_clip(path, SENTENCES[n], speaker, f"{seed}/{speaker.name}/s{n:02d}"))
    return clips


def _write_set(
    root: str | Path, name: str, settings: dict, clips: list[Clip], metadata: bool, python: Sequence[str] | None
) -> Path:
    """Write `clips` (and their csv files, and the marker) into a sibling temp folder, then rename it to `root`."""
    root = Path(root).expanduser()
    marker = root / f".hftl-{name}.json"
    parts: dict[str, int] = {}
    for clip in clips:
        parts[clip.speaker.split] = parts.get(clip.speaker.split, 0) + 1
    wanted = {"name": name, "version": DATA_VERSION, **settings, "clips": parts}
    if _marker(marker) == wanted:
        return root  # the folder only ever appears whole (renamed in with its marker), so this is a finished write
    if root.exists() and (not root.is_dir() or (any(root.iterdir()) and _marker(marker) is None)):
        raise HftlError(f"{root} exists and is not a {name} folder (no {marker.name}); delete it or pass another root.")
    root.parent.mkdir(parents=True, exist_ok=True)
    # Written beside the target and renamed into place: an interrupted write leaves only a hidden temp folder,
    # never a root that a later call (or a training run) could take for a finished one.
    tmp = Path(tempfile.mkdtemp(prefix=f".{root.name}.tmp-", dir=root.parent))
    try:
        tmp.chmod(0o755)  # mkdtemp makes it owner-only
        for folder in sorted({(tmp / clip.path).parent for clip in clips}):
            folder.mkdir(parents=True, exist_ok=True)
        _speak(tmp, clips, python, name)
        if metadata:
            _write_metadata(tmp, clips)
        _write_speakers(tmp, clips)
        (tmp / marker.name).write_text(json.dumps(wanted, indent=1))
        replace_dir(tmp, root)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return root


def _marker(marker: Path) -> dict | None:
    try:
        return json.loads(marker.read_text())
    except (OSError, ValueError):
        return None


def _write_metadata(tmp: Path, clips: list[Clip]) -> None:
    by_part: dict[str, list[Clip]] = {}
    for clip in clips:
        by_part.setdefault(clip.speaker.split, []).append(clip)
    for part, members in by_part.items():
        with open(tmp / part / "metadata.csv", "w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(["file_name", "transcription", "speaker", "accent"])
            for clip in members:
                writer.writerow([clip.path.rsplit("/", 1)[1], clip.text, clip.speaker.name, clip.speaker.accent])


def _write_speakers(tmp: Path, clips: list[Clip]) -> None:
    speakers = list(dict.fromkeys(clip.speaker for clip in clips))
    splits = list(dict.fromkeys(s.split for s in speakers))  # in writing order: train, validation, test
    with open(tmp / SPEAKERS_FILE, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["speaker", "accent", "variant", "voice", "split"])
        for s in sorted(speakers, key=lambda s: (splits.index(s.split), s.name)):
            writer.writerow([s.name, s.accent, s.variant, s.voice, s.split])


def _speak(tmp: Path, clips: list[Clip], python: Sequence[str] | None, name: str) -> None:
    """Every clip through the espeak worker, BATCH a process, with a progress bar on long writes."""
    from tqdm.auto import tqdm

    command = [*(python or [sys.executable]), str(WORKER), "--jobs", str(_cpus())]
    with tqdm(total=len(clips), desc=f"speaking {name}", unit="clip", disable=True if len(clips) < 200 else None) as bar:
        for start in range(0, len(clips), BATCH):
            _run_worker(command, tmp, clips[start : start + BATCH], bar)


def _run_worker(command: list[str], tmp: Path, clips: list[Clip], bar) -> None:
    jobs = tmp / ".jobs.jsonl"
    lines = [
        {"text": c.text, "voice": c.speaker.voice, "rate": c.rate, "pitch": c.pitch, "out": str(tmp / c.path)} for c in clips
    ]
    jobs.write_text("".join(json.dumps(line) + "\n" for line in lines))
    # Jobs from a file and stderr to a file: only stdout is a pipe, read line by line for the bar, so no pipe fills up.
    with open(jobs) as stdin, tempfile.TemporaryFile("w+") as stderr:
        worker = subprocess.Popen(command, stdin=stdin, stdout=subprocess.PIPE, stderr=stderr, text=True)
        results = []
        for line in worker.stdout:
            results.append(json.loads(line))
            bar.update(1)
        status = worker.wait()
        stderr.seek(0)
        message = stderr.read().strip()
    jobs.unlink()
    _check_results(status, message, results, len(clips))


def _check_results(status: int, message: str, results: list[dict], expected: int) -> None:
    if status == EXIT_NO_ESPEAK:
        raise HftlError(message or f"espeak-ng is not available. Install it: {SPEECH_DATA_INSTALL}")
    failed = [r for r in results if "error" in r]
    if failed:
        shown = "; ".join(f"{Path(r['out'] or '?').name}: {r['error']}" for r in failed[:3])
        raise HftlError(f"espeak-ng could not speak {len(failed)} of {expected} clips ({shown})")
    if status != 0 or len(results) != expected:
        tail = message.splitlines()[-1] if message else "no message"
        raise HftlError(f"the espeak worker stopped with status {status} after {len(results)} of {expected} clips: {tail}")


def _cpus() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
