"""`builtin:digits`: scikit-learn's bundled digits (1,797 real 8x8 scans, no download) written as an
imagefolder, the smallest real image-classification dataset we can count on.

Example:
    >>> data_dir = write_digits_imagefolder("/tmp/digits", per_class=20)  # doctest: +SKIP
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import TYPE_CHECKING

from hftl.utils.errors import HftlError

if TYPE_CHECKING:
    import numpy as np

_DIGITS_MARKER = ".hftl-digits.json"


def write_digits_imagefolder(root: str | Path, per_class: int | None = None, size: int = 32) -> Path:
    """Write scikit-learn's digits as an imagefolder: `root/<digit>/<index>.png`, RGB, `size` x `size`.

    The 1,797 real 8x8 scans ship inside scikit-learn, so this needs no network. `<index>` is the
    sample's position in `load_digits()` (zero-padded), which keeps file names stable and traceable.

    Args:
        root: Output directory (created if needed); class folders are "0" .. "9".
        per_class: Keep the first this-many samples of each digit (in dataset order); None keeps all
            (174-183 per class).
        size: Output side length in pixels.

    Returns:
        `root`, ready for `datasets.load_dataset("imagefolder", data_dir=root)`.

    Example:
        >>> root = write_digits_imagefolder("/tmp/digits", per_class=10, size=32)
        >>> sorted(p.name for p in root.iterdir() if p.is_dir())[:3]
        ['0', '1', '2']
    """
    if per_class is not None and per_class < 1:
        raise HftlError(f"per_class must be at least 1 or None, got {per_class}.")
    if size < 1:
        raise HftlError(f"size must be a positive number of pixels, got {size}.")
    try:
        import numpy as np
        from PIL import Image  # noqa: F401 - checked here so a missing pillow is named before anything is written
        from sklearn.datasets import load_digits
    except ImportError as err:
        raise HftlError(f"write_digits_imagefolder needs {err.name}. Run: pip install scikit-learn pillow") from None

    root = Path(root).expanduser()
    digits = load_digits()
    chosen = {str(digit): np.flatnonzero(digits.target == digit)[:per_class].tolist() for digit in range(10)}
    wanted = {"per_class": per_class, "size": size, "count": sum(len(ix) for ix in chosen.values())}
    marker = root / _DIGITS_MARKER
    if _digits_complete(root, marker, wanted, chosen):
        return root

    for name, indices in chosen.items():
        folder = root / name
        folder.mkdir(parents=True, exist_ok=True)
        keep = {f"{i:04d}.png" for i in indices}
        # A previous call with a larger per_class would leave extra images and skew the class counts.
        for stale in folder.glob("*.png"):
            if stale.name not in keep:
                stale.unlink()
        for i in indices:
            save_digit_png(digits.images[i], folder / f"{i:04d}.png", size)

    # Marker last: its presence (with matching settings) is what makes the next call a no-op.
    tmp_marker = marker.with_suffix(".tmp")
    tmp_marker.write_text(json.dumps(wanted))
    os.replace(tmp_marker, marker)
    return root


def save_digit_png(counts: np.ndarray, path: Path, size: int) -> None:
    """Save an 8x8 image of block counts (0..16, ink bright, as the UCI digits are) as an RGB PNG, `size` px.

    `builtin:digit-domains` writes its printed digits through this too, so both domains differ only in style.

    Example:
        >>> save_digit_png(load_digits().images[0], Path("/tmp/0.png"), 64)  # doctest: +SKIP
    """
    import numpy as np
    from PIL import Image

    # Stretch 0..16 to 0..255. Bilinear upsampling gives smooth strokes closer to the natural images
    # pretrained models saw than nearest's 4x4 blocks, without bicubic's overshoot.
    pixels = np.rint(np.asarray(counts) * (255.0 / 16.0)).astype(np.uint8)
    image = Image.fromarray(pixels)  # 2-D uint8 -> mode "L"
    if size != pixels.shape[0]:
        image = image.resize((size, size), Image.Resampling.BILINEAR)
    image.convert("RGB").save(path)


def _digits_complete(root: Path, marker: Path, wanted: dict, chosen: dict[str, list[int]]) -> bool:
    try:
        if json.loads(marker.read_text()) != wanted:
            return False
    except (OSError, ValueError):
        return False
    return all((root / name / f"{i:04d}.png").is_file() for name, indices in chosen.items() for i in indices)
