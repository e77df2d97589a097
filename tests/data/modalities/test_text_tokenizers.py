"""Text checkpoints whose tokenizer has no vocabulary file: character- and byte-level models train and reload."""

from __future__ import annotations

import pytest
import transformers as tf

from tests.text_data import sentiment_rows, write_csv

TINY = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64)


def _canine(folder):
    tf.CanineForSequenceClassification(tf.CanineConfig(**TINY, downsampling_rate=2, num_hash_buckets=64)).save_pretrained(folder)
    tf.CanineTokenizer().save_pretrained(folder)


def _perceiver(folder):
    config = tf.PerceiverConfig(
        d_latents=32, d_model=32, num_latents=8, num_self_attends_per_block=2, num_self_attention_heads=2,
        num_cross_attention_heads=1, max_position_embeddings=256,
    )  # fmt: skip
    tf.PerceiverForSequenceClassification(config).save_pretrained(folder)
    tf.PerceiverTokenizer().save_pretrained(folder)


@pytest.mark.parametrize("save", [_canine, _perceiver], ids=["canine", "perceiver"])
def test_character_and_byte_level_text_models_train_and_reload(save, tmp_path):
    from transformers import pipeline

    from hftl import finetune

    save(tmp_path / "model")
    assert not any((tmp_path / "model" / name).exists() for name in ("vocab.txt", "vocab.json", "tokenizer.json"))
    data = write_csv(tmp_path / "train.csv", sentiment_rows(24))
    result = finetune(
        {"task": "text-classification", "model": {"name_or_path": str(tmp_path / "model")}, "data": {"train": str(data)}},
        strategy="head_only",
        epochs=1,
        output_dir=str(tmp_path / "run"),
        train={"batch_size": 8, "report_to": "none"},
    )
    scores = pipeline("text-classification", model=str(result.output_dir / "model"))("the film was good", top_k=None)
    assert sorted(s["label"] for s in scores) == ["neg", "pos"]


def test_token_classification_refuses_a_tokenizer_that_cannot_map_tokens_to_words(tmp_path):
    """LUKE's tokenizer ignores is_split_into_words (word_ids are all None): training would see no label."""
    import json

    from hftl.data.modalities.text import _check_word_alignment
    from hftl.utils.errors import HftlError

    pieces = ["<s>", "<pad>", "</s>", "<unk>", "<mask>", "Ġ", *"abcdefghijklmnopqrstuvwxyz", *(f"Ġ{c}" for c in "abcdefghij")]
    (tmp_path / "vocab.json").write_text(json.dumps({piece: i for i, piece in enumerate(pieces)}))
    (tmp_path / "merges.txt").write_text("#version: 0.2\n")
    (tmp_path / "entity_vocab.json").write_text(json.dumps({"[PAD]": 0, "[UNK]": 1, "[MASK]": 2, "[MASK2]": 3}))
    luke = tf.LukeTokenizer(
        vocab_file=str(tmp_path / "vocab.json"), merges_file=str(tmp_path / "merges.txt"),
        entity_vocab_file=str(tmp_path / "entity_vocab.json"),
    )  # fmt: skip
    assert set(luke([["ab", "cd"]], is_split_into_words=True).word_ids(0)) == {None}
    with pytest.raises(HftlError, match="maps each token to its word"):
        _check_word_alignment(luke, "studio-ousia/luke-base")
    bert = tf.BertTokenizerFast(vocab={w: i for i, w in enumerate(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "alpha", "beta"])})
    _check_word_alignment(bert, "bert")  # a fast tokenizer passes
