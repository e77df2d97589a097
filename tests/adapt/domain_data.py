"""A tiny domain pair for adaptation tests: real digit scans (source) and the same digits inverted and brightened
(the target), as imagefolders, with a labelled target test."""

from __future__ import annotations

import shutil
from pathlib import Path

from PIL import Image, ImageOps

from hftl.builtin import write_digits_imagefolder

LABELS = ("0", "1", "2")


def write_domain_pair(root: Path, per_class: int = 30, train_share: int = 20) -> dict[str, Path]:
    """`source/`, `target/` (unlabelled use: the same class folders, never read) and `target_test/` under `root`."""
    full = write_digits_imagefolder(root / "all", per_class=per_class, size=32)
    paths = {name: root / name for name in ("source", "target", "target_test")}
    for label in LABELS:
        for path in paths.values():
            (path / label).mkdir(parents=True, exist_ok=True)
        for i, f in enumerate(sorted((full / label).glob("*.png"))):
            if i < train_share:
                shutil.copy(f, paths["source"] / label / f.name)
            shifted = ImageOps.invert(Image.open(f).convert("RGB")).point(lambda v: min(255, v + 40))
            shifted.save(paths["target" if i < train_share else "target_test"] / label / f.name)
    return paths


def adapted_config(model: Path, pair: dict[str, Path], out: Path, method: str, **train: object) -> dict:
    return {
        "task": "image-classification",
        "model": {"name_or_path": str(model)},
        "data": {"train": str(pair["source"]), "target": str(pair["target"]), "target_test": str(pair["target_test"]),
                 "augment": False},
        "strategy": {"name": "full"},
        "adapt": {"method": method},
        "train": {"epochs": 3, "batch_size": 8, "learning_rate": 1e-3, "head_learning_rate": 1e-2, "report_to": "none",
                  **train},
        "output_dir": str(out),
    }  # fmt: skip
