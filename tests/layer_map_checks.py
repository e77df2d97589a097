"""Checks a layer map against what one forward pass really does; shared by the layer-map tests and the sweep.

The map is built by hftl from a trace of its own; these checks re-trace the model independently
(plain hooks, nothing of hftl's) and assert the map's promises:
- every parameter belongs to exactly one part, and the blocks hold more than 1% of the weights;
- blocks run in order, each one's first call ending before the next one's starts;
- embeddings that run, run before the first block; neck and head modules that run, after the last;
- the head holds the layer that outputs the logits.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from hftl.models.layer_map import LayerMap


def forward_order(model: nn.Module, inputs: dict[str, Any]) -> tuple[dict[str, int], dict[str, int], torch.Tensor]:
    """(first start, first end) clocks of every module, and the logits, from one eval-mode forward pass."""
    start: dict[str, int] = {}
    end: dict[str, int] = {}
    clock = [0]
    handles = []
    for name, module in model.named_modules():

        def pre(_m: nn.Module, _a: Any, name: str = name) -> None:
            clock[0] += 1
            start.setdefault(name, clock[0])

        def post(_m: nn.Module, _a: Any, _o: Any, name: str = name) -> None:
            clock[0] += 1
            end.setdefault(name, clock[0])

        handles += [module.register_forward_pre_hook(pre), module.register_forward_hook(post)]
    model.eval()
    try:
        with torch.no_grad():
            out = model(**inputs)
    finally:
        for h in handles:
            h.remove()
    logits = out.logits if hasattr(out, "logits") else out.to_tuple()[0]
    return start, end, logits


def _tensor_holders(model: nn.Module, names: list[str]) -> list[str]:
    """The modules under `names` that hold tensors themselves (a name may be a parameter's own name)."""
    modules = dict(model.named_modules())
    out = []
    for name in names:
        if name not in modules:
            continue
        for sub, m in modules[name].named_modules(prefix=name):
            if any(True for _ in m.parameters(recurse=False)) or any(True for _ in m.buffers(recurse=False)):
                out.append(sub)
    return out


def check_layer_map(model: nn.Module, lm: LayerMap, inputs: dict[str, Any]) -> None:
    """Assert `lm` matches the forward order of `model` on `inputs` (see the module docstring)."""
    total = sum(p.numel() for p in model.parameters())
    parts = {}
    for name, _p in model.named_parameters():
        parts[name] = lm.part_of(name)
        assert parts[name] in lm.parts, f"{name} maps to {parts[name]}, not a part"
    in_blocks = sum(p.numel() for n, p in model.named_parameters() if parts[n].startswith("block."))
    assert lm.blocks and in_blocks > 0.01 * total, f"blocks hold {in_blocks} of {total} weights"

    start, end, logits = forward_order(model, inputs)
    groups = [[b, *(lm.block_members[i] if lm.block_members else [])] for i, b in enumerate(lm.blocks)]
    firsts = [min(_first_call(start, m) for m in g) for g in groups]
    lasts = [max(_last_call(end, m) for m in g) for g in groups]
    for i in range(1, len(groups)):
        assert lasts[i - 1] < firsts[i] or _shared(lm, i), f"block {i - 1} ({lm.blocks[i - 1]}) still runs when block {i} starts"
    for name in _tensor_holders(model, lm.embeddings):
        if name in start:
            assert end[name] < firsts[0], f"embeddings module {name} runs after the first block starts"
    for name in _tensor_holders(model, lm.neck + lm.head):
        if name in start:
            assert start[name] > lasts[-1], f"{name} (neck/head) runs before the last block ends"
    head_weights = [n for n in parts if parts[n] == "head"]
    assert head_weights, "no parameter in the head"
    width = logits.shape[-1]
    assert any(p.shape[0] == width for n, p in model.named_parameters() if parts[n] == "head"), (
        f"no head weight has the logits' width {width}"
    )


def _first_call(start: dict[str, int], module: str) -> int:
    hits = [t for n, t in start.items() if n == module or n.startswith(module + ".")]
    return min(hits) if hits else 10**9


def _last_call(end: dict[str, int], module: str) -> int:
    hits = [t for n, t in end.items() if n == module or n.startswith(module + ".")]
    return max(hits) if hits else -1


def _shared(lm: LayerMap, i: int) -> bool:
    return lm.blocks[i] == lm.blocks[i - 1]
