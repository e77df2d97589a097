"""hftl: transfer learning on the Hugging Face stack.

Example:
    >>> from hftl import finetune
    >>> result = finetune("configs/vision/vit-head-only.yaml", data={"train": "digits/"})  # doctest: +SKIP
"""

from __future__ import annotations

from typing import Any

from hftl.config import Config, load_config
from hftl.utils.errors import ConfigError, DataError, HftlError

__all__ = ["Config", "ConfigError", "DataError", "FinetuneResult", "HftlError", "evaluate_run", "finetune", "load_config"]
__all__ += ["compare", "predict", "probe", "search", "shift"]
__version__ = "0.1.0"


def __getattr__(name: str) -> Any:
    # The training stack (torch, transformers, accelerate) loads on first use, so `hftl --help` and
    # config errors answer at once.
    if name in ("FinetuneResult", "finetune"):
        from hftl.runs import finetune

        return getattr(finetune, name)
    if name == "compare":
        from hftl.studies.compare import compare

        return compare
    if name == "probe":
        from hftl.studies.probe import probe

        return probe
    if name == "shift":
        from hftl.studies.shift import shift

        return shift
    if name == "search":
        from hftl.studies.search import search

        return search
    if name in ("evaluate_run", "predict"):
        from hftl.runs import inference

        return getattr(inference, name)
    raise AttributeError(f"module 'hftl' has no attribute {name!r}")
