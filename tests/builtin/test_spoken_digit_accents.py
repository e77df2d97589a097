"""builtin:spoken-digit-accents: the digit words in six accents (source) and Caribbean English (target), written small
(scale 0.1, 120 clips) by the real espeak worker; the full-size plan is pinned through its marker, without speaking."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import soundfile as sf

from hftl.builtin import resolve_builtin, write_spoken_digit_accents
from hftl.builtin.spoken import ACCENTS, DATA_VERSION, HELD_OUT_ACCENT, WORDS
from hftl.builtin.spoken_digit_accents import MARKER
from hftl.utils.errors import HftlError
from tests.conftest import ESPEAK, require

PARTS = ("source/train", "source/validation", "target/train", "target/test")
SCALE = 0.1
PER_WORD = {"source/train": 6, "source/validation": 2, "target/train": 2, "target/test": 2}  # 60/15/20/20 at 0.1


@pytest.fixture(scope="module")
def pair(tmp_path_factory: pytest.TempPathFactory) -> Path:
    require(*ESPEAK)
    return write_spoken_digit_accents(tmp_path_factory.mktemp("sda") / "spoken-digit-accents", scale=SCALE)


def speakers_csv(root: Path) -> dict[str, dict[str, str]]:
    with open(root / "speakers.csv", newline="") as f:
        return {row["speaker"]: row for row in csv.DictReader(f)}


def wav_files(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*.wav"))


def test_each_part_holds_the_ten_word_folders_balanced(pair: Path) -> None:
    assert sorted(p.name for p in pair.iterdir() if p.is_dir()) == ["source", "target"]
    for part in PARTS:
        assert sorted(p.name for p in (pair / part).iterdir()) == sorted(WORDS), part
        assert all(len(list((pair / part / word).glob("*.wav"))) == PER_WORD[part] for word in WORDS), part
    info = sf.info(next((pair / "target/test/seven").glob("*.wav")))
    assert (info.samplerate, info.channels, info.subtype) == (16000, 1, "PCM_16") and 0.1 < info.duration < 2.0
    assert json.loads((pair / MARKER).read_text())["clips"] == {part: 10 * n for part, n in PER_WORD.items()}


def test_the_target_is_caribbean_the_source_the_six_and_no_voice_is_in_two_parts(pair: Path) -> None:
    rows = speakers_csv(pair)
    by_part = {part: {p.stem.rsplit("-", 1)[0] for p in (pair / part).rglob("*.wav")} for part in PARTS}
    assert {name: row["split"] for name, row in rows.items()} == {s: part for part in PARTS for s in by_part[part]}
    assert all(row["voice"] == f"{ACCENTS[row['accent']]}+{row['variant']}" for row in rows.values())
    accents = {part: {rows[s]["accent"] for s in speakers} for part, speakers in by_part.items()}
    # Speakers are dealt accent by accent, so even the ten speakers of source/train at this scale hold all six.
    assert accents["source/train"] == set(ACCENTS) - {HELD_OUT_ACCENT}
    assert accents["source/validation"] <= set(ACCENTS) - {HELD_OUT_ACCENT}
    assert accents["target/train"] == accents["target/test"] == {HELD_OUT_ACCENT}
    variants = {part: {rows[s]["variant"] for s in speakers} for part, speakers in by_part.items()}
    assert sum(map(len, variants.values())) == len(set().union(*variants.values()))  # every part new voices


def test_it_loads_with_hftls_audio_reader(pair: Path) -> None:
    from hftl.data.modalities import get_modality
    from hftl.data.sources import DataReport

    report = DataReport()
    test = get_modality("audio-classification").load_folder(pair / "target/test", report)
    assert len(test) == 10 * PER_WORD["target/test"] and sorted(set(test["label"])) == sorted(WORDS)
    assert report.total() == 0, report.summary()


def test_the_same_seed_gives_the_same_bytes_and_a_second_call_is_a_no_op(pair: Path, tmp_path: Path) -> None:
    again = write_spoken_digit_accents(tmp_path / "again", scale=SCALE)
    assert wav_files(again) == wav_files(pair)
    for clip in wav_files(pair)[::15]:  # a few of each part, from another worker process
        assert (again / clip).read_bytes() == (pair / clip).read_bytes(), clip
    assert (again / "speakers.csv").read_text() == (pair / "speakers.csv").read_text()
    before = {p: p.stat().st_mtime_ns for p in again.rglob("*")}
    assert write_spoken_digit_accents(again, scale=SCALE) == again
    assert {p: p.stat().st_mtime_ns for p in again.rglob("*")} == before


def test_resolve_builtin_finds_it_in_the_data_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # A finished full-size write as its marker records it (the marker is what makes a folder finished), under a home
    # of our own: resolve_builtin finds it done, so this pins the full-size plan (600 / 150 / 200 / 200) unspoken.
    monkeypatch.setenv("HOME", str(tmp_path))
    folder = tmp_path / ".cache/hftl/data/spoken-digit-accents"
    for part in PARTS:
        (folder / part).mkdir(parents=True)
    clips = {"source/train": 600, "source/validation": 150, "target/train": 200, "target/test": 200}
    marker = {"name": "spoken-digit-accents", "version": DATA_VERSION, "seed": 0, "scale": 1.0, "clips": clips}
    (folder / MARKER).write_text(json.dumps(marker))
    assert resolve_builtin("builtin:spoken-digit-accents") == str(folder)
    assert resolve_builtin("builtin:spoken-digit-accents/target/test") == str(folder / "target/test")
    with pytest.raises(HftlError, match=r"no 'target/validation' inside"):
        resolve_builtin("builtin:spoken-digit-accents/target/validation")
    assert not list(folder.rglob("*.wav"))  # nothing was spoken
