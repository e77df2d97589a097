"""Layer maps of the architectures that broke the registration-order map, each checked against its forward pass.

Tiny random configs built here; every map is also checked by tests/layer_map_checks.py (an independent trace).
"""

from __future__ import annotations

import pytest
import torch
import transformers as tf
from torch import nn

from hftl.config import LoraConfig
from hftl.models.layer_map import build_layer_map
from hftl.models.layer_trace import example_inputs
from hftl.models.strategies.lora import apply_lora
from hftl.utils.errors import HftlError
from tests.layer_map_checks import check_layer_map

TEXT = dict(vocab_size=99, hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=37)


def _mapped(model: nn.Module):
    lm = build_layer_map(model)
    assert lm.note is None, lm.note  # traced, not guessed
    check_layer_map(model, lm, example_inputs(model))
    return lm


def test_clip_vision_tower_is_the_base_not_the_head():
    vision = dict(image_size=32, patch_size=8, hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=37)
    config = tf.CLIPConfig(vision_config=vision, text_config=dict(TEXT))
    lm = _mapped(tf.CLIPForImageClassification(config))
    assert lm.base_prefix == "vision_model" and lm.head == ["classifier"]
    assert lm.neck == ["vision_model.post_layernorm"] and len(lm.blocks) == 2


def test_whisper_encoder_for_audio_classification():
    config = tf.WhisperConfig(
        d_model=32, encoder_layers=2, encoder_attention_heads=2, encoder_ffn_dim=37, decoder_layers=1,
        decoder_attention_heads=2, decoder_ffn_dim=37, num_mel_bins=16, max_source_positions=20, vocab_size=99,
    )  # fmt: skip
    lm = _mapped(tf.WhisperForAudioClassification(config))
    assert lm.base_prefix == "encoder" and lm.head == ["projector", "classifier"] and lm.classifier == "classifier"
    assert lm.neck == ["encoder.layer_norm"]


def test_albert_one_shared_layer_group_is_one_block_that_trains_under_freeze():
    from hftl.config import Config
    from hftl.models.strategies import build_plan

    model = tf.AlbertForSequenceClassification(tf.AlbertConfig(embedding_size=16, **TEXT))
    lm = _mapped(model)
    assert lm.blocks == ["albert.encoder.albert_layer_groups.0"]
    cfg = Config()
    cfg.strategy.name, cfg.strategy.trainable_blocks = "freeze", 1
    trains = build_plan(model, lm, cfg).phases[-1].trainable
    assert any(n.startswith("albert.encoder.albert_layer_groups.0.") for n in trains)
    assert not any(n.startswith("albert.embeddings.") for n in trains)


@pytest.mark.parametrize("cls", [tf.FlaubertForSequenceClassification, tf.XLMForSequenceClassification])
def test_parallel_attention_and_ffn_lists_are_joined_into_blocks(cls):
    config_cls = tf.FlaubertConfig if cls is tf.FlaubertForSequenceClassification else tf.XLMConfig
    lm = _mapped(cls(config_cls(vocab_size=99, emb_dim=32, n_layers=3, n_heads=2)))
    assert lm.blocks == [f"transformer.attentions.{i}" for i in range(3)]
    assert all(f"transformer.ffns.{i}" in lm.block_members[i] for i in range(3))
    assert not any("attentions" in e or "ffns" in e for e in lm.embeddings)


def test_stable_layer_norm_wav2vec2_final_norm_is_the_neck():
    config = tf.Wav2Vec2Config(
        hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=37, conv_dim=(16, 16),
        conv_stride=(5, 4), conv_kernel=(10, 8), num_feat_extract_layers=2, num_conv_pos_embeddings=8,
        num_conv_pos_embedding_groups=2, do_stable_layer_norm=True, feat_extract_norm="layer",
    )  # fmt: skip
    lm = _mapped(tf.Wav2Vec2ForSequenceClassification(config))
    assert "wav2vec2.encoder.layer_norm" in lm.neck and "wav2vec2.encoder.layer_norm" not in lm.embeddings


def test_mobilevit_blocks_are_its_stages():
    config = tf.MobileViTConfig(image_size=32, hidden_sizes=[16, 16, 16], neck_hidden_sizes=[8, 8, 16, 16, 16, 16, 32])
    lm = _mapped(tf.MobileViTForImageClassification(config))
    assert lm.blocks == [f"mobilevit.encoder.layer.{i}" for i in range(5)]


def test_perceiver_head_inside_the_base_is_its_classifier_layer():
    config = tf.PerceiverConfig(
        num_labels=2, d_latents=32, d_model=32, num_latents=8, num_self_attends_per_block=2, image_size=16,
        num_self_attention_heads=2, num_cross_attention_heads=1,
    )  # fmt: skip
    lm = _mapped(tf.PerceiverForImageClassificationLearned(config))
    assert lm.head == ["perceiver.decoder.decoder.final_layer"] and lm.base_prefix == ""


@pytest.mark.parametrize("arch", ["test_resnet", "test_vit", "test_convnext"])
def test_timm_checkpoints_through_timm_wrapper(arch):
    pytest.importorskip("timm")
    model = tf.TimmWrapperForImageClassification(tf.TimmWrapperConfig(architecture=arch, num_labels=3))
    lm = _mapped(model)
    assert lm.base_prefix == "" and lm.classifier and lm.classifier.startswith("timm_model.")
    assert len(lm.blocks) >= 2 and all(b.startswith("timm_model.") for b in lm.blocks)


def _lora_forward(model: nn.Module) -> list[str]:
    model.eval()  # batch norm on one example
    lm = build_layer_map(model)
    inputs = example_inputs(model)
    wrapped = apply_lora(model, lm, LoraConfig())
    targets = sorted(wrapped.peft_config["default"].target_modules)
    wrapped(**inputs)  # runs with every adapter in place
    return targets


def test_lora_defaults_cover_gpt2_conv1d_and_squeezebert_conv1d():
    """GPT-2's fused qkv is a transformers Conv1D; SqueezeBERT's grouped query/value convolutions cannot be
    merged by peft, so its ungrouped 1x1 convolutions are adapted instead."""
    gpt2 = tf.GPT2ForSequenceClassification(tf.GPT2Config(vocab_size=99, n_embd=32, n_layer=2, n_head=2, pad_token_id=0))
    assert all(t.endswith(".attn.c_attn") for t in _lora_forward(gpt2))
    squeeze = tf.SqueezeBertForSequenceClassification(
        tf.SqueezeBertConfig(**{**TEXT, "intermediate_size": 64}, embedding_size=32)
    )
    targets = _lora_forward(squeeze)
    assert targets and all(squeeze.get_submodule(t).get_base_layer().groups == 1 for t in targets)


@pytest.mark.parametrize("cls,config", [
    (tf.MobileNetV1ForImageClassification, tf.MobileNetV1Config(image_size=32, depth_multiplier=0.25)),
    (tf.MobileNetV2ForImageClassification, tf.MobileNetV2Config(image_size=32, depth_multiplier=0.25)),
])  # fmt: skip
def test_lora_wrapped_convolutions_still_answer_the_attributes_the_model_reads(cls, config):
    """MobileNet reads its convolutions' stride and kernel size to pad: LoRA's wrappers must answer them."""
    targets = _lora_forward(cls(config))
    assert any("convolution" in t for t in targets)  # adapted, and the forward pass above ran


def test_pretrained_head_layers_are_kept_only_the_classifier_is_new(tmp_path):
    """RoBERTa's classification head: its dense layer is pretrained (another task's), its out_proj is new."""
    from hftl.config import Config
    from hftl.data.modalities import get_modality
    from hftl.models.loading import setup_model
    from tests.conftest import TEXT_WORDS

    src = tf.RobertaForSequenceClassification(tf.RobertaConfig(**TEXT, num_labels=3, pad_token_id=1))
    src.save_pretrained(tmp_path)
    tf.BertTokenizer(
        vocab={w: i for i, w in enumerate(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *TEXT_WORDS])}
    ).save_pretrained(tmp_path)
    cfg = Config()
    cfg.task, cfg.model.name_or_path, cfg.strategy.name = "text-classification", str(tmp_path), "head_only"
    torch.manual_seed(1)
    model, _, lm, _ = setup_model(cfg, get_modality(cfg.task, cfg), ["neg", "pos"])
    assert lm.classifier == "classifier.out_proj"
    assert torch.equal(model.classifier.dense.weight, src.classifier.dense.weight)
    assert model.classifier.out_proj.weight.shape[0] == 2


def test_a_model_without_repeated_layers_is_refused_naming_model_blocks():
    class Flat(tf.PreTrainedModel):
        config_class = tf.PretrainedConfig
        main_input_name = "pixel_values"

        def __init__(self, config):
            super().__init__(config)
            self.stem = nn.Conv2d(3, 4, 3)
            self.classifier = nn.Linear(4, 2)
            self.post_init()

        def forward(self, pixel_values):
            return (self.classifier(self.stem(pixel_values).mean((2, 3))),)

    with pytest.raises(HftlError, match="model.blocks"):
        build_layer_map(Flat(tf.PretrainedConfig()))
