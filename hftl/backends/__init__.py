"""Training engines as one object each: plain (one process or DDP), FSDP and DeepSpeed.

The engine is chosen here, once: before the Accelerator exists from what the launcher asked for
(`launched_backend`, `check_launch`), after it exists from what it runs (`backend_for`). Everything
else holds a `Backend` and asks it; nothing outside this package tests which engine runs.

Example:
    >>> check_launch(cfg)                       # doctest: +SKIP  refuses a launch hftl would not run as asked
    >>> backend = backend_for(accelerator)      # doctest: +SKIP
    >>> backend.model_state(model)              # doctest: +SKIP
"""

from __future__ import annotations

from accelerate import Accelerator
from accelerate.utils import DistributedType

from hftl.backends.base import Backend, deepspeed_unprobed, written_by
from hftl.backends.deepspeed import DeepSpeedBackend
from hftl.backends.fsdp import FSDPBackend
from hftl.config import Config

# The engines a launcher can ask for, in the order their launch checks run.
LAUNCHABLE: tuple[type[Backend], ...] = (DeepSpeedBackend, FSDPBackend)
_BY_TYPE = {DistributedType.DEEPSPEED: DeepSpeedBackend, DistributedType.FSDP: FSDPBackend}

__all__ = ["Backend", "DeepSpeedBackend", "FSDPBackend", "backend_for", "check_launch", "deepspeed_unprobed"]
__all__ += ["launched_backend", "written_by"]


def launched_backend() -> type[Backend]:
    """The engine `accelerate launch` asked these processes for (plain when none)."""
    return next((cls for cls in LAUNCHABLE if cls.is_launched()), Backend)


def check_launch(cfg: Config | None = None) -> None:
    """Refuse, before any work, a launch hftl would not run as asked: FSDP without a GPU, DeepSpeed not
    installed, or a DeepSpeed config that disagrees with `cfg`."""
    for cls in LAUNCHABLE:
        if cls.is_launched():
            cls.check_launch(cfg)


def backend_for(accelerator: Accelerator) -> Backend:
    """The backend of the engine `accelerator` runs (plain for one process, DDP and the CPU)."""
    return _BY_TYPE.get(accelerator.distributed_type, Backend)(accelerator)
