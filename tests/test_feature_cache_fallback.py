"""The feature cache never crashes a run: a model it cannot serve trains uncached under `auto`, with a note.

Funnel's blocks pool the sequence between them, so the forward pass never reaches the block cut where
the cache would feed it: a real tiny Funnel, built by the architecture sweep's harness.
"""

from __future__ import annotations

import json

import pytest

from hftl.errors import ConfigError
from tests.text_data import sentiment_rows, write_csv
from tests.tiny_models import save_tiny


def _train(folder, data, out, cache, strategy="head_only"):
    from hftl import finetune

    return finetune(
        {"task": "text-classification", "model": {"name_or_path": str(folder)}, "data": {"train": str(data)}},
        strategy=strategy,
        epochs=1,
        output_dir=str(out),
        train={"batch_size": 4, "report_to": "none", "feature_cache": cache, "seed": 3},
    )


def test_a_model_the_cache_cannot_serve_trains_uncached_with_a_note(tmp_path, capsys):
    strategy = "freeze"  # a block cut: Funnel's pooling blocks never hand the cut the hidden states it expects
    folder = save_tiny("text-classification", "funnel", tmp_path / "funnel")
    data = write_csv(tmp_path / "train.csv", sentiment_rows(24))
    cached = _train(folder, data, tmp_path / "auto", "auto", strategy)
    printed = capsys.readouterr().out
    assert "feature cache: off (" in printed and "failed on this model" in printed
    uncached = _train(folder, data, tmp_path / "off", "off", strategy)
    assert json.loads((cached.output_dir / "metrics.json").read_text())["validation"] == pytest.approx(
        json.loads((uncached.output_dir / "metrics.json").read_text())["validation"]
    )


def test_feature_cache_on_keeps_the_failure_an_error(tmp_path):
    folder = save_tiny("text-classification", "funnel", tmp_path / "funnel")
    data = write_csv(tmp_path / "train.csv", sentiment_rows(24))
    with pytest.raises(ConfigError, match="train.feature_cache=on.*failed on this model"):
        _train(folder, data, tmp_path / "on", "on", "freeze")
