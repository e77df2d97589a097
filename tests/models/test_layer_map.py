"""The layer map across architectures: found by introspection, every tensor in exactly one part."""

from __future__ import annotations

import pytest
import transformers as tf

from hftl.models.layer_map import build_layer_map, describe, format_trainable


def _tiny(name: str):
    """Tiny random task models of several families (2-3 blocks, hidden 32)."""
    makers = {
        "vit": lambda: tf.ViTForImageClassification(
            tf.ViTConfig(
                image_size=32, patch_size=8, hidden_size=32, num_hidden_layers=3, num_attention_heads=2, intermediate_size=64
            )
        ),
        "resnet": lambda: tf.ResNetForImageClassification(
            tf.ResNetConfig(embedding_size=16, hidden_sizes=[16, 32, 32], depths=[1, 1, 2])
        ),
        "convnext": lambda: tf.ConvNextForImageClassification(
            tf.ConvNextConfig(num_stages=3, hidden_sizes=[16, 32, 32], depths=[1, 1, 1])
        ),
        "efficientnet": lambda: tf.EfficientNetForImageClassification(
            tf.EfficientNetConfig(image_size=32, width_coefficient=0.25, depth_coefficient=0.25, hidden_dim=64)
        ),
        "bert": lambda: tf.BertForSequenceClassification(
            tf.BertConfig(vocab_size=100, hidden_size=32, num_hidden_layers=3, num_attention_heads=2, intermediate_size=64)
        ),
        "wav2vec2": lambda: tf.Wav2Vec2ForSequenceClassification(
            tf.Wav2Vec2Config(
                hidden_size=32,
                num_hidden_layers=3,
                num_attention_heads=2,
                intermediate_size=64,
                conv_dim=(16, 16),
                conv_stride=(5, 4),
                conv_kernel=(10, 8),
                num_feat_extract_layers=2,
                num_conv_pos_embeddings=8,
                num_conv_pos_embedding_groups=2,
            )
        ),  # fmt: skip
    }
    return makers[name]()


EXPECTED = {
    # arch: (embeddings, first block, number of blocks, neck, head)
    "vit": (["vit.embeddings"], "vit.layers.0", 3, ["vit.layernorm"], ["classifier"]),
    "resnet": (["resnet.embedder"], "resnet.encoder.stages.0", 3, [], ["classifier"]),
    "convnext": (["convnext.embeddings"], "convnext.encoder.stages.0", 3, ["convnext.layernorm"], ["classifier"]),
    "bert": (["bert.embeddings"], "bert.encoder.layer.0", 3, ["bert.pooler"], ["classifier"]),
    "wav2vec2": (
        [
            "wav2vec2.masked_spec_embed",  # held by the base model itself, used on the way in
            "wav2vec2.feature_extractor",
            "wav2vec2.feature_projection",
            "wav2vec2.encoder.pos_conv_embed",
            "wav2vec2.encoder.layer_norm",
        ],
        "wav2vec2.encoder.layers.0",
        3,
        [],
        ["projector", "classifier"],
    ),
}


@pytest.mark.parametrize("arch", sorted(EXPECTED))
def test_layer_map_is_found_by_introspection(arch):
    model = _tiny(arch)
    lm = build_layer_map(model)
    embeddings, first_block, n_blocks, neck, head = EXPECTED[arch]
    assert lm.embeddings == embeddings
    assert lm.blocks[0] == first_block and len(lm.blocks) == n_blocks
    assert lm.neck == neck
    assert lm.head == head


@pytest.mark.parametrize("arch", ["vit", "resnet", "convnext", "efficientnet", "bert", "wav2vec2"])
def test_every_parameter_belongs_to_exactly_the_part_of_its_module(arch):
    model = _tiny(arch)
    lm = build_layer_map(model)
    counted = describe(model, lm)
    assert sum(total for _, _, total in counted) == sum(p.numel() for p in model.parameters())
    for name, _ in model.named_parameters():
        part = lm.part_of(name)
        if part.startswith("block."):
            assert name.startswith(lm.blocks[int(part.split(".")[1])] + ".")
        elif part == "head":
            assert any(name.startswith(h + ".") for h in lm.head)
    # Blocks are ordered bottom to top.
    assert [lm.part_of(b + ".x") for b in lm.blocks] == [f"block.{i}" for i in range(len(lm.blocks))]


def test_peft_wrapped_names_map_to_the_same_parts():
    from peft import LoraConfig, get_peft_model

    model = _tiny("vit")
    lm = build_layer_map(model)
    peft_model = get_peft_model(model, LoraConfig(target_modules=["q_proj", "v_proj"], modules_to_save=["classifier"]))
    names = [n for n, _ in peft_model.named_parameters()]
    lora = [n for n in names if "lora_A" in n and ".layers.1." in n]
    assert lora and all(lm.part_of(n) == "block.1" for n in lora)
    assert lm.part_of("base_model.model.classifier.modules_to_save.default.weight") == "head"


def test_blocks_override_and_clear_error_for_wrong_path():
    from hftl.utils.errors import HftlError

    model = _tiny("resnet")
    lm = build_layer_map(model, "encoder.stages.2.layers")
    assert lm.blocks == ["resnet.encoder.stages.2.layers.0", "resnet.encoder.stages.2.layers.1"]
    with pytest.raises(HftlError, match="model.blocks='encoder.nope'"):
        build_layer_map(model, "encoder.nope")


def test_trainable_table_reports_frozen_parts():
    model = _tiny("vit")
    lm = build_layer_map(model)
    for p in model.vit.parameters():
        p.requires_grad_(False)
    table = format_trainable(model, lm)
    assert "embeddings" in table and "frozen" in table and "head" in table and "trains" in table
