"""hftl: transfer learning on the Hugging Face stack.

Example:
    >>> from hftl import finetune
    >>> result = finetune("configs/vision/vit-head-only.yaml", data={"train": "digits/"})  # doctest: +SKIP
"""

from hftl.api import FinetuneResult, evaluate_run, finetune, predict
from hftl.config import Config, load_config
from hftl.errors import ConfigError, DataError, HftlError

__all__ = [
    "Config",
    "ConfigError",
    "DataError",
    "FinetuneResult",
    "HftlError",
    "evaluate_run",
    "finetune",
    "load_config",
    "predict",
]
__version__ = "0.1.0"
