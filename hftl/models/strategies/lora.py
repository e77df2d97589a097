"""The lora strategy (peft) on any backbone: which modules the adapters go on, the wrapping, the export; registered here.

The new head trains fully through peft's `modules_to_save`. At export the adapter is saved on its own
(`adapter/`, loadable on the untouched base) and merged into the weights `model/` holds.

Example:
    >>> model = apply_lora(model, layer_map, cfg.strategy.lora)    # doctest: +SKIP
    >>> merged = save_adapter_and_merge(model, run_dir)             # doctest: +SKIP
"""

from __future__ import annotations

import functools
import inspect
import re
import uuid
from pathlib import Path
from typing import Any

from torch import nn

from hftl.config import LoraConfig, StrategyConfig
from hftl.models.layer_map import LayerMap
from hftl.models.strategies.plan import head_parameters
from hftl.models.strategies.registry import Strategy, register_strategy
from hftl.run_folder.layout import ADAPTER_DIR
from hftl.utils.errors import ConfigError
from hftl.utils.files import replace_dir

# Attention projections LoRA adapts by default (Hu et al. adapt query and value), by the names
# transformers gives them: BERT/ViT, LLaMA/wav2vec2, DistilBERT/FlauBERT, T5/MPNet, Funnel, DeBERTa,
# DeepSeek's latent attention.
_ATTENTION_TARGETS = (
    *("query", "value", "q_proj", "v_proj", "q_lin", "v_lin", "q", "v", "q_head", "v_head"),
    *("query_proj", "value_proj", "q_b_proj", "kv_b_proj"),
)
# One layer projecting query, key and value at once: ViT-style `qkv`, BLOOM/Falcon/GPT-NeoX, ModernBERT,
# GPT-2 (a transformers Conv1D), Phi-3, DeBERTa v1.
_FUSED_ATTENTION_TARGETS = ("qkv", "query_key_value", "Wqkv", "c_attn", "qkv_proj", "in_proj")


def _adaptable_types() -> tuple[type, ...]:
    """Layer types peft's LoRA wraps: linear layers (GPT-2's transposed Conv1D too) and convolutions."""
    from transformers.pytorch_utils import Conv1D

    return (nn.Linear, Conv1D, nn.Conv1d, nn.Conv2d)


def default_lora_targets(model: nn.Module, layer_map: LayerMap) -> list[str]:
    """Full names of the modules LoRA adapts when `target_modules: auto`.

    Attention query/value projections inside the blocks where the architecture has them (ViT, BERT,
    wav2vec2); a fused qkv projection otherwise (GPT-2's `c_attn`); else every convolution (ResNet)
    or every linear layer (ConvNeXt's pointwise layers)
    inside the blocks, whichever holds more weights. Grouped convolutions are left out: peft cannot
    merge their adapters into `model/`. A pretrained head (Whisper's decoder) is adapted as the blocks
    are: the query and value projections of both stacks, cross-attention included.
    """
    adaptable = _adaptable_types()

    def adapted(name: str) -> bool:
        part = layer_map.part_of(name)
        return part.startswith("block.") or (part == "head" and not layer_map.head_is_new)

    in_blocks = [
        (name, module)
        for name, module in model.named_modules()
        # peft cannot merge a LoRA on a grouped convolution (SqueezeBERT's query, depthwise convs) into model/.
        if adapted(name) and isinstance(module, adaptable) and getattr(module, "groups", 1) == 1
    ]
    linear = tuple(t for t in adaptable if t is not nn.Conv2d)
    for wanted in (_ATTENTION_TARGETS, _FUSED_ATTENTION_TARGETS):
        found = [n for n, m in in_blocks if n.rsplit(".", 1)[-1] in wanted]
        if found:
            return found
    convs = [(n, m) for n, m in in_blocks if isinstance(m, (nn.Conv1d, nn.Conv2d))]
    linears = [(n, m) for n, m in in_blocks if isinstance(m, linear) and not isinstance(m, nn.Conv1d)]
    # The family holding more weights: ResNet's convolutions, ConvNeXt's pointwise linear layers.
    family = max((convs, linears), key=lambda fam: sum(m.weight.numel() for _, m in fam))
    if family:
        return [n for n, _ in family]
    raise ConfigError(
        f"no layer inside the blocks of {type(model).__name__} that LoRA can adapt (peft wraps nn.Linear, "
        "transformers' Conv1D, nn.Conv1d and nn.Conv2d); set strategy.lora.target_modules to module names, "
        "or use strategy.name=freeze"
    )


@functools.cache
def _forwarding_layers() -> dict[type, type]:
    """peft's LoRA layers that answer attribute reads (`stride`, `padding`, ...) from the layer they wrap.

    MobileNet pads by reading its convolutions' stride and kernel size; a plain LoRA wrapper has neither.
    Registered only for models whose forward reads attributes of a target (peft's custom-module hook).
    """
    from peft.tuners.lora import layer as lora_layers

    def forwarding(base: type) -> type:
        def __getattr__(self: Any, name: str) -> Any:
            try:
                return base.__getattr__(self, name)
            except AttributeError:
                if name == "base_layer":
                    raise
                return getattr(self.get_base_layer(), name)

        return type(f"Forwarding{base.__name__}", (base,), {"__getattr__": __getattr__})

    return {nn.Conv2d: forwarding(lora_layers.Conv2d), nn.Linear: forwarding(lora_layers.Linear)}


def _wrappable(model: nn.Module, name: str) -> bool:
    """Whether the parent only calls this layer (or reads its weight/bias), so a wrapper can stand in."""
    parent_name, _, attr = name.rpartition(".")
    if attr.isdigit():
        return True  # an item of a list: used by iterating and calling
    parent = model.get_submodule(parent_name) if parent_name else model
    return attr not in _attributes_used_otherwise(type(parent))


@functools.cache
def _attributes_used_otherwise(cls: type) -> frozenset[str]:
    """`self.X` names a class's forward uses other than calling or reading `.weight`/`.bias`."""
    try:
        source = inspect.getsource(cls.forward)
    except (OSError, TypeError):
        return frozenset()
    used = set()
    for match in re.finditer(r"self\.(\w+)\b(?!\s*\()(?!\s*=[^=])(\.(\w+))?", source):
        if match.group(3) not in ("weight", "bias", None) or match.group(2) is None and _passed_on(source, match):
            used.add(match.group(1))
    return frozenset(used)


def _passed_on(source: str, match: re.Match) -> bool:
    """`f(x, self.conv)`: the layer itself handed to other code, which may read anything off it."""
    after = source[match.end() : match.end() + 1]
    before = source[max(0, match.start() - 2) : match.start()]
    return after in (",", ")") and before.strip() in (",", "(", "")


def apply_lora(model: nn.Module, layer_map: LayerMap, cfg: LoraConfig) -> nn.Module:
    """Wrap `model` with peft LoRA adapters; a new head trains fully through `modules_to_save`."""
    from peft import LoraConfig as PeftLoraConfig
    from peft import get_peft_model

    targets = default_lora_targets(model, layer_map) if cfg.target_modules == "auto" else cfg.target_modules
    peft_config = PeftLoraConfig(
        r=cfg.r,
        lora_alpha=cfg.alpha,
        lora_dropout=cfg.dropout,
        target_modules=targets,
        modules_to_save=list(layer_map.head) if layer_map.head_is_new else None,
        bias="none",
    )
    if not all(_wrappable(model, t) for t in targets if isinstance(t, str)):
        peft_config._register_custom_module(_forwarding_layers())
    try:
        return get_peft_model(model, peft_config)
    except ValueError as e:
        raise ConfigError(f"peft could not apply LoRA with strategy.lora.target_modules={targets!r}: {e}") from None


def lora_trainable(model: nn.Module) -> set[str]:
    """The adapters' parameters (the head's are added by the strategy)."""
    if not hasattr(model, "peft_config"):
        raise ConfigError("strategy lora needs the model wrapped by apply_lora() first")
    return {n for n, _ in model.named_parameters() if "lora_" in n}


def save_adapter_and_merge(model: nn.Module, run_dir: Path) -> nn.Module:
    """Write `adapter/` (adapter weights and config; the trained head rides in modules_to_save), then
    return the model with the adapters merged into its weights, for `model/`."""
    tmp = run_dir / f".{ADAPTER_DIR}.tmp-{uuid.uuid4().hex}"
    # No strategy resizes input embeddings, so tell peft not to look for them: its "auto" check takes a
    # CTC head's new vocab_size for a resized vocabulary and fails on models without input embeddings (wav2vec2).
    model.save_pretrained(str(tmp), save_embedding_layers=False)
    replace_dir(tmp, run_dir / ADAPTER_DIR)
    return model.merge_and_unload()


def lora_summary(model: nn.Module) -> dict[str, Any]:
    """What metrics.json records of the adapters: the modules they adapt."""
    return {"lora_targets": sorted(model.peft_config["default"].target_modules)}


def lora_card_lines(cfg: StrategyConfig, summary: dict[str, Any]) -> list[str]:
    """The model card's line on the adapters."""
    targets = summary["strategy"].get("lora_targets", [])
    lora = cfg.lora
    return [
        f"- LoRA: r={lora.r}, alpha={lora.alpha}, dropout={lora.dropout}, "
        f"{len(targets)} target modules (e.g. {', '.join(targets[:4])}); merged into `model/`, adapter in `adapter/`"
    ]


def _trains(model: nn.Module, layer_map: LayerMap, cfg: StrategyConfig) -> set[str]:
    """The adapters, and a new head in full; a pretrained head (a decoder) carries adapters of its own."""
    return lora_trainable(model) | (head_parameters(model, layer_map) if layer_map.head_is_new else set())


register_strategy(
    Strategy(
        "lora",
        trains=_trains,
        wrap=lambda model, layer_map, cfg: apply_lora(model, layer_map, cfg.lora),
        export=save_adapter_and_merge,
        summary=lora_summary,
        card=lora_card_lines,
    )
)
