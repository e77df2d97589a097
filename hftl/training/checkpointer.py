"""A run's checkpoints: restore the newest, save one (every process takes part), keep and reload the best epoch.

The file format is `checkpoint.py`'s; what the engine holds (sharded tensors, ZeRO's optimizer shards)
is the backend's. Saves are collectives: every process calls `save` and `save_best`, the main process
writes.

Example:
    >>> checkpoints = Checkpointer(backend, run_dir / "checkpoints", model, optimizer, scheduler, names, keep=2)  # doctest: +SKIP
    >>> state, rng = checkpoints.restore(steps_per_epoch=10, accumulation=1)  # doctest: +SKIP
    >>> checkpoints.save(state)                                                # doctest: +SKIP
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from safetensors.torch import load_file, save_file
from torch import nn

from hftl.backends import Backend
from hftl.training.checkpoint_files import gather_rng_states, latest_checkpoint, load_checkpoint, save_checkpoint
from hftl.training.train_state import TrainState
from hftl.utils.errors import HftlError

BEST_WEIGHTS = "best.safetensors"


class Checkpointer:
    """Checkpoints of one run in `folder`: the tensors named in `names` (what trains, and buffers), the
    optimizer, the scheduler, every process's RNG state and the `TrainState`."""

    def __init__(
        self, backend: Backend, folder: Path, model: nn.Module, optimizer: Any, scheduler: Any, names: set[str], keep: int
    ) -> None:
        self.backend, self.folder, self.model, self.optimizer, self.scheduler = backend, folder, model, optimizer, scheduler
        self.names, self.keep = names, keep
        self.accelerator = backend.accelerator

    def restore(self, steps_per_epoch: int, accumulation: int) -> tuple[TrainState, dict[str, Any] | None]:
        """The newest checkpoint's state and this process's RNG state (to set last), or a fresh state and None."""
        notes: list[str] = []
        latest = latest_checkpoint(self.folder, notes)
        accelerator, raw = self.accelerator, self.backend.unwrap(self.model)
        for note in notes:
            accelerator.print(note)
        if latest is None:
            if notes:
                accelerator.print("no undamaged checkpoint is left: the run starts from the beginning")
            return TrainState(), None
        loaded = load_checkpoint(latest, accelerator.process_index, accelerator.num_processes)
        known = raw.state_dict().keys()  # once: a state dict per tensor was quadratic in the model's size
        missing = [k for k in loaded["tensors"] if k not in known]
        if missing:
            raise HftlError(
                f"checkpoint {latest} does not fit this model (unknown tensors {missing[:3]}); was the config changed?"
            )
        self.backend.load_model_state(self.model, loaded["tensors"])
        self.backend.load_optimizer_state(self.model, self.optimizer.optimizer, loaded["optimizer"], latest)
        self.scheduler.load_state_dict(loaded["scheduler"])
        state = TrainState(**loaded["state"])
        accelerator.print(f"resuming from {latest} (epoch {state.epoch + 1}, step {state.global_step}, phase {state.phase})")
        moved = self._rescale_position(state, steps_per_epoch, accumulation)
        if moved or not loaded["rng_exact"]:
            accelerator.print(
                (moved or "the checkpoint holds no RNG state for each of these processes")
                + ": dropout draws will differ from an uninterrupted run"
            )
        return state, loaded["rng"]

    def _rescale_position(self, state: TrainState, steps_per_epoch: int, accumulation: int) -> str | None:
        """Carry a checkpoint's place in the epoch over to another process count, through samples consumed.

        `batch_in_epoch` counts each process's batches, and the processes take the epoch's batches in
        turn, so `batch_in_epoch x processes` batches of the epoch are done whatever the count. The step
        (and the LR schedule with it) moves to where a run on this many processes would be at that point,
        so the run ends at the step count and the LR an uninterrupted run on them would.
        Returns a line for the user, or None when the count is unchanged.
        """
        processes = self.accelerator.num_processes
        saved = state.num_processes or processes  # older checkpoints: assume unchanged, as they were read before
        if saved == processes:
            return None
        done = state.batch_in_epoch * saved  # batch_size-sized batches of this epoch already trained on
        state.batch_in_epoch = done // processes  # rounding down trains on at most processes - 1 batches twice
        state.global_step = state.epoch * steps_per_epoch + state.batch_in_epoch // accumulation
        self.scheduler.last_epoch = state.global_step - 1
        self.scheduler.step()  # sets the learning rates for the new position
        return (
            f"checkpoint written by {saved} process(es), resumed on {processes}: epoch {state.epoch + 1} continues after "
            f"{done} of its batches, at step {state.global_step}"
        )

    def save(self, state: TrainState) -> None:
        """Write a resumable checkpoint of `state` (every process calls it; each gives its RNG state)."""
        accelerator, backend = self.accelerator, self.backend
        accelerator.wait_for_everyone()
        rngs = gather_rng_states()  # every rank's, so each resumes its own stream
        # Collectives under FSDP and DeepSpeed: every process gathers, the main one writes.
        tensors = {k: v for k, v in backend.model_state(self.model).items() if k in self.names}
        optimizer_state = backend.optimizer_state(self.model, self.optimizer.optimizer)
        tmp = backend.optimizer_shards(self.folder, self.optimizer.optimizer)  # DeepSpeed: each process's shard
        if accelerator.is_main_process:
            save_checkpoint(
                self.folder, state.global_step, tensors, optimizer_state, self.scheduler.state_dict(), state.to_dict(),
                rngs, self.keep, tmp,
            )  # fmt: skip
        accelerator.wait_for_everyone()

    def save_best(self) -> None:
        """Keep the current weights as the best epoch's (`best.safetensors`, replaced atomically)."""
        tensors = self.backend.model_state(self.model)  # every process: a collective under FSDP
        if not self.accelerator.is_main_process:
            return
        self.folder.mkdir(parents=True, exist_ok=True)
        tmp = self.folder / f".{BEST_WEIGHTS}.tmp"
        save_file({k: v.detach().contiguous().cpu() for k, v in tensors.items() if k in self.names}, str(tmp))
        os.replace(tmp, self.folder / BEST_WEIGHTS)

    def load_best(self) -> bool:
        """Put the best epoch's weights back into the model; False when none were kept."""
        best = self.folder / BEST_WEIGHTS
        if not best.exists():
            return False
        self.backend.load_model_state(self.model, load_file(str(best)))
        return True
