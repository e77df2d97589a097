"""Image classification: imagefolders and tables of image paths, PIL checks, augmentation.

Evaluation and serving both go through the checkpoint's own image processor, so what the model sees
at `hftl evaluate` / `pipeline(...)` time is exactly what it saw at validation time; augmentation is
applied to the PIL image before the processor, on train only.

Example:
    >>> m = ImageClassification()
    >>> m.pipeline_task
    'image-classification'
"""

from __future__ import annotations

import io
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import datasets
import torch
from PIL import Image, UnidentifiedImageError

from hftl.data.folders import scan_class_folders
from hftl.data.input_checks import InputCheck, check_column
from hftl.data.modalities.base import FileModality, check_model_path
from hftl.data.sources import SPLIT_DIRS, DataReport, label_tensor
from hftl.utils.errors import DataError, HftlError

EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm", ".pgm")
INPUT_CANDIDATES = ("image", "img", "image_path", "image_file", "path", "file", "filepath", "file_path", "filename")
INPUT = "image"


def open_image(value: Any) -> Image.Image:
    """An RGB PIL image from a path, `{"bytes", "path"}` dict (datasets Image) or PIL image."""
    if isinstance(value, Image.Image):
        image = value
    elif isinstance(value, dict):
        image = Image.open(io.BytesIO(value["bytes"])) if value.get("bytes") else Image.open(value["path"])
    else:
        image = Image.open(value)
    image.load()  # decode now: a truncated file fails here, not deep inside a batch
    return image.convert("RGB")


def _describe(value: Any) -> str:
    if isinstance(value, dict):
        return value.get("path") or "<embedded image bytes>"
    return str(value)


def _reading_problem(read: Callable[[], Any]) -> str | None:
    """Why `read` (opening or decoding one image) failed, in the words of the skip report; None if it did not."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            read()
    except FileNotFoundError:
        return "file not found"
    except UnidentifiedImageError:
        return "not an image PIL can read (corrupt, or another file type)"
    except (OSError, SyntaxError, ValueError) as e:
        return f"unreadable image ({str(e).splitlines()[0][:120]})"
    return None


def _decode_whole(value: Any) -> None:
    """Decode every byte of an image as `open_image` does; a JPEG at 1/8 scale (`draft`): every entropy-coded
    block is still read, so truncation and corruption fail as in a full decode, at half the time (0.55 ms
    against 1.0 ms a 320x240 JPEG, which makes a 10k first run 2 s shorter)."""
    if isinstance(value, Image.Image):
        return
    source = value if not isinstance(value, dict) else io.BytesIO(value["bytes"]) if value.get("bytes") else value["path"]
    with Image.open(source) as image:
        if image.format == "JPEG":
            image.draft("RGB", (max(1, image.width // 8), max(1, image.height // 8)))
        image.load()
        image.convert("RGB")


def _image_problem(value: Any) -> str | None:
    """Why `value` cannot be used as an image, or None when it decodes fully."""
    return _reading_problem(lambda: _decode_whole(value))


def _read_header(value: Any) -> None:
    source = io.BytesIO(value["bytes"]) if isinstance(value, dict) and value.get("bytes") else _describe(value)
    with Image.open(source) as image:
        image.size  # noqa: B018 - the header is read by open; the size must be in it


def _image_header_problem(value: Any) -> str | None:
    """Why `value` is not an image, from its header alone (data.check_inputs=header)."""
    return "no image (empty cell)" if value is None else _reading_problem(lambda: _read_header(value))


IMAGE_CHECK = InputCheck(
    "image", full=lambda v: "no image (empty cell)" if v is None else _image_problem(v), header=_image_header_problem
)


def target_size(processor: Any) -> tuple[int, int]:
    """(height, width) the processor feeds the model, to crop augmentations at."""
    for attr in ("crop_size", "size"):
        size = getattr(processor, attr, None)
        if not size:
            continue
        get = size.get if isinstance(size, dict) else lambda k, s=size: getattr(s, k, None)
        if get("height") and get("width"):
            return int(get("height")), int(get("width"))
        if get("shortest_edge"):
            return int(get("shortest_edge")), int(get("shortest_edge"))
    return 224, 224


class ImageClassification(FileModality):
    task = "image-classification"
    pipeline_task = "image-classification"
    file_feature = datasets.Image
    input_candidates = INPUT_CANDIDATES
    kind = "image"

    def model_class(self) -> Any:
        from transformers import AutoModelForImageClassification

        return AutoModelForImageClassification

    def load_processor(
        self, name_or_path: str, revision: str | None, trust_remote_code: bool, label_names: list[str] | None = None
    ) -> Any:
        from transformers import AutoImageProcessor

        check_model_path(name_or_path, "google/vit-base-patch16-224")
        try:
            return AutoImageProcessor.from_pretrained(name_or_path, revision=revision, trust_remote_code=trust_remote_code)
        except (OSError, ValueError) as e:
            raise HftlError(
                f"no image processor could be loaded from model.name_or_path={name_or_path} "
                f"({str(e).splitlines()[0][:200]}). Save one next to the weights: "
                "AutoImageProcessor.from_pretrained(<its base>).save_pretrained(<dir>)"
            ) from None

    def load_folder(self, root: Path, report: DataReport) -> datasets.Dataset | dict[str, datasets.Dataset]:
        """`root/<class>/<file>` or `root/<split>/<class>/<file>` as datasets of (image path, label)."""
        subdirs = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
        split_dirs = [p for p in subdirs if p.name.lower() in SPLIT_DIRS]
        if split_dirs and len(split_dirs) == len(subdirs):
            for stray in sorted(p for p in root.iterdir() if not p.is_dir() and not p.name.startswith(".")):
                report.skip("train", str(stray), "not inside a split and class folder (expected ROOT/<split>/<label>/<image>)")
            return {SPLIT_DIRS[p.name.lower()]: self._scan(p, report, SPLIT_DIRS[p.name.lower()]) for p in split_dirs}
        return self._scan(root, report, "train")

    def _scan(self, root: Path, report: DataReport, split: str) -> datasets.Dataset:
        paths, labels = scan_class_folders(root, report, split, EXTENSIONS, "an image file", "image")
        if not paths:
            raise DataError(
                f"{root} holds no images in class folders; expected {root}/<label>/<image> with one of {', '.join(EXTENSIONS)}"
            )
        return datasets.Dataset.from_dict({INPUT: paths, "label": labels})

    def check_inputs(self, ds: datasets.Dataset, column: str, split: str, on_bad: str, report: DataReport) -> datasets.Dataset:
        """Unreadable images skipped and reported (or refused), checked as data.check_inputs says (`input_checks`)."""
        verdicts = check_column(ds, column, IMAGE_CHECK, self.cfg.data.check_inputs, f"checking {split} images")
        good, bad = [], []
        for i, problem in enumerate(verdicts):
            if problem is None:
                good.append(i)
                continue
            value = ds[i][column]
            if on_bad == "error":
                raise DataError(
                    f"row {i + 1} of the {split} split: {_describe(value)}: {problem}. "
                    "Fix or remove the file, or set data.on_bad_file=skip to skip unreadable files"
                )
            bad.append(i)
            report.skip(split, _describe(value), problem)
        return ds.select(good) if bad else ds

    def loader(self, processor: Any) -> Callable[[Any], Any]:
        return open_image

    def augmenter(self, processor: Any) -> Callable[[Any], Any] | None:
        from torchvision.transforms import v2

        height, width = target_size(processor)
        return v2.Compose(
            [
                v2.RandomResizedCrop((height, width), scale=(0.6, 1.0), antialias=True),
                v2.RandomHorizontalFlip(),
                v2.RandomRotation(10),
                v2.ColorJitter(brightness=0.2, contrast=0.2, saturation=0.2, hue=0.02),
            ]
        )

    def collator(self, processor: Any) -> Callable[[list[dict]], dict]:
        def collate(examples: list[dict]) -> dict[str, torch.Tensor]:
            # Whatever the processor makes is what the model takes: pixel_values mostly, ImageGPT's colour-cluster
            # input_ids, a pixel mask.
            batch = dict(processor(images=[e["input"] for e in examples], return_tensors="pt"))
            batch["labels"] = label_tensor([e["labels"] for e in examples])
            return batch

        return collate

    def load_predict_input(self, item: str) -> Any:
        problem = _image_problem(item)
        if problem:
            raise DataError(f"{item}: {problem}")
        return open_image(item)
