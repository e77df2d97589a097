"""The layer map: embeddings -> ordered backbone blocks -> neck -> head, found by introspection.

Every strategy (what trains), the BatchNorm policy, discriminative learning rates and LoRA's default
targets are operations on this map, so hftl never keeps a per-checkpoint list of layer names.

Example:
    >>> lm = build_layer_map(model)                      # doctest: +SKIP
    >>> lm.blocks[:2], lm.head                          # doctest: +SKIP
    (['vit.layers.0', 'vit.layers.1'], ['classifier'])
"""

from __future__ import annotations

from dataclasses import dataclass, field

from torch import nn

from hftl.errors import HftlError

# peft wraps the task model as PeftModel(base_model=LoraModel(model=...)); strip that to map names.
_PEFT_PREFIX = "base_model.model."


@dataclass
class LayerMap:
    """Module names (relative to the task model) of each part, in forward order."""

    embeddings: list[str]
    blocks: list[str]
    neck: list[str]
    head: list[str]
    base_prefix: str
    _prefixes: list[tuple[str, str]] = field(default_factory=list, repr=False)

    def __post_init__(self) -> None:
        pairs = [(name, "embeddings") for name in self.embeddings]
        pairs += [(name, f"block.{i}") for i, name in enumerate(self.blocks)]
        pairs += [(name, "neck") for name in self.neck]
        pairs += [(name, "head") for name in self.head]
        # Longest prefix first, so a block wins over an enclosing module.
        self._prefixes = sorted(pairs, key=lambda p: -len(p[0]))

    @property
    def parts(self) -> list[str]:
        """Part names bottom to top: embeddings, block.0 .. block.N-1, neck, head."""
        return ["embeddings", *(f"block.{i}" for i in range(len(self.blocks))), "neck", "head"]

    def part_of(self, param_name: str) -> str:
        """The part a parameter or buffer belongs to; works on peft-wrapped names too."""
        name = param_name[len(_PEFT_PREFIX) :] if param_name.startswith(_PEFT_PREFIX) else param_name
        for prefix, part in self._prefixes:
            if name == prefix or name.startswith(prefix + "."):
                return part
        # Tensors held directly by the base model (e.g. wav2vec2's masked_spec_embed) feed the
        # blocks from below; anything else outside the base model belongs to the task head.
        if self.base_prefix and (name.startswith(self.base_prefix + ".")):
            return "embeddings"
        return "head"

    def module_part(self, module_name: str) -> str | None:
        """The part a module lies inside, or None for modules that enclose several parts (`vit`, `encoder`)."""
        name = module_name[len(_PEFT_PREFIX) :] if module_name.startswith(_PEFT_PREFIX) else module_name
        for prefix, part in self._prefixes:
            if name == prefix or name.startswith(prefix + "."):
                return part
        return None

    def block_index(self, part: str) -> int | None:
        return int(part.split(".", 1)[1]) if part.startswith("block.") else None


def full_name(model: nn.Module, name: str) -> str:
    """A layer-map module name as it is in `model`: under peft's LoRA wrapper it gains `base_model.model.`."""
    return _PEFT_PREFIX + name if hasattr(model, "peft_config") else name


def build_layer_map(model: nn.Module, blocks_path: str | None = None) -> LayerMap:
    """Find the layer map of a transformers task model (e.g. `ViTForImageClassification`).

    The blocks are the largest list of same-class modules inside the base model (ViT's
    `layers`, BERT's `encoder.layer`, ResNet's `encoder.stages`); modules registered before them on
    the way down are embeddings, those after are the neck (final norm, pooler), and everything outside
    the base model is the head. `blocks_path` (dotted, relative to the base model) overrides the search.
    """
    base_prefix = getattr(model, "base_model_prefix", "") or ""
    base = getattr(model, base_prefix, None) if base_prefix else None
    if not isinstance(base, nn.Module):
        base, base_prefix = model, ""
    path = blocks_path or _find_block_container(base)
    if path is None:
        raise HftlError(
            f"cannot find the backbone blocks of {type(model).__name__}: no list of repeated layers in its base model. "
            "Set model.blocks to the dotted path of its layer list (e.g. model.blocks=encoder.layer)."
        )
    container = _get_submodule(base, path, type(model).__name__)
    join = (lambda n: f"{base_prefix}.{n}") if base_prefix else (lambda n: n)

    embeddings: list[str] = []
    neck: list[str] = []
    parent, walked = base, ""
    for step in path.split("."):
        seen_step = False
        for name, _child in parent.named_children():
            full = f"{walked}{name}"
            if name == step:
                seen_step = True
            elif not _has_tensors(_child):
                continue
            elif seen_step:
                neck.append(join(full))
            else:
                embeddings.append(join(full))
        parent = getattr(parent, step)
        walked += step + "."
    blocks = [join(f"{path}.{name}") for name, _ in container.named_children()]
    head = [name for name, child in model.named_children() if child is not base and _has_tensors(child)]
    if not head:
        raise HftlError(f"{type(model).__name__} has no task head outside its base model {base_prefix!r}")
    return LayerMap(embeddings=embeddings, blocks=blocks, neck=neck, head=head, base_prefix=base_prefix)


def _has_tensors(module: nn.Module) -> bool:
    return any(True for _ in module.parameters()) or any(True for _ in module.buffers())


def _get_submodule(base: nn.Module, path: str, model_name: str) -> nn.Module:
    try:
        module = base.get_submodule(path)
    except AttributeError:
        raise HftlError(f"model.blocks={path!r} is not a submodule of {model_name}'s base model") from None
    if not isinstance(module, (nn.ModuleList, nn.Sequential)) or len(module) == 0:
        raise HftlError(f"model.blocks={path!r} must name a non-empty ModuleList or Sequential in {model_name}")
    return module


def _find_block_container(base: nn.Module) -> str | None:
    """Dotted name of the repeated-block list holding the most parameters, or None."""
    best, best_params = None, 0
    for name, module in base.named_modules():
        if not name or not isinstance(module, (nn.ModuleList, nn.Sequential)) or len(module) < 2:
            continue
        children = list(module.children())
        if len({type(c) for c in children}) != 1:
            continue
        n_params = sum(p.numel() for p in module.parameters())
        # Strictly more: on a tie the outer list (found first) wins, e.g. stages over a stage's layers.
        if n_params > best_params:
            best, best_params = name, n_params
    return best


def numel(param: nn.Parameter) -> int:
    """Elements of a parameter; under DeepSpeed ZeRO-3 the whole parameter's, not this process's partition's."""
    return getattr(param, "ds_numel", param.numel())


def describe(model: nn.Module, layer_map: LayerMap) -> list[tuple[str, int, int]]:
    """(part, trainable, total) parameter counts, bottom to top, with blocks summarised by range."""
    counts: dict[str, list[int]] = {part: [0, 0] for part in layer_map.parts}
    for name, param in model.named_parameters():
        row = counts[layer_map.part_of(name)]
        row[1] += numel(param)
        if param.requires_grad:
            row[0] += numel(param)
    return [(part, t, n) for part, (t, n) in counts.items() if n]


def format_trainable(model: nn.Module, layer_map: LayerMap) -> str:
    """A small table of what trains, part by part, for printing before training."""
    rows = describe(model, layer_map)
    lines = [f"{'part':<12} {'trainable':>12} {'total':>12}"]
    for part, trainable, total in rows:
        state = "frozen" if trainable == 0 else ("trains" if trainable == total else "partly")
        lines.append(f"{part:<12} {trainable:>12,} {total:>12,}  {state}")
    trainable = sum(r[1] for r in rows)
    total = sum(r[2] for r in rows)
    lines.append(f"{'all':<12} {trainable:>12,} {total:>12,}  ({100 * trainable / max(total, 1):.2f}% trainable)")
    return "\n".join(lines)
