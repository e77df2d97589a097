"""Tests for hftl.builtin.spoken: tiny versions of the espeak-ng speech sets, written by the real worker.

No mocks: the worker runs libespeak-ng from espeakng-loader in its own process, and the "no espeak" case runs
it under an interpreter that really cannot import espeakng-loader (`python -I -S`: no site-packages).
"""

from __future__ import annotations

import ast
import csv
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from hftl.builtin import resolve_builtin
from hftl.builtin.spoken import (
    ACCENTS,
    HELD_OUT_ACCENT,
    SENTENCES,
    TEST_SENTENCES,
    WORDS,
    WORKER,
    write_spoken_accents,
    write_spoken_digits,
    write_spoken_sentences,
)
from hftl.utils.errors import HftlError
from tests.conftest import ESPEAK, require

SPLITS = ("train", "validation", "test")


@pytest.fixture(scope="module")
def espeak() -> None:
    require(*ESPEAK)


@pytest.fixture(scope="module")
def digits(espeak, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_spoken_digits(tmp_path_factory.mktemp("spoken") / "digits", scale=0.03)


@pytest.fixture(scope="module")
def sentences(espeak, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_spoken_sentences(tmp_path_factory.mktemp("spoken") / "sentences", scale=0.05)


@pytest.fixture(scope="module")
def accents(espeak, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_spoken_accents(tmp_path_factory.mktemp("spoken") / "accents", scale=0.1)


def metadata(folder: Path) -> list[dict[str, str]]:
    with open(folder / "metadata.csv", newline="") as f:
        return list(csv.DictReader(f))


def assert_speech(path: Path, max_seconds: float = 5.0) -> None:
    """16 kHz mono 16-bit, a sane length, and sound in it."""
    info = sf.info(path)
    assert (info.samplerate, info.channels, info.subtype) == (16000, 1, "PCM_16"), (path, info)
    assert 0.1 < info.duration < max_seconds, (path, info.duration)
    audio, _ = sf.read(path, dtype="float32")
    assert np.sqrt(np.mean(audio**2)) > 0.01 and np.abs(audio).max() > 0.1, path


def wav_files(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*.wav"))


def test_spoken_digits_are_class_folders_by_split_with_disjoint_speakers(digits: Path) -> None:
    assert {p.name for p in digits.iterdir() if p.is_dir()} == set(SPLITS)
    speakers: dict[str, set[str]] = {}
    for split in SPLITS:
        assert sorted(p.name for p in (digits / split).iterdir()) == sorted(WORDS)
        clips = list((digits / split).rglob("*.wav"))
        speakers[split] = {p.stem.rsplit("-", 1)[0] for p in clips}
        assert len(clips) == 10 * len(speakers[split])  # every speaker says every word once
        for clip in clips[:3]:
            assert_speech(clip, max_seconds=2.0)
    assert not speakers["train"] & speakers["validation"] and not speakers["train"] & speakers["test"]
    assert not speakers["validation"] & speakers["test"]
    with open(digits / "speakers.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert {r["speaker"]: r["split"] for r in rows} == {s: split for split in SPLITS for s in speakers[split]}
    assert all(r["voice"] == f"{ACCENTS[r['accent']]}+{r['variant']}" for r in rows)


def test_the_sets_load_with_hftls_audio_reader(digits: Path, accents: Path) -> None:
    from hftl.data.modalities import get_modality
    from hftl.data.sources import DataReport

    report = DataReport()
    splits = get_modality("audio-classification").load_folder(digits, report)
    assert set(splits) == set(SPLITS)
    assert sorted(set(splits["train"]["label"])) == sorted(WORDS)
    assert len(splits["test"]) == len(list((digits / "test").rglob("*.wav")))
    # The record of speakers beside the split folders is not data: nothing is skipped.
    assert report.total() == 0, report.summary()
    test = get_modality("speech-recognition").load_folder(accents / "target" / "test", DataReport())
    assert len(test) == len(metadata(accents / "target" / "test")) and "transcription" in test.column_names


def test_spoken_sentences_list_their_clips_and_split_by_speaker(sentences: Path) -> None:
    speakers = {}
    for split in SPLITS:
        rows = metadata(sentences / split)
        assert rows and set(rows[0]) == {"file_name", "transcription", "speaker", "accent"}
        assert {r["file_name"] for r in rows} == {p.name for p in (sentences / split).glob("*.wav")}
        assert all(r["transcription"] in SENTENCES and r["accent"] in ACCENTS for r in rows)
        assert all(r["file_name"].startswith(r["speaker"] + "-") for r in rows)
        speakers[split] = {r["speaker"] for r in rows}
        for row in rows[:2]:
            assert_speech(sentences / split / row["file_name"])
    assert sum(len(s) for s in speakers.values()) == len(set().union(*speakers.values()))
    said = {split: {r["transcription"] for r in metadata(sentences / split)} for split in SPLITS}
    assert not said["test"] & (said["train"] | said["validation"])  # the test split's sentences are new too
    assert said["test"] <= {SENTENCES[i] for i in TEST_SENTENCES}


def test_spoken_accents_hold_the_target_accent_out_of_the_source(accents: Path) -> None:
    parts = {part: metadata(accents / part) for part in ("source/train", "source/validation", "target/train", "target/test")}
    assert all(parts.values())
    source = {r["accent"] for part in ("source/train", "source/validation") for r in parts[part]}
    target = {r["accent"] for part in ("target/train", "target/test") for r in parts[part]}
    assert target == {HELD_OUT_ACCENT} and HELD_OUT_ACCENT not in source and len(source) >= 3
    speakers = [{r["speaker"] for r in rows} for rows in parts.values()]
    assert sum(map(len, speakers)) == len(set().union(*speakers))  # no speaker in two parts
    assert_speech(accents / "target/test" / parts["target/test"][0]["file_name"])
    said = {part: {r["transcription"] for r in rows} for part, rows in parts.items()}
    heard_in_training = said["source/train"] | said["source/validation"] | said["target/train"]
    assert said["target/test"] and not said["target/test"] & heard_in_training


def test_the_same_seed_gives_the_same_files_and_bytes(digits: Path, tmp_path: Path) -> None:
    again = write_spoken_digits(tmp_path / "again", scale=0.03)
    assert wav_files(again) == wav_files(digits)
    # Every clip, byte for byte, from another worker process: voices with breath noise (f2, f3, f5, victor) too.
    assert all((again / clip).read_bytes() == (digits / clip).read_bytes() for clip in wav_files(digits))
    assert (again / "speakers.csv").read_text() == (digits / "speakers.csv").read_text()
    other = write_spoken_digits(tmp_path / "other", scale=0.03, seed=1)
    assert wav_files(other) != wav_files(digits)


def test_a_second_call_is_a_no_op_and_new_settings_rewrite(sentences: Path, tmp_path: Path) -> None:
    marker = sentences / ".hftl-spoken-sentences.json"
    before = {p: p.stat().st_mtime_ns for p in [marker, *sentences.rglob("*.wav")]}
    assert write_spoken_sentences(sentences, scale=0.05) == sentences
    assert {p: p.stat().st_mtime_ns for p in before} == before
    assert json.loads(marker.read_text())["scale"] == 0.05

    first = write_spoken_accents(tmp_path / "accents", scale=0.05)
    rewritten = write_spoken_accents(tmp_path / "accents", scale=0.04)  # other settings: replaced whole
    assert json.loads((rewritten / ".hftl-spoken-accents.json").read_text())["scale"] == 0.04
    assert rewritten == first and len(wav_files(rewritten)) == sum(
        len(metadata(p.parent)) for p in rewritten.rglob("metadata.csv")
    )
    assert [p.name for p in tmp_path.iterdir()] == ["accents"]  # no temp folder, no old copy left behind


def test_a_foreign_folder_is_refused_not_replaced(espeak, tmp_path: Path) -> None:
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep me")
    with pytest.raises(HftlError, match="is not a spoken-digits folder"):
        write_spoken_digits(tmp_path / "mine", scale=0.03)
    assert (tmp_path / "mine" / "notes.txt").read_text() == "keep me"


def test_no_espeak_is_a_clear_error_naming_the_pip_command(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # `python -I -S`: no site-packages, so espeakng-loader cannot be imported; PATH without an espeak-ng program.
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(HftlError, match=r"pip install espeakng-loader==0\.2\.4") as caught:
        write_spoken_digits(tmp_path / "digits", scale=0.03, python=[sys.executable, "-I", "-S"])
    assert "speech-data" in str(caught.value)
    assert not (tmp_path / "digits").exists() and not list(tmp_path.iterdir())  # nothing half-written left


def test_the_worker_reports_a_bad_job_on_its_line(espeak, tmp_path: Path) -> None:
    jobs = [
        {"text": "seven", "voice": "en-us+f2", "rate": 160, "pitch": 50, "out": str(tmp_path / "ok.wav")},
        {"text": "seven", "voice": "en-us+nobody", "rate": 160, "pitch": 50, "out": str(tmp_path / "bad.wav")},
    ]
    done = subprocess.run(
        [sys.executable, str(WORKER), "--jobs", "2"], input="".join(json.dumps(j) + "\n" for j in jobs),
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    results = {Path(r["out"]).name: r for r in map(json.loads, done.stdout.splitlines())}
    assert done.returncode == 1 and "nobody" in results["bad.wav"]["error"]
    assert_speech(tmp_path / "ok.wav", max_seconds=2.0)
    # The same job as `python -m hftl.builtin.espeak_worker` gives the same bytes: one clip, one pure function.
    again = subprocess.run(
        [sys.executable, "-m", "hftl.builtin.espeak_worker"], input=json.dumps({**jobs[0], "out": str(tmp_path / "b.wav")}),
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert again.returncode == 0, again.stderr
    assert (tmp_path / "b.wav").read_bytes() == (tmp_path / "ok.wav").read_bytes()


def test_no_hftl_module_imports_the_worker_or_espeak() -> None:
    """espeak-ng is GPL-3.0: it stays in its own process, reached only through `subprocess`."""
    package = Path(__file__).resolve().parents[2] / "hftl"
    for path in package.rglob("*.py"):
        tree = ast.parse(path.read_text())
        names = {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
        names |= {f"{n.module}.{a.name}" for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) for a in n.names}
        names |= {n.module or "" for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
        assert not any("espeak_worker" in n for n in names), path
        if path.name != "espeak_worker.py":
            assert not any(n.startswith("espeakng_loader") for n in names), path
    worker = ast.parse(WORKER.read_text())
    assert not [n for n in ast.walk(worker) if isinstance(n, ast.ImportFrom) and (n.module or "").startswith("hftl")]


def test_resolve_builtin_takes_a_sub_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # A finished full-size write, as its marker records it (the marker is what makes a folder finished), under a
    # home of our own: resolve_builtin finds it done, so this pins the full-size plan without speaking it.
    monkeypatch.setenv("HOME", str(tmp_path))
    folder = tmp_path / ".cache/hftl/data/spoken-accents"
    for part in ("source/train", "source/validation", "target/train", "target/test"):
        (folder / part).mkdir(parents=True)
    clips = {"source/train": 360, "source/validation": 108, "target/train": 40, "target/test": 60}
    marker = {"name": "spoken-accents", "version": 2, "seed": 0, "scale": 1.0, "clips": clips}
    (folder / ".hftl-spoken-accents.json").write_text(json.dumps(marker))
    assert resolve_builtin("builtin:spoken-accents") == str(folder)
    assert resolve_builtin("builtin:spoken-accents/target/test") == str(folder / "target/test")
    with pytest.raises(HftlError, match=r"no 'target/dev' inside .*target/test"):
        resolve_builtin("builtin:spoken-accents/target/dev")
    with pytest.raises(HftlError, match=r"no '\.\./spoken-accents'"):
        resolve_builtin("builtin:spoken-accents/../spoken-accents")
    assert not list(folder.rglob("*.wav"))  # nothing was spoken
