"""Input files are checked in parallel, a chunk of the column at a time, and each verdict is remembered by
path, size and modification time, so a second run decodes nothing it already checked."""

from __future__ import annotations

from pathlib import Path

import datasets
import numpy as np
from PIL import Image

from hftl.data.input_checks import InputCheck, check_column
from hftl.data.modalities.image import IMAGE_CHECK


def write_images(root: Path, n: int) -> list[str]:
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    paths = []
    for i in range(n):
        path = root / f"{i}.jpg"
        Image.fromarray(rng.integers(0, 255, (24, 32, 3), dtype=np.uint8)).save(path)
        paths.append(str(path))
    return paths


def counting(check: InputCheck) -> tuple[InputCheck, list[int]]:
    calls = [0]

    def full(value):
        calls[0] += 1
        return check.full(value)

    return InputCheck(check.kind, full=full, header=check.header), calls


def test_verdicts_are_remembered_until_a_file_changes(tmp_path, monkeypatch):
    monkeypatch.setenv("HFTL_FEATURE_CACHE", str(tmp_path / "cache" / "features"))
    paths = write_images(tmp_path / "img", 1500)  # more than one chunk of the column
    truncated = Path(paths[7])
    truncated.write_bytes(truncated.read_bytes()[:300])
    ds = datasets.Dataset.from_dict({"image": [*paths, str(tmp_path / "missing.jpg"), None]})
    check, calls = counting(IMAGE_CHECK)

    first = check_column(ds, "image", check, "full")
    assert calls[0] == 1502 and [i for i, p in enumerate(first) if p] == [7, 1500, 1501]
    assert first[7].startswith("unreadable image") and first[1500] == "file not found"
    assert (tmp_path / "cache" / "input-checks.sqlite").is_file()

    calls[0] = 0
    assert check_column(ds, "image", check, "full") == first
    assert calls[0] == 2  # only what cannot be remembered: the missing file and the empty cell

    write_images(tmp_path / "img2", 1)[0]
    Path(tmp_path / "img2" / "0.jpg").replace(truncated)  # the broken file replaced by a good one: size and time change
    calls[0] = 0
    again = check_column(ds, "image", check, "full")
    assert calls[0] == 3 and again[7] is None


def test_header_mode_opens_without_decoding_and_off_trusts(tmp_path, monkeypatch):
    monkeypatch.setenv("HFTL_FEATURE_CACHE", str(tmp_path / "cache" / "features"))
    paths = write_images(tmp_path / "img", 3)
    data = Path(paths[1]).read_bytes()
    Path(paths[1]).write_bytes(data[: len(data) * 4 // 5])  # the header survives, the pixels do not
    (tmp_path / "text.jpg").write_text("not an image")
    ds = datasets.Dataset.from_dict({"image": [*paths, str(tmp_path / "text.jpg"), None]})
    header = check_column(ds, "image", IMAGE_CHECK, "header")
    assert header[:3] == [None, None, None] and header[3].startswith("not an image") and header[4] == "no image (empty cell)"
    assert check_column(ds, "image", IMAGE_CHECK, "full")[1].startswith("unreadable image")
    assert check_column(ds, "image", IMAGE_CHECK, "off") == [None, None, None, None, "no image (empty cell)"]
