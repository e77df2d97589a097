"""Architectures hftl refuses before any work: what each needs that hftl does not supply, and what to use instead.

Found by the end-to-end sweep (tests/models/test_end_to_end.py), which trains every architecture of transformers'
five task mappings: these crashed inside training, or would train on inputs the architecture was not built for,
so a run stops at config time instead, before any data is read or weight trained, with the reason.

Example:
    >>> architecture_need("text-classification", "tapas").needs[:7]
    'a table'
    >>> architecture_need("text-classification", "bert") is None
    True
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from typing import Any

from hftl.utils.errors import ConfigError

_TEXT_INSTEAD = "a text encoder such as bert, roberta or deberta-v2"
_LAYOUT = "word bounding boxes (`bbox`, from an OCR step){}, which hftl's text tasks do not supply"


@dataclass(frozen=True)
class Need:
    """What an architecture needs that hftl does not supply, and the checkpoints to use instead."""

    needs: str
    instead: str
    package: str | None = None  # needed only while this package is missing


# (task or "*", model_type) -> Need.
NEEDS: dict[tuple[str, str], Need] = {
    ("*", "bros"): Need(_LAYOUT.format(""), f"layoutlm (its boxes are optional) or {_TEXT_INSTEAD}"),
    ("*", "lilt"): Need(_LAYOUT.format(""), f"layoutlm (its boxes are optional) or {_TEXT_INSTEAD}"),
    ("*", "layoutlmv3"): Need(_LAYOUT.format(" and the page image"), f"layoutlm (its boxes are optional) or {_TEXT_INSTEAD}"),
    ("*", "layoutlmv2"): Need(
        _LAYOUT.format(", the page image and the detectron2 package"), f"layoutlm (its boxes are optional) or {_TEXT_INSTEAD}"
    ),
    ("text-classification", "tapas"): Need(
        "a table: TapasTokenizer's seven token-type columns (segment, column, row, ranks) for every token",
        f"{_TEXT_INSTEAD} on the text",
    ),
    ("image-classification", "pp_lcnet"): Need(
        "a reader for its output: its image-classification class returns the class scores as `last_hidden_state`, "
        "with no `logits` and no loss, which neither hftl nor transformers' image-classification pipeline reads",
        "a timm checkpoint (`timm_wrapper`), mobilenet_v2, efficientnet or resnet",
    ),
    ("speech-recognition", "omniasr_ctc"): Need(
        "raw audio shaped (batch, 1, samples) with a `padding_mask`, and its multilingual subword tokenizer; hftl's CTC "
        "recipe feeds (batch, samples) and builds a character vocabulary",
        "a wav2vec2-family CTC checkpoint (wav2vec2, hubert, wavlm, data2vec-audio)",
    ),
    ("image-classification", "dinat"): Need(
        "the natten package (neighbourhood-attention kernels)", "swin, convnext or dinov2", package="natten"
    ),
}


def architecture_need(task: str, model_type: str, config: Any = None) -> Need | None:
    """The unmet need of `model_type` for `task`, or None when hftl runs it (`config` settles conditional ones)."""
    if model_type == "xmod" and getattr(config, "default_language", None) is None:
        return Need(
            "a language adapter chosen before any forward pass: X-MOD's `default_language` is unset in config.json",
            "the checkpoint with `default_language` set in its config.json (one of its `languages`), or xlm-roberta",
        )
    need = NEEDS.get((task, model_type)) or NEEDS.get(("*", model_type))
    if need is not None and need.package and importlib.util.find_spec(need.package) is not None:
        return None
    return need


def check_architecture(task: str, name_or_path: str, revision: str | None = None, trust_remote_code: bool = False) -> None:
    """Refuse, before any data is read, a checkpoint whose architecture needs what hftl does not supply.

    A config that cannot be read here (a Hub id offline) is left to loading, which says why.
    """
    from transformers import AutoConfig

    try:
        config = AutoConfig.from_pretrained(name_or_path, revision=revision, trust_remote_code=trust_remote_code)
    except Exception:  # noqa: BLE001 - loading the model reports an unreadable checkpoint with its own message
        return
    model_type = getattr(config, "model_type", "")
    need = architecture_need(task, model_type, config)
    if need is not None:
        raise ConfigError(
            f"model.name_or_path={name_or_path!r} is a {model_type} checkpoint, and {model_type} {task} needs "
            f"{need.needs}. Use {need.instead} instead"
            + (f", or install {need.package} (pip install {need.package})" if need.package else "")
            + "."
        )
