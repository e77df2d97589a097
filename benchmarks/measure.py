"""What both sides of a benchmark measure the same way: GPU work waited for, and the peak resident memory.

Example:
    >>> sync(); peak_rss_mb() > 0
    True
"""

from __future__ import annotations

import resource


def sync() -> None:
    """Wait for queued GPU work: it belongs to the epoch that launched it (both sides' epoch timers)."""
    import torch

    if torch.cuda.is_available() and torch.cuda.is_initialized():
        torch.cuda.synchronize()


def peak_rss_mb() -> float:
    """The process's peak resident set so far (ru_maxrss: KiB on Linux)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
