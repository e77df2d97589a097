"""Load a task model for the labels of the data: pretrained with a new head, or random for scratch;
then wrap it as its strategy says (LoRA).

Example:
    >>> model, processor = load_model(cfg, get_modality(cfg.task), ["cat", "dog"])  # doctest: +SKIP
    >>> model.config.id2label                                                        # doctest: +SKIP
    {0: 'cat', 1: 'dog'}
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from transformers import AutoConfig
from transformers.utils import logging as hf_logging

from hftl.config import Config
from hftl.data.labels import REGRESSION, LabelSpace, as_space
from hftl.models.layer_map import LayerMap, build_layer_map
from hftl.models.layer_trace import example_inputs
from hftl.models.strategies import NORM_TYPES, Plan, build_plan, get_strategy
from hftl.models.target_scaling import check_head
from hftl.utils.errors import HftlError


def load_model(cfg: Config, modality: Any, label_names: LabelSpace | list[str]) -> tuple[nn.Module, Any]:
    """The task model (head sized to the labels, id2label/label2id and problem_type set) and its processor."""
    m = cfg.model
    space = as_space(label_names)
    processor = modality.load_processor(m.name_or_path, m.revision, m.trust_remote_code, space.names)
    labels = modality.model_kwargs(space, processor)
    model_class = modality.model_class()
    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()  # the "newly initialized head" warning is the point here; hftl says it itself
    try:
        # Settings go on the config, never as model kwargs: a model class whose __init__ takes only the config
        # (Perceiver) would refuse them, and a composite config keeps pad_token_id in its text part.
        config = AutoConfig.from_pretrained(m.name_or_path, revision=m.revision, trust_remote_code=m.trust_remote_code, **labels)
        if "pad_token_id" in labels:
            config.get_text_config().pad_token_id = labels["pad_token_id"]
        if not get_strategy(cfg.strategy.name).pretrained:
            model = model_class.from_config(config, trust_remote_code=m.trust_remote_code)
            init_for_scratch(model)
        else:
            model = model_class.from_pretrained(
                m.name_or_path,
                config=config,
                revision=m.revision,
                trust_remote_code=m.trust_remote_code,
                ignore_mismatched_sizes=True,
            )
    except (OSError, ValueError, KeyError) as e:
        raise HftlError(
            f"could not load a {cfg.task} model from model.name_or_path={m.name_or_path!r}: "
            f"{str(e).strip().splitlines()[0][:300]}. Use a local directory written by save_pretrained, or a Hub id "
            "(the Hub needs network access; HF_HUB_OFFLINE=1 blocks it)."
        ) from None
    finally:
        hf_logging.set_verbosity(verbosity)
    modality.adapt_model(model, processor)
    if m.window_seconds:
        from hftl.models.audio_window import shorten_audio_window

        shorten_audio_window(model, processor, m.window_seconds)
    if isinstance(getattr(model.config, "label_names", None), list):
        # timm checkpoints keep their own label list, which would otherwise outlive the new id2label on save.
        model.config.label_names = [model.config.id2label[i] for i in range(len(model.config.id2label))]
    return model, processor


def _truncate(cfg: Config, modality: Any, model: nn.Module, processor: Any, layer_map: LayerMap) -> tuple[nn.Module, LayerMap]:
    """strategy.keep_blocks: the lowest N blocks only (`truncation`); the map of the smaller model says so."""
    from hftl.models.truncation import keep_lower_blocks

    def map_of(small: nn.Module, blocks_path: str | None) -> LayerMap:
        return build_layer_map(small, cfg.model.blocks or blocks_path, example_inputs(small, processor))

    def run(small: nn.Module) -> None:
        small(**example_inputs(small, processor))

    small, small_map, note = keep_lower_blocks(model, layer_map, cfg.strategy.keep_blocks, map_of, run)
    if small is not model:
        modality.adapt_model(small, processor)
        if not get_strategy(cfg.strategy.name).pretrained:
            init_for_scratch(small)
    small_map.note = f"{small_map.note}; {note}" if small_map.note else note
    return small, small_map


def reset_head(model: nn.Module, layer_map: LayerMap) -> None:
    """Re-initialise the layer that outputs the logits: a new classifier even when the checkpoint's had the
    same shape. The rest of a pretrained head is kept (ModernBERT's prediction head, a projector):
    transformers already initialised whatever the checkpoint lacked or had in another shape.

    transformers 5 skips tensors flagged `_is_hf_initialized` (loaded ones), so clear the flag first.
    """
    init = getattr(model, "_init_weights", None)
    names = [layer_map.classifier] if layer_map.classifier else layer_map.head
    for name in names:
        for module in model.get_submodule(name).modules():
            for tensor in list(module.parameters(recurse=False)) + list(module.buffers(recurse=False)):
                if hasattr(tensor, "_is_hf_initialized"):
                    del tensor._is_hf_initialized
            if hasattr(module, "_is_hf_initialized"):
                del module._is_hf_initialized
            with torch.no_grad():
                if init is not None:
                    init(module)
                elif hasattr(module, "reset_parameters"):
                    module.reset_parameters()


def init_for_scratch(model: nn.Module) -> None:
    """Make a randomly initialised model trainable whatever its own `_init_weights` did.

    Some transformers inits leave BatchNorm weights near zero (EfficientNet), which keeps a
    from-scratch model at chance; norms start as identity, convolutions He-initialised.
    """
    for module in model.modules():
        if isinstance(module, NORM_TYPES):
            if getattr(module, "weight", None) is not None:
                nn.init.ones_(module.weight)
            if getattr(module, "bias", None) is not None:
                nn.init.zeros_(module.bias)
            if isinstance(module, nn.modules.batchnorm._NormBase) and module.track_running_stats:
                module.reset_running_stats()
        elif isinstance(module, nn.Conv2d):
            nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
            if module.bias is not None:
                nn.init.zeros_(module.bias)


def setup_model(cfg: Config, modality: Any, label_names: LabelSpace | list[str]) -> tuple[Any, Any, LayerMap, Plan]:
    """Model with a new head, its layer map, the strategy's wrapping (LoRA), and the phase plan.

    Example:
        >>> model, processor, layer_map, plan = setup_model(cfg, get_modality(cfg.task, cfg), ["cat", "dog"])  # doctest: +SKIP
    """
    model, processor = load_model(cfg, modality, label_names)
    layer_map = build_layer_map(model, cfg.model.blocks, example_inputs(model, processor))
    if cfg.strategy.keep_blocks is not None:
        model, layer_map = _truncate(cfg, modality, model, processor, layer_map)
    if get_strategy(cfg.strategy.name).pretrained and layer_map.head_is_new:
        reset_head(model, layer_map)
    space = as_space(label_names)
    if space.problem == REGRESSION and (note := check_head(model, layer_map.classifier, space)):
        layer_map.note = f"{layer_map.note}; {note}" if layer_map.note else note
    wrap = get_strategy(cfg.strategy.name).wrap
    if wrap is not None:
        model = wrap(model, layer_map, cfg.strategy)
    return model, processor, layer_map, build_plan(model, layer_map, cfg)
