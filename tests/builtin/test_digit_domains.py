"""builtin:digit-domains: printed digits (source) and scikit-learn's handwritten digits (target), both through the
UCI 8x8 pipeline. Built small (a few printed images per class) into tmp_path; the handwritten split is always whole."""

from __future__ import annotations

import functools
import json
import random
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import hftl.builtin
from hftl.builtin import resolve_builtin, write_digit_domains
from hftl.builtin.digit_domains import MARKER, PRINTED_FONTS, _font_files, printed_digit
from hftl.utils.errors import HftlError

PARTS = ("printed/train", "printed/test", "handwritten/train", "handwritten/test")
LEVELS = {round(k * 255 / 16) for k in range(17)}  # what 0..16 block counts become in an 8 px PNG
LEVELS_INK = round(8 * 255 / 16)  # a block at least half inked


@pytest.fixture(scope="module")
def domains(tmp_path_factory: pytest.TempPathFactory) -> Path:
    # size=8: the PNGs hold the 8x8 block counts themselves (no upsampling), so their values can be checked exactly.
    return write_digit_domains(tmp_path_factory.mktemp("dd") / "digit-domains", printed_per_class=(4, 2), size=8)


def pngs(folder: Path) -> list[Path]:
    return sorted(folder.rglob("*.png"))


def load(folder: Path) -> tuple[np.ndarray, np.ndarray]:
    """Pixels (one row per image) and the class folder names as labels."""
    files = pngs(folder)
    pixels = np.stack([np.asarray(Image.open(p).convert("L"), dtype=np.float32).ravel() for p in files])
    return pixels, np.array([int(p.parent.name) for p in files])


def test_each_part_holds_ten_class_folders_with_the_asked_counts(domains: Path) -> None:
    for part in PARTS:
        assert sorted(p.name for p in (domains / part).iterdir()) == [str(d) for d in range(10)], part
    for part, per_class in (("printed/train", 4), ("printed/test", 2)):
        assert all(len(pngs(domains / part / str(d))) == per_class for d in range(10)), part
    assert (len(pngs(domains / "handwritten/train")), len(pngs(domains / "handwritten/test"))) == (1000, 797)


def test_the_handwritten_split_is_disjoint_whole_stratified_and_labelled_right(domains: Path) -> None:
    from sklearn.datasets import load_digits

    target = load_digits().target
    train = {int(p.stem): int(p.parent.name) for p in pngs(domains / "handwritten/train")}
    test = {int(p.stem): int(p.parent.name) for p in pngs(domains / "handwritten/test")}
    assert not train.keys() & test.keys()
    assert sorted(train.keys() | test.keys()) == list(range(1797))
    assert all(target[i] == label for i, label in {**train, **test}.items())
    for digit in range(10):  # each digit's share of train is its share of the whole, to one scan
        expected = 1000 * np.mean(target == digit)
        assert abs(sum(label == digit for label in train.values()) - expected) <= 1


def test_both_domains_are_written_through_the_same_8x8_pipeline(domains: Path) -> None:
    from sklearn.datasets import load_digits

    for part in PARTS:
        for path in pngs(domains / part)[::7]:
            with Image.open(path) as image:
                assert (image.mode, image.size) == ("RGB", (8, 8)), path
                pixels = np.asarray(image)
            assert (pixels[..., 0] == pixels[..., 1]).all() and (pixels[..., 1] == pixels[..., 2]).all()
            assert set(np.unique(pixels)) <= LEVELS, path  # stretched 0..16 counts and nothing else
            assert pixels.max() >= LEVELS_INK, path  # a digit, not a blank
    scan = next((domains / "handwritten").rglob("0000.png"))  # in train or test: the split decides
    assert (np.asarray(Image.open(scan))[..., 0] == np.rint(load_digits().images[0] * 255 / 16)).all()


def test_printed_digits_are_uci_block_counts_with_jitter() -> None:
    font = _font_files()[0]
    counts = printed_digit(8, font, random.Random("a"))
    assert counts.shape == (8, 8) and counts.dtype.kind == "i"
    assert counts.min() >= 0 and counts.max() == 16  # a full 4x4 block of ink somewhere in an 8
    assert (printed_digit(8, font, random.Random("a")) == counts).all()  # the draw decides everything
    assert any((printed_digit(8, font, random.Random(str(i))) != counts).any() for i in range(3))
    assert len(PRINTED_FONTS) == len(set(PRINTED_FONTS)) >= 20


def test_the_same_arguments_give_the_same_bytes(domains: Path, tmp_path: Path) -> None:
    again = write_digit_domains(tmp_path / "again", printed_per_class=(4, 2), size=8)
    files = sorted(str(p.relative_to(domains)) for p in domains.rglob("*") if p.is_file())
    assert files == sorted(str(p.relative_to(again)) for p in again.rglob("*") if p.is_file())
    assert all((domains / f).read_bytes() == (again / f).read_bytes() for f in files)
    # Train and test are different draws: no printed test image is a copy of a train image.
    train = {p.read_bytes() for p in pngs(domains / "printed/train")}
    assert not train & {p.read_bytes() for p in pngs(domains / "printed/test")}


def test_a_second_call_is_a_no_op_and_other_settings_or_versions_rebuild(tmp_path: Path) -> None:
    root = write_digit_domains(tmp_path / "dd", printed_per_class=(1, 1), size=8)
    stamps = {p: p.stat().st_mtime_ns for p in root.rglob("*")}
    assert write_digit_domains(root, printed_per_class=(1, 1), size=8) == root
    assert {p: p.stat().st_mtime_ns for p in root.rglob("*")} == stamps

    marker = json.loads((root / MARKER).read_text())
    (root / MARKER).write_text(json.dumps({**marker, "version": marker["version"] - 1}))  # an older build
    write_digit_domains(root, printed_per_class=(2, 1), size=8)
    assert json.loads((root / MARKER).read_text()) == {**marker, "printed_per_class": [2, 1]}
    assert len(pngs(root / "printed/train/5")) == 2
    assert [p.name for p in tmp_path.iterdir()] == ["dd"]  # no temp folder left beside it


def test_a_foreign_folder_is_refused_not_replaced(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(HftlError, match="not a digit-domains folder"):
        write_digit_domains(tmp_path, printed_per_class=(1, 1), size=8)
    assert [p.name for p in tmp_path.iterdir()] == ["notes.txt"]
    with pytest.raises(HftlError, match="handwritten_train"):
        write_digit_domains(tmp_path / "dd", handwritten_train=1797)


def test_a_model_of_handwriting_reads_printed_digits_above_chance_and_worse(domains: Path) -> None:
    # The pair is a domain shift worth adapting across: the same digits, learnable, but styled apart.
    from sklearn.linear_model import LogisticRegression

    model = LogisticRegression(max_iter=1000).fit(*load(domains / "handwritten/train"))
    in_domain = model.score(*load(domains / "handwritten/test"))
    printed = model.score(*load(domains / "printed"))
    assert in_domain > 0.9
    assert 0.15 < printed < in_domain - 0.2, (printed, in_domain)  # chance is 0.1


def test_resolve_builtin_builds_it_in_the_data_dir_and_takes_sub_paths(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # A home of our own, and the writer at test size: the maker resolve_builtin runs looks it up by name.
    monkeypatch.setenv("HOME", str(tmp_path))
    small = functools.partial(write_digit_domains, printed_per_class=(1, 1), size=8)
    monkeypatch.setattr(hftl.builtin, "write_digit_domains", small)
    folder = tmp_path / ".cache/hftl/data/digit-domains"
    assert resolve_builtin("builtin:digit-domains/printed/train") == str(folder / "printed/train")
    assert (folder / "printed/train/9").is_dir() and (folder / MARKER).is_file()
    assert resolve_builtin("builtin:digit-domains/handwritten/test") == str(folder / "handwritten/test")
    with pytest.raises(HftlError, match=r"no 'printed/validation' inside .*handwritten, handwritten/test"):
        resolve_builtin("builtin:digit-domains/printed/validation")
