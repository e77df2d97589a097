"""Stand-ins for the frozen prefix: the stored tensors take its place in the model's own forward.

A base cut replaces the base model's `forward` with one that rebuilds its output object from the stored
fields; a block cut makes the frozen blocks pass their input through and swaps the stored hidden states
in before the first trained block. Both only act on batches that carry stored tensors (the `_Feed`),
so uncached batches run the real modules. While filling, `_capture` stops a forward at the cut instead.

Example:
    >>> installed = install(model, cut, feed, output_class, block_kind="tensor")   # doctest: +SKIP
    >>> feed.features = batch.pop(FEATURES); logits = model(**batch).logits        # doctest: +SKIP
    >>> installed.remove()                                                          # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from hftl.training.feature_cache.cut import Cut
from hftl.training.feature_cache.store import _DTYPES, FULL


class _Stop(Exception):
    """Raised by the capture hook: nothing after the cut needs computing while filling the cache."""


class _Feed:
    """Hands the current batch's stored tensors to the stand-ins."""

    def __init__(self) -> None:
        self.features: dict[str, Any] | None = None

    def tensors(self) -> dict[str, torch.Tensor]:
        if self.features is None:
            raise RuntimeError("feature cache: the model ran without cached features for this batch")
        out = dict(self.features["stored"])
        ref = next(iter(out.values()), None)  # shape-only placeholders go where the stored tensors are
        device = ref.device if ref is not None else None
        for name, (shape, dtype) in self.features["shapes"].items():
            if name.endswith(FULL):  # only the first position was stored: the head reads no other
                out[name.removesuffix(FULL)] = out[name.removesuffix(FULL)].expand(shape)
            else:
                out[name] = torch.zeros((), dtype=_DTYPES[dtype], device=device).expand(shape)
        return out


def _output_kind(out: Any) -> str:
    return "tensor" if isinstance(out, torch.Tensor) else f"tuple:{len(out)}"


def _pass_through(kind: str, original: Callable[..., Any], feed: _Feed) -> Callable[..., Any]:
    def forward(*args: Any, **kwargs: Any) -> Any:
        if feed.features is None:  # an uncached batch (training examples that are augmented)
            return original(*args, **kwargs)
        hidden = args[0] if args else kwargs["hidden_states"]
        if kind == "tensor":
            return hidden
        return (hidden, *([None] * (int(kind.split(":")[1]) - 1)))

    return forward


@dataclass
class _Installed:
    modules: list[tuple[nn.Module, Any]] = field(default_factory=list)
    hooks: list[Any] = field(default_factory=list)

    def patch(self, module: nn.Module, make: Callable[[Callable[..., Any]], Callable[..., Any]]) -> None:
        """Give `module` an instance `forward` built around its current one; `remove` restores it."""
        self.modules.append((module, module.__dict__.get("forward")))
        module.forward = make(module.forward)

    def remove(self) -> None:
        for module, previous in reversed(self.modules):
            if previous is None:
                module.__dict__.pop("forward", None)
            else:
                module.forward = previous
        for hook in self.hooks:
            hook.remove()
        self.modules, self.hooks = [], []


def install(model: nn.Module, cut: Cut, feed: _Feed, output_class: Any, block_kind: str) -> _Installed:
    """Stand in for the frozen prefix with the stored tensors whenever a batch carries them (instance
    `forward`s and a pre-hook; nothing is re-registered, so state_dict, DDP and the optimizer see the
    same model). Batches without stored tensors run the real modules."""
    installed = _Installed()
    target = model.get_submodule(cut.module)
    if cut.kind == "base":

        def make(original: Callable[..., Any]) -> Callable[..., Any]:
            def forward(*args: Any, **kwargs: Any) -> Any:
                return original(*args, **kwargs) if feed.features is None else _rebuild(output_class, feed.tensors())

            return forward

        installed.patch(target, make)
        return installed
    for name in cut.skipped:
        installed.patch(model.get_submodule(name), lambda original: _pass_through(block_kind, original, feed))

    def swap_in(module: nn.Module, args: tuple, kwargs: dict) -> tuple[tuple, dict] | None:
        if feed.features is None:
            return None
        hidden = feed.tensors()["hidden"]
        if args:
            return (hidden, *args[1:]), kwargs
        return args, {**kwargs, "hidden_states": hidden}

    installed.hooks.append(target.register_forward_pre_hook(swap_in, with_kwargs=True))
    return installed


@contextmanager
def _capture(model: nn.Module, cut: Cut) -> Iterator[dict[str, Any]]:
    """While active, a forward stops at the cut; the dict gets what crossed it."""
    got: dict[str, Any] = {}
    target = model.get_submodule(cut.module)
    hooks = []
    if cut.kind == "base":

        def after(module: nn.Module, args: tuple, kwargs: dict, out: Any) -> None:
            got["out"] = out
            raise _Stop

        hooks.append(target.register_forward_hook(after, with_kwargs=True))
    else:

        def before(module: nn.Module, args: tuple, kwargs: dict) -> None:
            got["out"] = args[0] if args else kwargs["hidden_states"]
            raise _Stop

        def block_out(module: nn.Module, args: tuple, out: Any) -> None:
            got["block_kind"] = _output_kind(out)

        hooks.append(target.register_forward_pre_hook(before, with_kwargs=True))
        hooks.append(model.get_submodule(cut.skipped[-1]).register_forward_hook(block_out))
    try:
        yield got
    finally:
        for hook in hooks:
            hook.remove()


def _run_to_cut(model: nn.Module, batch: dict[str, Any], got: dict[str, Any]) -> Any:
    try:
        model(**batch)
    except _Stop:
        return got["out"]
    raise RuntimeError("feature cache: the forward pass never reached the cut")


def _fields(out: Any) -> dict[str, Any]:
    """The tensors that crossed the cut, by name; tuple fields (per-layer hidden states) as `name#i`."""
    if isinstance(out, torch.Tensor):
        return {"hidden": out}
    fields: dict[str, Any] = {}
    for name, value in out.items():
        if isinstance(value, (tuple, list)):
            fields.update({f"{name}#{i}": v for i, v in enumerate(value)})
        else:
            fields[name] = value
    return fields


def _rebuild(output_class: Any, fields: dict[str, torch.Tensor]) -> Any:
    """The base model's output object from `_fields`' flat names."""
    kwargs: dict[str, Any] = {}
    for name, value in fields.items():
        if "#" in name:
            base, i = name.split("#")
            kwargs.setdefault(base, {})[int(i)] = value
        else:
            kwargs[name] = value
    kwargs = {k: tuple(v[i] for i in sorted(v)) if isinstance(v, dict) else v for k, v in kwargs.items()}
    return output_class(**kwargs)


@contextmanager
def _eval_mode(model: nn.Module) -> Iterator[None]:
    """Run `model` in inference mode, then give each module back its own training flag (a phase leaves
    frozen parts in inference mode and trained ones in training mode; `model.train()` would not)."""
    modes = {m: m.training for m in model.modules()}
    model.eval()
    try:
        yield
    finally:
        for m, mode in modes.items():
            m.training = mode
