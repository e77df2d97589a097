"""Fault injection for the crash and resume tests: SIGKILL this process at a chosen point.

A test sets one of the variables below to a step (or epoch) number; when the run reaches that point,
the process dies at once, as it would under `kill -9` or a lost machine. Unset, these cost one
dictionary lookup.

Example:
    $ HFTL_FAULT_KILL_AFTER_STEP=5 hftl train config.yaml      # dies right after optimizer step 5
"""

from __future__ import annotations

import os
import signal

AFTER_STEP = "HFTL_FAULT_KILL_AFTER_STEP"  # after an optimizer step (and a save_steps checkpoint there)
AFTER_EPOCH = "HFTL_FAULT_KILL_AFTER_EPOCH"  # after an epoch's checkpoint
IN_CHECKPOINT = "HFTL_FAULT_KILL_IN_CHECKPOINT"  # inside the write of this step's checkpoint, files half written


def fault(name: str, at: int) -> None:
    """Kill this process with SIGKILL if the variable `name` is set to `at`."""
    if os.environ.get(name) == str(at):
        os.kill(os.getpid(), signal.SIGKILL)
