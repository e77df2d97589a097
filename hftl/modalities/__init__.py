"""One module per task: processor, model class, inputs, labels, augmentation, collation, metrics.

The trainer never branches on modality; it asks the task's `Modality` (`base.py`) for these pieces.
The base class holds the single-label classification defaults that image, text and audio
classification share; sequence tasks (token classification, speech recognition) override the label
and metric parts.

Example:
    >>> get_modality("image-classification").pipeline_task
    'image-classification'
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from hftl.errors import ConfigError
from hftl.modalities.base import FileModality, Modality, check_model_path

if TYPE_CHECKING:
    from hftl.config import Config

__all__ = ["FileModality", "Modality", "check_model_path", "get_modality"]


def get_modality(task: str, cfg: Config | None = None) -> Modality:
    """The modality of `task` (configured by `cfg`'s data options), or a ConfigError listing the tasks."""
    from hftl.modalities import audio, image, speech, text

    registry: dict[str, type[Modality]] = {
        cls.task: cls
        for cls in (
            image.ImageClassification,
            text.TextClassification,
            text.TokenClassification,
            audio.AudioClassification,
            speech.SpeechRecognition,
        )
    }
    if task not in registry:
        raise ConfigError(f"task must be one of {', '.join(registry)}; got {task!r}")
    return registry[task](cfg)
