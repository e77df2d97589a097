"""Where the frozen prefix ends in a phase: the base model, the first trained block, or the model inputs.

Example:
    >>> cut = find_cut(model, layer_map, phase.trainable)   # doctest: +SKIP
    >>> cut.describe()                                      # doctest: +SKIP
    'base-model outputs'
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from hftl.models.layer_map import LayerMap, full_name


@dataclass(frozen=True)
class Cut:
    """Where the frozen prefix ends in one phase."""

    kind: str  # "base", "block", or "input" (nothing frozen: the processed model inputs are cached)
    module: str  # the base model, or the first trainable block (full module name); "" for inputs
    skipped: tuple[str, ...] = ()  # block cut: the frozen blocks below `module`
    prefix_parts: frozenset[str] = frozenset()  # layer-map parts whose tensors shape the features

    def describe(self) -> str:
        if self.kind == "input":
            return "model inputs (decoded and processed once)"
        return "base-model outputs" if self.kind == "base" else f"hidden states entering {self.module}"


def find_cut(model: nn.Module, layer_map: LayerMap, trainable: frozenset[str]) -> Cut | None:
    """The cut for a phase training `trainable`, or None when nothing below the trained part is frozen."""
    parts = {name: layer_map.part_of(name) for name, _ in model.named_parameters()}
    trained = {parts[n] for n in trainable if n in parts}
    if layer_map.base_prefix and trained <= {"head"}:
        base_parts = frozenset(p for p in parts.values() if p != "head")
        return Cut("base", full_name(model, layer_map.base_prefix), prefix_parts=base_parts)
    blocks = sorted(i for p in trained if (i := layer_map.block_index(p)) is not None)
    # A block of parallel lists (FlauBERT) has no one module whose input is the hidden state: no block cut.
    if "embeddings" in trained or not blocks or blocks[0] == 0 or layer_map.grouped:
        return None
    k = blocks[0]
    return Cut(
        "block",
        full_name(model, layer_map.blocks[k]),
        skipped=tuple(full_name(model, b) for b in layer_map.blocks[:k]),
        prefix_parts=frozenset({"embeddings", *(f"block.{i}" for i in range(k))}),
    )
