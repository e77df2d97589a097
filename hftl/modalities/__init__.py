"""One module per task: processor, model class, input loading and checks, augmentation, collation.

The trainer never branches on modality; it asks the task's `Modality` for these pieces.

Example:
    >>> get_modality("image-classification").pipeline_task
    'image-classification'
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

import datasets

from hftl.data import DataReport
from hftl.errors import ConfigError


class Modality(Protocol):
    """What a task must provide to plug into the shared trainer."""

    task: str
    pipeline_task: str

    def model_class(self) -> Any:
        """The `AutoModelFor...` class of the task."""

    def load_processor(self, name_or_path: str, revision: str | None, trust_remote_code: bool) -> Any:
        """The checkpoint's processor (saved with the model so pipelines load it)."""

    def load_folder(self, root: Path, report: DataReport) -> datasets.Dataset | dict[str, datasets.Dataset]:
        """A folder of class sub-folders (optionally under train/validation/test)."""

    def detect_input_column(self, ds: datasets.Dataset, where: str) -> str:
        """The column holding the inputs when data.input_column is not set."""

    def prepare_inputs(self, ds: datasets.Dataset, column: str, where: str) -> datasets.Dataset:
        """Normalise the input column (e.g. resolve relative paths against the data file)."""

    def check_inputs(self, ds: datasets.Dataset, column: str, split: str, on_bad: str, report: DataReport) -> datasets.Dataset:
        """Drop (and report) or refuse unreadable inputs."""

    def loader(self, processor: Any) -> Callable[[Any], Any]:
        """Turns one stored input value into what `augment` and `collate` take."""

    def augmenter(self, processor: Any) -> Callable[[Any], Any] | None:
        """Random train-time augmentation of one loaded input, or None."""

    def collator(self, processor: Any) -> Callable[[list[dict]], dict]:
        """Batches examples `{"input", "labels"}` into model keyword arguments."""

    def load_predict_input(self, item: str) -> Any:
        """One `hftl predict` argument as a pipeline input."""


def get_modality(task: str) -> Modality:
    """The registered modality of `task`, or a ConfigError listing the tasks."""
    from hftl.modalities import image

    registry: dict[str, Modality] = {image.ImageClassification.task: image.ImageClassification()}
    if task not in registry:
        raise ConfigError(f"task must be one of {', '.join(registry)}; got {task!r}")
    return registry[task]
