"""Peak memory of one run: CUDA's max allocated, else the process's resident set sampled in a thread.

Example:
    >>> with PeakMemory() as memory:      # doctest: +SKIP
    ...     train()
    >>> memory.mb()                       # doctest: +SKIP
"""

from __future__ import annotations

import os
import resource
import threading

import torch


class PeakMemory:
    """Peak memory of one run: CUDA max allocated, else the process's resident set sampled in a thread.

    ru_maxrss cannot be reset, so several runs in one process (`hftl compare`, notebooks) would all
    report the largest so far; sampling /proc/self/statm gives each run its own peak.
    """

    def __init__(self, interval: float = 0.05) -> None:
        self.interval, self.peak, self._stop = interval, 0, threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _rss(self) -> int:
        try:
            with open("/proc/self/statm") as f:
                return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
        except (OSError, ValueError, IndexError):
            return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # no /proc: the process peak (KiB on Linux)

    def _sample(self) -> None:
        while not self._stop.wait(self.interval):
            self.peak = max(self.peak, self._rss())

    def __enter__(self) -> PeakMemory:
        if torch.cuda.is_available():
            torch.cuda.reset_peak_memory_stats()
        self.peak = self._rss()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self._rss())

    def mb(self) -> float:
        if torch.cuda.is_available():
            return torch.cuda.max_memory_allocated() / 2**20
        return self.peak / 2**20
