"""The layer map: embeddings -> ordered backbone blocks -> neck -> head, found by introspection.

Every strategy (what trains), the BatchNorm policy, discriminative learning rates and LoRA's default
targets are operations on this map, so hftl never keeps a per-checkpoint list of layer names.

Example:
    >>> lm = build_layer_map(model)                      # doctest: +SKIP
    >>> lm.blocks[:2], lm.head                          # doctest: +SKIP
    (['vit.layers.0', 'vit.layers.1'], ['classifier'])
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from torch import nn

from hftl.models.layer_trace import Trace, example_inputs, generation_encoder, trace_forward
from hftl.utils.errors import HftlError

# peft wraps the task model as PeftModel(base_model=LoraModel(model=...)); strip that to map names.
_PEFT_PREFIX = "base_model.model."


@dataclass
class LayerMap:
    """Module names (relative to the task model) of each part, in forward order.

    `blocks[i]` is the first module of block i to run; `block_members[i]` the other modules of the
    same block where a model keeps a block's layers in parallel lists (FlauBERT's attention and
    feed-forward lists, PVT's per-stage patch embeddings). `classifier` is the layer that outputs the
    logits; `base_prefix` the module whose outputs feed the head ("" when the head sits inside it).
    `head_is_new` is False where the head is pretrained and kept (a speech-to-text decoder, whose output
    layer is the tokenizer's vocabulary): it is not re-initialised, and LoRA adapts it rather than training it.
    """

    embeddings: list[str]
    blocks: list[str]
    neck: list[str]
    head: list[str]
    base_prefix: str
    block_members: list[list[str]] = field(default_factory=list)
    classifier: str | None = None
    note: str | None = None  # said once before training: how the map was read where it is not the usual reading
    head_is_new: bool = True
    _prefixes: list[tuple[str, str]] = field(default_factory=list, repr=False)

    def __post_init__(self) -> None:
        pairs = [(name, "embeddings") for name in self.embeddings]
        pairs += [(name, f"block.{i}") for i, name in enumerate(self.blocks)]
        pairs += [(name, f"block.{i}") for i, names in enumerate(self.block_members) for name in names]
        pairs += [(name, "neck") for name in self.neck]
        pairs += [(name, "head") for name in self.head]
        # Longest prefix first, so a block wins over an enclosing module.
        self._prefixes = sorted(pairs, key=lambda p: -len(p[0]))

    @property
    def parts(self) -> list[str]:
        """Part names bottom to top: embeddings, block.0 .. block.N-1, neck, head."""
        return ["embeddings", *(f"block.{i}" for i in range(len(self.blocks))), "neck", "head"]

    @property
    def grouped(self) -> bool:
        """Whether a block is more than one module (parallel layer lists)."""
        return any(self.block_members)

    def part_of(self, param_name: str) -> str:
        """The part a parameter or buffer belongs to; works on peft-wrapped names too."""
        return self.module_part(param_name) or "head"

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


def build_layer_map(model: nn.Module, blocks_path: str | None = None, inputs: dict[str, Any] | None = None) -> LayerMap:
    """Find the layer map of a transformers task model (e.g. `ViTForImageClassification`).

    One forward pass on `inputs` (an example batch; made from the config when None) says what runs
    when. The blocks are the list of layers that run one after another holding the most weights
    (ViT's `layers`, BERT's `encoder.layer`, ResNet's `encoder.stages`, ALBERT's one shared group);
    what runs before them is embeddings, what runs after is the neck inside the base model and the head
    outside it. `blocks_path` (dotted, relative to the base model or to the task model) overrides the
    search. When the forward pass fails the map follows registration order, and `note` says so.

    An encoder-decoder that generates (Whisper) is read as encoder blocks -> encoder norm (neck) ->
    decoder and output layer (head): the decoder is what a new task retrains first, and the encoder's
    output is what the feature cache keeps.

    Example:
        >>> build_layer_map(bert).blocks[:1]   # doctest: +SKIP
        ['bert.encoder.layer.0']
    """
    trace = trace_forward(model, inputs if inputs is not None else example_inputs(model))
    spans = _spans(model, trace)
    encoder = generation_encoder(model)
    groups = _configured_blocks(model, blocks_path) if blocks_path else _find_blocks(model, spans, trace, encoder)
    if not groups:
        raise HftlError(
            f"cannot find the backbone blocks of {type(model).__name__}: no list of layers that run one after "
            "another. Set model.blocks to the dotted path of its layer list (e.g. model.blocks=encoder.layer)."
        )
    groups = [sorted(g, key=lambda n: spans.get(n, (0, 0))[0]) for g in groups]
    layer_map = _assign_parts(model, groups, spans, trace, encoder)
    layer_map.head_is_new = encoder is None
    if encoder is not None:
        layer_map.note = (
            f"{type(model).__name__} generates: the blocks are its encoder's {len(groups)} layers and the head is the "
            "decoder with its output layer (head_only trains the decoder on the frozen encoder, freeze adds the top "
            "strategy.trainable_blocks encoder layers, lora adapts both)"
        )
    if not trace.ok:
        layer_map.note = (
            f"the layer map of {type(model).__name__} follows registration order: an example forward pass failed "
            f"({trace.error}); check the table below, or set model.blocks"
        )
    return layer_map


def _spans(model: nn.Module, trace: Trace) -> dict[str, tuple[int, int]]:
    """(start, end) of every module's first call, widened by the first calls of the layers with tensors
    under it. Parameterless modules do not widen their parents: transformers shares one activation
    module between all layers (FlauBERT's GELU), which would make every layer seem to span them all."""
    holders = {name for name, module in model.named_modules() if _holds_tensors(module)}
    spans: dict[str, tuple[int, int]] = {}
    for name, start in trace.start.items():
        end = trace.end.get(name, start)
        parts = name.split(".") if name else []
        lo, hi = spans.get(name, (start, end))
        spans[name] = (min(lo, start), max(hi, end))
        if name not in holders:
            continue
        for depth in range(len(parts)):
            key = ".".join(parts[:depth])
            lo, hi = spans.get(key, (start, end))
            spans[key] = (min(lo, start), max(hi, end))
    return spans


def _configured_blocks(model: nn.Module, path: str) -> list[list[str]]:
    prefix = getattr(model, "base_model_prefix", "") or ""
    for root in ([prefix] if prefix and isinstance(getattr(model, prefix, None), nn.Module) else []) + [""]:
        full = f"{root}.{path}" if root else path
        try:
            module = model.get_submodule(full)
        except AttributeError:
            continue
        if not isinstance(module, (nn.ModuleList, nn.Sequential)) or len(module) == 0:
            raise HftlError(f"model.blocks={path!r} must name a non-empty ModuleList or Sequential in {type(model).__name__}")
        return [[f"{full}.{name}"] for name, _ in module.named_children()]
    raise HftlError(f"model.blocks={path!r} is not a submodule of {type(model).__name__} or of its base model")


def _find_blocks(model: nn.Module, spans: dict[str, tuple[int, int]], trace: Trace, under: str | None = None) -> list[list[str]]:
    """The run of blocks doing the most work: the most layer calls in the forward pass (a deep body over
    a wide stem), then the most parameters, then the outermost; with parallel lists joined in. `under`:
    only runs inside this module (a generating model's encoder)."""
    leaf_calls = {n: c for n, c in trace.calls.items() if next(model.get_submodule(n).children(), None) is None}
    encoder = _feature_encoder(model)
    best: tuple[tuple[int, int, int], list[str], str] | None = None
    for parent, run in _candidate_runs(model, spans, trace):
        if under is not None and not _under(run[0], under):
            continue
        if encoder and all(n in encoder for r in run for n, _ in model.get_submodule(r).named_parameters(prefix=r)):
            continue  # a speech model's convolutional feature encoder: the input's processing, not the blocks
        calls = sum(c for n, c in leaf_calls.items() for r in run if _under(n, r))
        n_params = sum(p.numel() for name in run for p in model.get_submodule(name).parameters())
        score = (calls, n_params, -run[0].count("."))
        if best is None or score > best[0]:
            best = (score, run, parent)
    if best is None:
        return []
    run, parent = best[1], best[2]
    return _join_parallel(model, parent, run, spans) if trace.ok else [[name] for name in run]


def _feature_encoder(model: nn.Module) -> set[str]:
    """Parameters transformers' own `freeze_feature_encoder()` freezes (wav2vec2's and its kin's convolutions
    over the raw waveform); every trainable flag is put back as it was."""
    freeze = getattr(model, "freeze_feature_encoder", None)
    if not callable(freeze):
        return set()
    params = dict(model.named_parameters())
    flags = {n: p.requires_grad for n, p in params.items()}
    module_flags = {m: m._requires_grad for m in model.modules() if hasattr(m, "_requires_grad")}
    for p in params.values():
        p.requires_grad_(True)
    try:
        freeze()
        return {n for n, p in params.items() if not p.requires_grad}
    finally:
        for n, p in params.items():
            p.requires_grad_(flags[n])
        for m in model.modules():
            if hasattr(m, "_requires_grad"):
                m._requires_grad = module_flags.get(m, True)


def _candidate_runs(model: nn.Module, spans: dict[str, tuple[int, int]], trace: Trace) -> Iterator[tuple[str, list[str]]]:
    """Lists of layers that could be the blocks: a ModuleList/Sequential's children, or same-class siblings."""
    for name, module in model.named_modules():
        kids = [(f"{name}.{k}" if name else k, c) for k, c in module.named_children() if _has_tensors(c)]
        if isinstance(module, (nn.ModuleList, nn.Sequential)):
            runs = [kids] if trace.ok or len({type(c) for _, c in kids}) == 1 else []
        elif trace.ok:
            runs = _same_class_runs(kids)
        else:
            runs = []
        for run in runs:
            names = [n for n, _ in run]
            # Blocks are layers, not single weights (BERT's three embedding tables, MarkupLM's 50 xpath tables),
            # except in a Sequential that ran as a whole: it chains them (VGG's `features`: convolutions in turn).
            chained = isinstance(module, nn.Sequential) and trace.calls.get(name, 0) > 0
            layers = chained or all(next(c.children(), None) is not None for _, c in run)
            if names and layers and _runs_in_turn(names, spans, trace):
                yield name, names


def _same_class_runs(kids: list[tuple[str, nn.Module]]) -> list[list[tuple[str, nn.Module]]]:
    """Consecutive siblings of one class (timm ResNet's layer1..layer4); plain containers count as one
    class only when all hold layers or all hold single weights (not timm ConvNeXt's `stem` beside its `stages`)."""
    runs: list[list[tuple[str, nn.Module]]] = []
    for kid in kids:
        if runs and _same_kind(runs[-1][-1][1], kid[1]):
            runs[-1].append(kid)
        else:
            runs.append([kid])
    return [r for r in runs if len(r) >= 2]


def _same_kind(a: nn.Module, b: nn.Module) -> bool:
    if type(a) is not type(b):
        return False
    if isinstance(a, (nn.ModuleList, nn.Sequential)):  # both lists of layers, or both lists of single weights
        return _holds_layers(a) == _holds_layers(b)
    return True


def _holds_layers(container: nn.Module) -> bool:
    return all(next(c.children(), None) is not None for c in container.children())


def _runs_in_turn(names: list[str], spans: dict[str, tuple[int, int]], trace: Trace) -> bool:
    """Each layer's first call ends before the next layer's starts (or one shared layer runs several times)."""
    if not trace.ok:
        return len(names) >= 2
    if any(n not in spans for n in names):
        return False
    if len(names) == 1:
        return trace.calls.get(names[0], 0) >= 2

    def first_end(n: str) -> int:
        return trace.end.get(n, spans[n][1])

    return all(first_end(a) < trace.start.get(b, spans[b][0]) for a, b in zip(names, names[1:]))


def _join_parallel(model: nn.Module, parent: str, run: list[str], spans: dict[str, tuple[int, int]]) -> list[list[str]]:
    """Block i is run[i] plus the i-th layer of every sibling list of the same length that runs between
    run[i-1] and run[i+1] (FlauBERT's attentions beside its ffns, PVT's patch embeddings beside its blocks)."""
    groups = [[name] for name in run]
    if len(run) < 2:
        return groups
    container = model.get_submodule(parent)
    holder = parent.rsplit(".", 1)[0] if "." in parent else ""
    if not isinstance(container, (nn.ModuleList, nn.Sequential)):
        return groups
    for sib_name, sibling in model.get_submodule(holder).named_children():
        full = f"{holder}.{sib_name}" if holder else sib_name
        if full == parent or not isinstance(sibling, (nn.ModuleList, nn.Sequential)) or len(sibling) != len(run):
            continue
        members = [f"{full}.{k}" for k, _ in sibling.named_children()]
        if all(_between(m, i, run, spans) for i, m in enumerate(members)):
            for group, member in zip(groups, members):
                group.append(member)
    return groups


def _between(name: str, i: int, run: list[str], spans: dict[str, tuple[int, int]]) -> bool:
    if name not in spans:
        return False
    lo = spans[run[i - 1]][1] if i else -1
    hi = spans[run[i + 1]][0] if i + 1 < len(run) else float("inf")
    return lo < spans[name][0] and spans[name][1] < hi


def _assign_parts(
    model: nn.Module, groups: list[list[str]], spans: dict[str, tuple[int, int]], trace: Trace, base: str | None = None
) -> LayerMap:
    """Every module holding tensors goes to one part by when it ran (by where it is registered if it never ran)."""
    order = {name: i for i, (name, _) in enumerate(model.named_modules())}
    in_block = {m: i for i, group in enumerate(groups) for m in group}
    first = min(order[m] for m in groups[0])
    last = max(i for name, i in order.items() if any(name == m or name.startswith(m + ".") for m in groups[-1]))
    blocks_start = min(spans[m][0] for m in groups[0] if m in spans) if trace.ok else 0
    blocks_end = max(spans[m][1] for m in groups[-1] if m in spans) if trace.ok else 0
    side: dict[str, str] = {}
    for name, module in model.named_modules():
        if _block_of(name, in_block) is not None or not _holds_tensors(module):
            continue
        span = spans.get(name)
        if span and span[1] < blocks_start:
            side[name] = "before"
        elif span and span[0] > blocks_end:
            side[name] = "after"
        else:
            side[name] = "before" if order[name] < first else "after" if order[name] > last else "before"
    when = {n: spans[n][0] if n in spans else order[n] for n in side} if trace.ok else order
    side = dict(sorted(side.items(), key=lambda kv: when[kv[0]]))  # forward order
    return _split_head(model, groups, side, trace, base)


def _block_of(name: str, in_block: dict[str, int]) -> int | None:
    parts = name.split(".")
    for depth in range(len(parts), 0, -1):
        hit = in_block.get(".".join(parts[:depth]))
        if hit is not None:
            return hit
    return None


def _split_head(
    model: nn.Module, groups: list[list[str]], side: dict[str, str], trace: Trace, base: str | None = None
) -> LayerMap:
    """The base model is the top-level module holding the blocks and all that runs before them (or `base`,
    a generating model's encoder); what runs after is the neck inside it and the head outside it. A head
    inside the base is its classifier layer."""
    top = base if base and _under(groups[0][0], base) else groups[0][0].split(".", 1)[0]
    before = [n for n, s in side.items() if s == "before"]
    after = [n for n, s in side.items() if s == "after"]
    # Embeddings outside the blocks' top-level module (HGNetV2's embedder): no one base model.
    base = "" if top == groups[0][0] or any(not _under(n, top) for n in before) else top
    head = [n for n in after if not _under(n, top)]
    neck = [n for n in after if _under(n, top)]
    if not head and trace.classifier in after:
        # The classifier inside the base (timm's `fc`, Perceiver's decoder): no base output to cut at.
        head, base = [trace.classifier], ""
        neck = [n for n in neck if n != trace.classifier]
    if not head:
        raise HftlError(
            f"{type(model).__name__} has no task head: no layer with weights runs after its blocks "
            f"({groups[-1][0]}). Set model.blocks to the dotted path of its backbone's layer list."
        )
    return LayerMap(
        embeddings=_collapse(model, before),
        blocks=[g[0] for g in groups],
        neck=_collapse(model, neck),
        head=_collapse(model, head, modules_only=True),
        base_prefix=base,
        block_members=[g[1:] for g in groups] if any(len(g) > 1 for g in groups) else [],
        classifier=trace.classifier,
    )


def _under(name: str, prefix: str) -> bool:
    return name == prefix or name.startswith(prefix + ".")


def _collapse(model: nn.Module, holders: list[str], modules_only: bool = False) -> list[str]:
    """The fewest names covering `holders` (modules holding tensors of one part): a module all of whose
    tensors are in the part stands for its submodules (`bert.embeddings`, not its three tables). A
    holder that also encloses other parts (wav2vec2's base model and its masked_spec_embed) is listed
    by its own tensors' names, unless `modules_only`."""
    wanted = set(holders)
    total: dict[str, int] = {}
    hits: dict[str, int] = {}
    for name, module in model.named_modules():
        if name and _holds_tensors(module):
            parts = name.split(".")
            for depth in range(1, len(parts) + 1):
                key = ".".join(parts[:depth])
                total[key] = total.get(key, 0) + 1
                hits[key] = hits.get(key, 0) + (name in wanted)
    out: list[str] = []
    for name in holders:
        parts, top = name.split("."), name
        for depth in range(len(parts) - 1, 0, -1):
            key = ".".join(parts[:depth])
            if hits[key] != total[key]:
                break
            top = key
        if hits[top] != total[top] and not modules_only:  # encloses other parts: name its own tensors
            module = model.get_submodule(top)
            out += [f"{top}.{n}" for n, _ in [*module.named_parameters(recurse=False), *module.named_buffers(recurse=False)]]
        else:
            out.append(top)
    return list(dict.fromkeys(out))


def _holds_tensors(module: nn.Module) -> bool:
    return any(True for _ in module.parameters(recurse=False)) or any(True for _ in module.buffers(recurse=False))


def _has_tensors(module: nn.Module) -> bool:
    return any(True for _ in module.parameters()) or any(True for _ in module.buffers())


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
