"""SIGTERM and SIGINT (a scheduler's preemption, Ctrl-C): finish the optimizer step, checkpoint, exit.

SLURM, Kubernetes and spot instances send SIGTERM some seconds before they kill; a user presses Ctrl-C.
While `fit` trains, either only sets a flag; the loop reads it after each optimizer step (all processes
agree through one all-reduce, so they checkpoint the same step together), writes a checkpoint, and
raises `Interrupted`, whose message says how to continue. A second Ctrl-C interrupts at once. Data-loader
workers ignore both signals: the main process ends them.

Example:
    >>> with StopSignals(accelerator) as stop:        # doctest: +SKIP
    ...     for batch in loader:
    ...         step(batch)
    ...         if stop.requested():
    ...             save(); raise stop.interrupted(step, where)
"""

from __future__ import annotations

import signal
import threading
from types import FrameType
from typing import Any

from hftl.utils.errors import HftlError

SIGNALS = (signal.SIGTERM, signal.SIGINT)


class Interrupted(HftlError):
    """The run stopped on a signal after checkpointing; `exit_code` is 128 + the signal's number."""

    def __init__(self, message: str, exit_code: int) -> None:
        super().__init__(message)
        self.exit_code = exit_code


class StopSignals:
    """Turns SIGTERM / SIGINT into a request the training loop honours at the next step boundary."""

    def __init__(self, accelerator: Any) -> None:
        self.accelerator = accelerator
        self.received: int | None = None
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> StopSignals:
        if threading.current_thread() is threading.main_thread():  # handlers can only be set there
            for sig in SIGNALS:
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous = {}

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self.received is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt  # a second Ctrl-C: now
        self.received = signum
        name = signal.Signals(signum).name
        self.accelerator.print(f"\n{name} received: finishing this optimizer step, then checkpointing", flush=True)

    def requested(self) -> bool:
        """Whether any process got a stop signal (a collective on several processes: call it on all)."""
        if self.accelerator.num_processes == 1:
            return self.received is not None
        if self.received is not None:
            self.accelerator.set_trigger()
        return self.accelerator.check_trigger()

    def interrupted(self, step: int, checkpoint: str) -> Interrupted:
        signum = self.received or signal.SIGTERM
        name = signal.Signals(signum).name
        return Interrupted(
            f"stopped by {name} after optimizer step {step}; the checkpoint is {checkpoint}. "
            "Run the same command with resume=true to continue where it stopped",
            128 + int(signum),
        )


def ignore_stop_signals(worker_id: int) -> None:
    """A data-loader worker's init: the main process handles SIGTERM / SIGINT and ends its workers."""
    for sig in SIGNALS:
        signal.signal(sig, signal.SIG_IGN)
