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

from hftl.data.modalities.base import FileModality, Modality, check_model_path
from hftl.utils.errors import ConfigError

if TYPE_CHECKING:
    from hftl.config import Config

__all__ = ["FileModality", "Modality", "check_model_path", "get_modality"]


def get_modality(task: str, cfg: Config | None = None, checkpoint: str | None = None) -> Modality:
    """The modality of `task` (configured by `cfg`'s data options), or a ConfigError listing the tasks.

    Speech recognition follows the checkpoint (`checkpoint`, a finished run's model/, else `cfg`'s model):
    CTC for the wav2vec2 family, generation for an encoder-decoder such as Whisper.
    """
    from hftl.data.modalities import audio, image, speech, speech_seq2seq, text

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
    if task == speech.SpeechRecognition.task and cfg is not None:
        m = cfg.model
        source = (checkpoint, None) if checkpoint else (m.name_or_path, m.revision)
        if source[0] and speech_seq2seq.is_seq2seq_checkpoint(*source, m.trust_remote_code):
            modality = speech_seq2seq.SpeechSeq2Seq(cfg)
            modality.checkpoint = checkpoint
            return modality
        if cfg.data.language or cfg.data.task:
            raise ConfigError(
                f"data.language and data.task set the prompt of an encoder-decoder such as Whisper; {source[0]} is read "
                "as a CTC model (wav2vec2 family), which has no prompt. Remove them"
            )
    return registry[task](cfg)
