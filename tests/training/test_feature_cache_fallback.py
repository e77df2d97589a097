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


def _freeze_four_layers(tmp_path, model_type: str, splits: dict[str, list[dict]], epochs: int) -> dict:
    """freeze on a 4-layer tiny `model_type` (blocks below the trained ones: a block cut to cache), trained on
    `splits` written as csv files, feature cache auto; the run's feature-cache status."""
    from hftl import finetune
    from tests import tiny_models

    data = {split: str(write_csv(tmp_path / f"{split}.csv", rows)) for split, rows in splits.items()}
    layers = tiny_models._INT_KEYS["num_hidden_layers"]
    tiny_models._INT_KEYS["num_hidden_layers"] = 4
    try:
        folder = save_tiny("text-classification", model_type, tmp_path / model_type)
    finally:
        tiny_models._INT_KEYS["num_hidden_layers"] = layers
    result = finetune(
        {"task": "text-classification", "model": {"name_or_path": str(folder)}, "data": data},
        strategy="freeze",
        epochs=epochs,
        output_dir=str(tmp_path / "run"),
        train={"batch_size": 4, "report_to": "none", "feature_cache": "auto", "seed": 3},
    )
    return json.loads((result.output_dir / "metrics.json").read_text())["feature_cache"]


def test_canine_whose_first_validation_batch_is_one_length_still_trains_uncached(tmp_path, capsys):
    """The issue's crash: the first batch holds no padding to check, so a later padded batch is found and its
    shortest example verified alone; the run trains uncached instead of crashing at its first mixed batch."""
    rows = sentiment_rows(40, seed=1)
    equal = [{"text": "good film" if i % 2 else "bad film", "label": "pos" if i % 2 else "neg"} for i in range(8)]
    status = _freeze_four_layers(tmp_path, "canine", {"train": equal + rows[:24], "validation": equal + rows[24:]}, epochs=2)
    assert "feature cache: off (" in capsys.readouterr().out
    assert not status["train"] and "a padded batch, alone" in status["note"]


def test_pp_lcnet_whose_output_has_no_logits_is_declined_by_the_cache(tmp_path, capsys, monkeypatch):
    """PP-LCNet's classifier returns a base-model output: the cache's probe says so in one line and steps aside.
    hftl refuses the architecture at config time (hftl/models/architecture_needs.py), since nothing reads its
    loss; lifted here, the run reaches the loss with the cache off."""
    from hftl import finetune
    from hftl.builtin import write_digits_imagefolder
    from hftl.models import architecture_needs

    monkeypatch.delitem(architecture_needs.NEEDS, ("image-classification", "pp_lcnet"))
    folder = save_tiny("image-classification", "pp_lcnet", tmp_path / "pp_lcnet")
    data = write_digits_imagefolder(tmp_path / "digits", per_class=3)
    with pytest.raises(AttributeError, match="loss"):
        finetune(
            {"task": "image-classification", "model": {"name_or_path": str(folder)}, "data": {"train": str(data)}},
            strategy="head_only",
            epochs=1,
            output_dir=str(tmp_path / "run"),
            data={"augment": False},
            train={"batch_size": 4, "report_to": "none", "feature_cache": "auto"},
        )
    assert "feature cache: off (" in capsys.readouterr().out


def test_longformer_whose_validation_shows_no_padding_is_checked_on_its_training_split(tmp_path, capsys):
    """Longformer pads each batch to a multiple of its attention window inside the model, so the hidden states
    cached for a block keep their batch's window-padded length. Two validation texts of one length show nothing;
    the cached training split is checked too, and the run trains uncached (it crashed at its first mixed batch)."""
    validation = [{"text": "good film", "label": "pos"}, {"text": "bad film", "label": "neg"}]
    status = _freeze_four_layers(
        tmp_path, "longformer", {"train": sentiment_rows(24, seed=2), "validation": validation}, epochs=1
    )
    assert "feature cache: off (" in capsys.readouterr().out  # windows of 4 tokens (tiny_models)
    assert not status["train"] and "train example" in status["note"]
