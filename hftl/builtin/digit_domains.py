"""`builtin:digit-domains`: printed digits (the source domain) and scikit-learn's handwritten digits (the target),
both as imagefolders made the UCI way: a 32x32 binary bitmap, "on" pixels counted in 4x4 blocks (8x8, 0..16).

The printed digits are rendered with the fonts matplotlib ships (`PRINTED_FONTS`: DejaVu Sans, Serif and Sans
Mono with their bold and oblique faces, STIX General's four faces, and the Computer Modern roman, bold, sans,
italic, typewriter and old-style math-italic digits), rotated, scaled, moved and thickened at random. Both
domains then go through the same 8x8 reduction and the same PNG writer (`digits.save_digit_png`), so they differ
in style only: printed glyphs are regular and evenly stroked, handwriting is not. Layout (class folders "0".."9"):

    printed/train        150 per class, every font       handwritten/train   1,000 scans, stratified by digit
    printed/test          50 per class, other draws       handwritten/test      797 scans, the rest

Example:
    >>> root = write_digit_domains("/tmp/digit-domains", printed_per_class=(10, 5))  # doctest: +SKIP
    >>> sorted(p.name for p in (root / "printed" / "train").iterdir())[:3]  # doctest: +SKIP
    ['0', '1', '2']
"""

from __future__ import annotations

import json
import random
import shutil
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

from hftl.builtin.digits import save_digit_png
from hftl.utils.errors import HftlError
from hftl.utils.files import replace_dir

if TYPE_CHECKING:
    import numpy as np
    from PIL import Image

DATA_VERSION = 1  # bump when the rendering changes, so finished folders from an older version are rebuilt
MARKER = ".hftl-digit-domains.json"
PRINTED_FONTS = (
    "DejaVuSans.ttf", "DejaVuSans-Bold.ttf", "DejaVuSans-Oblique.ttf", "DejaVuSans-BoldOblique.ttf",
    "DejaVuSerif.ttf", "DejaVuSerif-Bold.ttf", "DejaVuSerif-Italic.ttf", "DejaVuSerif-BoldItalic.ttf",
    "DejaVuSansMono.ttf", "DejaVuSansMono-Bold.ttf", "DejaVuSansMono-Oblique.ttf", "DejaVuSansMono-BoldOblique.ttf",
    "STIXGeneral.ttf", "STIXGeneralBol.ttf", "STIXGeneralItalic.ttf", "STIXGeneralBolIta.ttf",
    "cmr10.ttf", "cmb10.ttf", "cmss10.ttf", "cmti10.ttf", "cmtt10.ttf", "cmmi10.ttf",
)  # fmt: skip
_BITMAP = 32  # the UCI digits' bitmap side; 4x4 blocks of it make the 8x8 image
_GLYPH_PX = 96  # rendered large, then shrunk: the bitmap's strokes come out smooth, not hinted


def write_digit_domains(
    root: str | Path,
    printed_per_class: tuple[int, int] = (150, 50),
    handwritten_train: int = 1000,
    size: int = 64,
    seed: int = 0,
) -> Path:
    """Write the printed (source) and handwritten (target) digits under `root`, once.

    Args:
        root: Output folder; `printed/{train,test}` and `handwritten/{train,test}` hold class folders "0".."9".
        printed_per_class: Printed images per class in train and test (every font in both, different draws).
        handwritten_train: How many of the 1,797 handwritten scans go to train (stratified by digit); the rest
            are the test. Files are `<index>.png`, `index` being the scan's position in `load_digits()`.
        size: Side of the RGB PNGs in pixels (64 for `builtin:digit-domains`, as `builtin:digits`).
        seed: Fixes every draw: the same arguments give the same bytes.

    Returns:
        `root`. A second call with the same arguments is a no-op (a marker, written last, records them); the
        folder is built beside `root` and renamed into place, so an interrupted build leaves no `root` behind.

    Example:
        >>> root = write_digit_domains("/tmp/dd", printed_per_class=(5, 2), size=32)  # doctest: +SKIP
        >>> len(list((root / "printed" / "test" / "7").glob("*.png")))  # doctest: +SKIP
        2
    """
    if min(printed_per_class) < 1 or not 10 <= handwritten_train <= 1787 or size < 1:
        raise HftlError(
            f"write_digit_domains: printed_per_class={printed_per_class} needs two counts of at least 1, "
            f"handwritten_train={handwritten_train} must be 10..1787 (10 scans left for the test), size={size} >= 1."
        )
    root = Path(root).expanduser()
    fonts = _font_files()
    wanted = {
        "name": "digit-domains", "version": DATA_VERSION, "seed": seed, "size": size, "fonts": [f.name for f in fonts],
        "printed_per_class": list(printed_per_class), "handwritten_train": handwritten_train,
    }  # fmt: skip
    if _read_marker(root / MARKER) == wanted:
        return root  # the folder only ever appears whole (renamed in with its marker), so it is finished
    if root.exists() and (not root.is_dir() or (any(root.iterdir()) and _read_marker(root / MARKER) is None)):
        raise HftlError(f"{root} exists and is not a digit-domains folder (no {MARKER}); delete it or pass another root.")
    root.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{root.name}.tmp-", dir=root.parent))
    try:
        tmp.chmod(0o755)  # mkdtemp makes it owner-only
        for split, per_class in zip(("train", "test"), printed_per_class):
            _write_printed(tmp / "printed" / split, fonts, per_class, size, f"{seed}/{split}")
        _write_handwritten(tmp / "handwritten", handwritten_train, size, seed)
        (tmp / MARKER).write_text(json.dumps(wanted, indent=1))  # last: its presence means finished
        replace_dir(tmp, root)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return root


def printed_digit(digit: int, font: Path, rng: random.Random) -> np.ndarray:
    """One printed `digit` as the UCI digits were made: a jittered 32x32 binary bitmap, then the count of "on"
    pixels in each 4x4 block, an 8x8 integer array with values 0..16.

    Example:
        >>> printed_digit(3, _font_files()[0], random.Random(0)).max() <= 16  # doctest: +SKIP
        True
    """
    import numpy as np

    bitmap = np.asarray(_glyph_bitmap(digit, font, rng)) >= 128
    return bitmap.reshape(8, 4, 8, 4).sum(axis=(1, 3))


def _glyph_bitmap(digit: int, font: Path, rng: random.Random) -> Image.Image:
    """The glyph drawn large, thickened or thinned, rotated, size-normalised into the 32x32 box and moved."""
    from PIL import Image, ImageDraw, ImageFilter, ImageFont

    canvas = Image.new("L", (3 * _GLYPH_PX, 3 * _GLYPH_PX))
    # Stroke weight: an outline of 1..6 px thickens the face (ink spread, bolder type); a 3x3 min filter at
    # times thins it again. Both at the large size, where a pixel is a small part of a stroke. At least 1 px,
    # as thinner hairlines (STIX, Computer Modern) break up in the 32x32 bitmap and leave a near-blank 8x8.
    ImageDraw.Draw(canvas).text(
        (1.5 * _GLYPH_PX, 1.5 * _GLYPH_PX), str(digit), fill=255, anchor="mm",
        font=ImageFont.truetype(str(font), _GLYPH_PX), stroke_width=rng.randint(1, 6), stroke_fill=255,
    )  # fmt: skip
    if rng.random() < 0.25:
        thinned = canvas.filter(ImageFilter.MinFilter(3))
        canvas = thinned if thinned.getbbox() else canvas  # a hairline face could vanish whole
    canvas = canvas.rotate(rng.uniform(-12.0, 12.0), resample=Image.Resampling.BILINEAR)
    glyph = canvas.crop(canvas.getbbox())
    # The UCI bitmaps were size-normalised to the box; the jitter in height, width and place stands in for the
    # differences that normalisation left. Area averaging (BOX) turns thin strokes grey rather than dropping them.
    height = round(_BITMAP * rng.uniform(0.72, 1.0))
    width = max(1, min(_BITMAP, round(glyph.width * height / glyph.height * rng.uniform(0.8, 1.2))))
    glyph = glyph.resize((width, height), Image.Resampling.BOX)
    bitmap = Image.new("L", (_BITMAP, _BITMAP))
    left = (_BITMAP - width) // 2 + rng.randint(-2, 2)
    top = (_BITMAP - height) // 2 + rng.randint(-2, 2)
    bitmap.paste(glyph, (min(max(left, 0), _BITMAP - width), min(max(top, 0), _BITMAP - height)))
    return bitmap


def _write_printed(folder: Path, fonts: list[Path], per_class: int, size: int, draw: str) -> None:
    for digit in range(10):
        (folder / str(digit)).mkdir(parents=True)
        for i in range(per_class):
            # Fonts in turn, so every font is in both splits; the jitter is drawn per image from its own seed,
            # so train and test (different `draw`) never share an image and each file is reproducible alone.
            font = fonts[(i + digit) % len(fonts)]
            counts = printed_digit(digit, font, random.Random(f"{draw}/{digit}/{i}"))
            save_digit_png(counts, folder / str(digit) / f"{i:04d}.png", size)


def _write_handwritten(folder: Path, train_count: int, size: int, seed: int) -> None:
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    indices = list(range(len(digits.target)))
    train, test = train_test_split(indices, train_size=train_count, stratify=digits.target, random_state=seed)
    for split, chosen in (("train", train), ("test", test)):
        for digit in range(10):
            (folder / split / str(digit)).mkdir(parents=True)
        for i in sorted(chosen):
            save_digit_png(digits.images[i], folder / split / str(digits.target[i]) / f"{i:04d}.png", size)


def _font_files() -> list[Path]:
    """`PRINTED_FONTS` in matplotlib's data folder (they ship with it, so this needs no network)."""
    import matplotlib

    folder = Path(matplotlib.get_data_path()) / "fonts" / "ttf"
    missing = [name for name in PRINTED_FONTS if not (folder / name).is_file()]
    if missing:
        raise HftlError(
            f"matplotlib {matplotlib.__version__} lacks the fonts {', '.join(missing)} in {folder}; "
            "builtin:digit-domains renders its printed digits with them. Run: pip install -U matplotlib"
        )
    return [folder / name for name in PRINTED_FONTS]


def _read_marker(marker: Path) -> dict | None:
    try:
        return json.loads(marker.read_text())
    except (OSError, ValueError):
        return None
