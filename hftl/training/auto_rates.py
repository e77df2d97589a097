"""`auto` learning rates: range tests (`lr_range_test.py`) before the first epoch set the optimizer's rates.

- `train.head_learning_rate: auto` (the default): where only the new head ever trains (head_only), a range test of
  the head alone on the frozen (cached) features; elsewhere the head follows train.learning_rate.
- `train.learning_rate: auto`: a range test of everything the run trains at once (the trained blocks, LoRA's
  adapters, the head unless it has a rate of its own, which it keeps during the test), every parameter group at its
  share of the swept rate, so `layer_lr_decay` keeps its ratios. The phase tested is the first that trains more than
  the head (hybrid: its second phase, tested before the head warm-up, with the head still new), its frozen prefix
  cached as the phase caches it, in train mode (dropout on; BatchNorm statistics are put back after).

The parameter groups are built at NOMINAL until then; the found rates replace the schedule's base rates, and a
resumed run keeps them (TrainState.auto_rates, the scheduler's own state). Under engines that shard the
parameters (FSDP, DeepSpeed) the test cannot run: the head falls back, `learning_rate: auto` is refused.

Example:
    >>> resolve_auto_rates(run, state, run_dir / "plots")   # doctest: +SKIP
    >>> state.auto_rates                                     # doctest: +SKIP
    {'learning_rate': 0.0002, 'head': 0.0002}
"""

from __future__ import annotations

from dataclasses import fields, replace
from pathlib import Path
from typing import Any

import torch

from hftl.config import TrainConfig
from hftl.models.strategies import get_strategy, set_train_mode
from hftl.training.lr_range_test import RangeTest, only_trainable, plot, range_test, steps_for
from hftl.training.train_state import TrainState
from hftl.training.training_run import TrainingRun
from hftl.utils.errors import HftlError

# train.learning_rate's default: the rate `auto` builds the parameter groups at until it resolves, and falls back to
NOMINAL: float = next(f.default for f in fields(TrainConfig) if f.name == "learning_rate")


def nominal(train: TrainConfig) -> TrainConfig:
    """`train` with `learning_rate: auto` at NOMINAL, for building the optimizer before the range test.

    Example:
        >>> nominal(TrainConfig(learning_rate="auto")).learning_rate
        5e-05
    """
    return replace(train, learning_rate=NOMINAL) if train.learning_rate == "auto" else train


def resolve_auto_rates(run: TrainingRun, state: TrainState, plots: Path) -> None:
    """Run the range tests `auto` asks for (none where a resumed `state` has their rates), set the optimizer's
    rates, record them in `state.auto_rates` and give `run.cfg` the resolved train.learning_rate."""
    t, found = run.cfg.train, state.auto_rates
    head_auto = t.head_learning_rate == "auto" and "head" not in found
    why = _head_test_refusal(run) if head_auto else None
    if head_auto and why is None:
        test = _test_head(run, plots)
        if test.chosen is not None:
            found["head"] = test.chosen
        else:
            why = f"the loss never fell clearly: {_about(test, plots / 'lr_range_test_head.png')}"
    if t.learning_rate == "auto":
        if "learning_rate" not in found and (rate := _test_learning_rate(run, plots, _head_has_own_rate(t, found))):
            found["learning_rate"] = rate
        run.cfg = replace(run.cfg, train=replace(t, learning_rate=found.get("learning_rate", NOMINAL)))
    if head_auto and "head" not in found:  # it follows train.learning_rate, now resolved
        found["head"] = run.cfg.train.learning_rate
        run.accelerator.print(f"head learning rate: auto -> train.learning_rate {found['head']:g} ({why})")


def _head_has_own_rate(t: TrainConfig, found: dict[str, float]) -> bool:
    return isinstance(t.head_learning_rate, float) or "head" in found


def _head_test_refusal(run: TrainingRun) -> str | None:
    """Why the head's range test does not run here, or None."""
    head = _head_names(run)
    if not get_strategy(run.cfg.strategy.name).pretrained:
        return "scratch"
    if not run.layer_map.head_is_new or not head:
        return "no new head"
    if run.plan.trainable_any - head:  # a rate fitted to frozen features would outrun a backbone that moves
        return "the backbone trains too; give the head its own rate with a number"
    if run.backend.range_test_refusal:
        return f"{run.backend.range_test_refusal}; set train.head_learning_rate to a number"
    return None


def _head_names(run: TrainingRun) -> set[str]:
    return {n for n in run.plan.trainable_any if run.layer_map.part_of(n) == "head"}


def _test_head(run: TrainingRun, plots: Path) -> RangeTest:
    """The head alone on the first phase's frozen (cached) features, in eval mode (no dropout noise, no BatchNorm
    statistics move); its parameter groups take the chosen rate, if the curve named one."""
    head = _head_names(run)
    run.activate_cache(run.plan.phase_at(0))  # the features the first epoch caches anyway
    run.raw.eval()
    path = plots / "lr_range_test_head.png"
    found = _sweep(run, head, lambda part: 1.0, path, "the head")
    if found.chosen is None:
        return found
    _set_rates(run, lambda part: found.chosen if part == "head" else None)
    run.accelerator.print(f"head learning rate: auto -> {found.chosen:.1e} (a range test of the head: {_about(found, path)})")
    return found


def _test_learning_rate(run: TrainingRun, plots: Path, head_own: bool) -> float | None:
    """train.learning_rate: auto. Returns the rate (NOMINAL, said aloud, where the curve was flat), or None where
    nothing that trains follows train.learning_rate."""
    accelerator = run.accelerator
    if run.backend.range_test_refusal:
        raise HftlError(f"train.learning_rate: auto: {run.backend.range_test_refusal}; set train.learning_rate to a number")
    head = _head_names(run)
    phase = next((p for p in run.plan.phases if p.trainable - head), run.plan.phases[0])
    follows = (lambda part: part != "head") if head_own else (lambda part: True)
    if not any(follows(run.layer_map.part_of(n)) for n in phase.trainable):
        accelerator.print("learning rate: auto: only the head trains, at its own rate; train.learning_rate plays no part")
        return None
    run.activate_cache(phase)
    set_train_mode(run.raw, run.layer_map, phase, run.cfg.strategy.batch_norm)
    shares = {g["part"]: g["initial_lr"] / NOMINAL for g in _groups(run) if follows(g["part"])}
    path = plots / "lr_range_test.png"
    found = _sweep(run, phase.trainable, shares.get, path, "everything that trains", keep=list(run.raw.buffers()))
    if found.chosen is None:
        accelerator.print(
            f"learning rate: auto -> {NOMINAL:g}, the default: the loss never fell clearly ({_about(found, path)}); "
            "set train.learning_rate to a number"
        )
        return NOMINAL
    _set_rates(run, lambda part: found.chosen * shares[part] if part in shares else None)
    what = "a range test of " + (f"phase {phase.name}" if len(run.plan.phases) > 1 else "everything that trains")
    accelerator.print(f"learning rate: auto -> {found.chosen:.1e} ({what}: {_about(found, path)})")
    return found.chosen


def _sweep(run: TrainingRun, names: set[str], share: Any, path: Path, what: str, keep: list | None = None) -> RangeTest:
    """Range-test the parameters `names`, each optimizer group at `share(part)` of the swept rate (None: its own)."""
    accelerator, params = run.accelerator, dict(run.raw.named_parameters())
    ids = {id(params[n]) for n in names}
    groups = []
    for group in _groups(run):
        own = [p for p in group["params"] if id(p) in ids]
        if own:
            scale = share(group["part"])
            fixed = group["initial_lr"] if scale is None else None
            groups.append({"params": own, "weight_decay": group["weight_decay"], "scale": scale or 1.0, "fixed": fixed})

    def loss_of(batch: dict[str, Any]) -> torch.Tensor:
        run.cache.feed_batch(batch)
        with accelerator.autocast():
            return run.loss(run.raw, batch)

    with only_trainable(run.raw, names):
        steps = steps_for(run.steps_per_epoch)
        found = range_test(
            loss_of, groups, lambda: iter(run.train_loader), steps, lambda x: accelerator.reduce(x, "mean"), keep or ()
        )
    if accelerator.is_main_process:
        plot(found, path, what)
    return found


def _groups(run: TrainingRun) -> list[dict[str, Any]]:
    return run.backend.torch_optimizer(run.optimizer).param_groups


def _set_rates(run: TrainingRun, rate_of: Any) -> None:
    """Each optimizer group's base rate to `rate_of(part)` (None: unchanged), the schedule kept."""
    for i, group in enumerate(_groups(run)):
        rate = rate_of(group["part"])
        if rate is not None:
            run.scheduler.base_lrs[i] = group["initial_lr"] = rate
            group["lr"] = rate * run.scheduler.lr_lambdas[i](run.scheduler.last_epoch)


def _about(found: RangeTest, path: Path) -> str:
    return f"{len(found.rates)} steps, {found.seconds:.1f} s; {path}"
