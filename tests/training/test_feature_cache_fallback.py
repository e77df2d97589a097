"""The feature cache never crashes a run: a model it cannot serve trains uncached under `auto`, with a note.

Funnel's blocks pool the sequence between them, so the forward pass never reaches the block cut where
the cache would feed it: a real tiny Funnel, built by the architecture sweep's harness. CANINE's blocks run
on molecules, its characters downsampled padding and all, so what enters them holds the padded length of
the batch it was cached in.
"""

from __future__ import annotations

import json

import pytest

from hftl.utils.errors import ConfigError
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


def test_canine_freeze_whose_cached_molecules_hold_their_batch_padding_trains_uncached(tmp_path, capsys):
    """One example alone, padded to its own length, finds it before training: the run trains uncached."""
    import transformers as tf
    from safetensors.torch import load_file

    from hftl import finetune

    folder = tmp_path / "canine"
    tiny = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64)
    tf.CanineForSequenceClassification(tf.CanineConfig(**tiny, downsampling_rate=2, num_hash_buckets=64)).save_pretrained(folder)
    tf.CanineTokenizer().save_pretrained(folder)
    before = load_file(str(folder / "model.safetensors"))
    data = write_csv(tmp_path / "train.csv", sentiment_rows(16))  # 4 validation examples, of different lengths
    result = finetune(
        {"task": "text-classification", "model": {"name_or_path": str(folder)}, "data": {"train": str(data)}},
        strategy={"name": "freeze", "trainable_blocks": 1},
        data={"validation_split": 0.25},
        epochs=1,
        output_dir=str(tmp_path / "run"),
        train={"batch_size": 4, "learning_rate": 1e-2, "report_to": "none", "feature_cache": "auto", "seed": 3},
    )
    assert "feature cache: off (" in capsys.readouterr().out
    status = json.loads((result.output_dir / "metrics.json").read_text())["feature_cache"]
    assert not status["train"] and "depend on the length their batch is padded to" in status["note"]
    after = load_file(str(result.output_dir / "model" / "model.safetensors"))
    assert not before["canine.encoder.layer.1.output.dense.weight"].equal(after["canine.encoder.layer.1.output.dense.weight"])
    frozen = [n for n in before if n.startswith(("canine.char_embeddings.", "canine.encoder.layer.0."))]
    assert frozen and all(before[n].equal(after[n]) for n in frozen)
