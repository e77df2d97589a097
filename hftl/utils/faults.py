"""Fault injection for the crash, resume, divergence and full-disk tests: SIGKILL or SIGTERM this process, a NaN
loss, or a write failing as on a full disk, at a chosen point.

A test sets one of the variables below to a step (or epoch) number; when the run reaches that point,
the process dies at once, as it would under `kill -9` or a lost machine. Unset, these cost one
dictionary lookup.

Example:
    $ HFTL_FAULT_KILL_AFTER_STEP=5 hftl train config.yaml      # dies right after optimizer step 5
"""

from __future__ import annotations

import errno
import os
import signal
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

AFTER_STEP = "HFTL_FAULT_KILL_AFTER_STEP"  # after an optimizer step (and a save_steps checkpoint there)
AFTER_EPOCH = "HFTL_FAULT_KILL_AFTER_EPOCH"  # after an epoch's checkpoint
IN_CHECKPOINT = "HFTL_FAULT_KILL_IN_CHECKPOINT"  # inside the write of this step's checkpoint, files half written
SIGTERM_AFTER_STEP = "HFTL_FAULT_SIGTERM_AFTER_STEP"  # a SIGTERM (a scheduler's preemption) after this step
IN_CACHE_FILL = "HFTL_FAULT_KILL_IN_CACHE_FILL"  # 1: after the first batch written into a feature-cache fill
IN_EXPORT = "HFTL_FAULT_KILL_IN_EXPORT"  # 1: model/ written into its temporary folder, not yet put in place


def fault(name: str, at: int) -> None:
    """Kill this process with SIGKILL (SIGTERM for SIGTERM_AFTER_STEP) if the variable `name` is set to `at`."""
    if os.environ.get(name) == str(at):
        os.kill(os.getpid(), signal.SIGTERM if name == SIGTERM_AFTER_STEP else signal.SIGKILL)


NAN_LOSS_AT_STEP = "HFTL_FAULT_NAN_LOSS_AT_STEP"  # the loss of this optimizer step's batches becomes NaN


def poison(loss: torch.Tensor, step: int) -> torch.Tensor:
    """The loss as NaN (so its gradients are too) if NAN_LOSS_AT_STEP is set to `step`, as a diverging run's."""
    return loss * float("nan") if os.environ.get(NAN_LOSS_AT_STEP) == str(step) else loss


ENOSPC_IN = "HFTL_FAULT_ENOSPC_IN"  # checkpoint (or checkpoint:STEP), cache or model: that write fails as on a full disk


def disk_full(where: str, path: Path, step: int | None = None) -> None:
    """Fail the write of `where` (at `step`) as a full disk does (OSError ENOSPC) if ENOSPC_IN names it."""
    if os.environ.get(ENOSPC_IN) in (where, f"{where}:{step}"):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))
