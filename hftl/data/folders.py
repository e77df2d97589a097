"""Class folders (`ROOT/<label>/<file>`), listed fast enough for 100,000 files.

Example:
    >>> paths, labels = scan_class_folders(Path("digits"), report, "train", (".png",), "image", "image")  # doctest: +SKIP
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any


def folder_files(folder: Path) -> list[str]:
    """Every file under `folder` (hidden files and folders left out, linked folders inside not followed) as
    absolute paths, in `sorted(folder.rglob("*"))` order. One realpath per folder, not per file: resolving
    each of 100,000 files took 5.6 s of a start-up.

    Example:
        >>> folder_files(Path("digits/0"))[:1]  # doctest: +SKIP
        ['/home/me/digits/0/0.png']
    """
    top = os.path.realpath(folder)
    found = []
    for here, dirs, files in os.walk(top):
        dirs[:] = [d for d in dirs if not d.startswith(".")]
        found += [os.path.join(here, f) for f in files if not f.startswith(".")]
    return sorted(found, key=lambda path: path.split(os.sep))


def scan_class_folders(
    root: Path, report: Any, split: str, extensions: tuple[str, ...], noun: str, item: str
) -> tuple[list[str], list[str]]:
    """(file paths, labels) of `root/<label>/<file>` with one of `extensions`; anything else is skipped into
    `report` (a `DataReport`) naming why, with `noun` ("an image file") and `item` ("image") in the message."""
    paths, labels = [], []
    for entry in sorted(root.iterdir()):
        if entry.name.startswith("."):
            continue
        if not entry.is_dir():
            report.skip(split, str(entry), f"not inside a class folder (expected ROOT/<label>/<{item}>)")
            continue
        for file in folder_files(entry):
            if os.path.splitext(file)[1].lower() not in extensions:
                report.skip(split, file, f"not {noun} ({Path(file).suffix or 'no extension'})")
                continue
            paths.append(file)
            labels.append(entry.name)
    return paths, labels
