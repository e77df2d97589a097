"""A tiny random checkpoint for every model_type of transformers' five task mappings hftl trains.

`tiny_config(task, model_type)` shrinks the architecture's default config generically (one table of
size keys, applied to the config and its vision/text/audio/encoder sub-configs); `save_tiny` writes the
task model and a processor hftl can load into a folder, as `save_pretrained` would for a Hub checkpoint.
`SKIPS` lists the architectures the sweep cannot build small, each with its reason; those hftl refuses
(hftl/models/architecture_needs.py) are checked for the refusal instead.

Example:
    >>> folder = save_tiny("image-classification", "vit", tmp_path / "vit")   # doctest: +SKIP
"""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import Any

import transformers
from transformers import AutoConfig
from transformers.models.auto import modeling_auto

TASK_MAPPINGS = {
    "image-classification": "MODEL_FOR_IMAGE_CLASSIFICATION_MAPPING_NAMES",
    "text-classification": "MODEL_FOR_SEQUENCE_CLASSIFICATION_MAPPING_NAMES",
    "token-classification": "MODEL_FOR_TOKEN_CLASSIFICATION_MAPPING_NAMES",
    "audio-classification": "MODEL_FOR_AUDIO_CLASSIFICATION_MAPPING_NAMES",
    "speech-recognition": "MODEL_FOR_CTC_MAPPING_NAMES",
}
PIPELINES = {
    "image-classification": "image-classification",
    "text-classification": "text-classification",
    "token-classification": "token-classification",
    "audio-classification": "audio-classification",
    "speech-recognition": "automatic-speech-recognition",
}

# (task or "*", model_type) -> why the sweep leaves it out. Each reason was checked by trying.
SKIPS: dict[tuple[str, str], str] = {
    **{
        ("*", m): "cannot be built small: its config validator ties the layer shapes to the published sizes"
        for m in ("esmc", "t5gemma2")
    },
    ("speech-recognition", "granite_speech5_ctc"): "cannot be built small: the encoder's input width is tied to its "
    "feature stacking, and the default config is over 40M weights",
    ("token-classification", "qwen3_asr"): "a speech-language model: on text its audio tower, most of its weights, never runs",
    ("image-classification", "shieldgemma2"): "cannot be built small: its image token id lies outside a shrunk vocabulary, "
    "and the default config is billions of weights",
}

# Architectures whose LoRA default is a clear refusal (the error names strategy.lora.target_modules), and why.
LORA_REFUSED = {"ibert": "I-BERT's layers are its own QuantLinear, returning (output, scale) pairs: peft cannot wrap them"}

# Architectures that cannot run on 32-px images (a plain forward fails; tests/models/test_architectures.py shows it):
# MobileViT's stages downsample 32 px to a 1-px map before its transformer unfolds 2x2 patches.
VALID_AT_64 = {"mobilevit", "mobilevitv2"}

# Generic size keys: integers shrunk to these values where the default is larger.
_INT_KEYS = {
    **dict.fromkeys(("hidden_size", "d_model", "n_embd", "emb_dim", "dim", "embed_dim", "embedding_size", "d_embed"), 32),
    **dict.fromkeys(("num_hidden_layers", "n_layer", "n_layers", "num_layers", "encoder_layers", "depth"), 2),
    **dict.fromkeys(("decoder_layers", "num_decoder_layers"), 1),
    **dict.fromkeys(("num_attention_heads", "n_head", "n_heads", "encoder_attention_heads", "decoder_attention_heads"), 2),
    **dict.fromkeys(("intermediate_size", "ffn_dim", "encoder_ffn_dim", "decoder_ffn_dim", "n_inner", "d_ff", "d_inner"), 64),
    **dict.fromkeys(("moe_intermediate_size", "shared_expert_intermediate_size", "expert_intermediate_size"), 32),
    **dict.fromkeys(("num_key_value_heads", "num_experts_per_tok", "n_shared_experts", "num_shared_experts"), 1),
    **dict.fromkeys(("num_experts", "n_routed_experts", "num_local_experts"), 4),
    "head_dim": 16,
    "qk_rope_head_dim": 8,
    "qk_nope_head_dim": 8,
    "v_head_dim": 16,
    "kv_lora_rank": 16,
    "q_lora_rank": 16,
    "image_size": 32,  # stage models reach a 1-px map at 32 px; where that breaks the model itself, 64 (`build_tiny`)
    "vocab_size": 128,
    "max_position_embeddings": 128,
    "projection_dim": 32,
    "classifier_proj_size": 16,
}
_LIST_KEYS = ("hidden_sizes", "embed_dims", "dims", "embed_dim", "neck_hidden_sizes", "widths", "hidden_dims")
_SPECIAL_IDS = {"pad_token_id": 0, "bos_token_id": 1, "eos_token_id": 2, "sep_token_id": 2, "cls_token_id": 1}
_SUBCONFIGS = ("vision_config", "text_config", "encoder_config", "audio_config", "encoder", "decoder")
# Per-architecture settings the generic table cannot know.
_OVERRIDES: dict[str, dict[str, Any]] = {
    "gptj": {"rotary_dim": 8},
    "gpt_neo": {"attention_types": [[["global", "local"], 1]]},
    "diffllama": {"num_key_value_heads": 2},
    "jamba": {"attn_layer_period": 2, "attn_layer_offset": 1, "expert_layer_period": 2, "expert_layer_offset": 1},
    "qwen3_next": {"layer_types": ["linear_attention", "full_attention"], "linear_key_head_dim": 8, "linear_value_head_dim": 8},
    # 2-layer hybrids keep one layer of each kind: a model of linear attention only is not a valid config (its cache
    # holds no attention layer to size the mask by). Zamba ties its shared attention across hybrid layers: 2 of them.
    "cohere_compass_text": {
        "layer_types": ["sliding_attention", "full_attention"],
        "sliding_window": 4,
        "rope_parameters": {
            kind: {"rope_type": "default", "rope_theta": 10000.0} for kind in ("full_attention", "sliding_attention")
        },
    },
    "zamba": {
        "num_hidden_layers": 4,
        "attn_layer_period": 2,
        "attn_layer_offset": 1,
        "use_mamba_kernels": False,
        "mamba_dt_rank": 8,
        "layers_block_type": ["linear_attention", "hybrid"] * 2,
    },
    "zamba2": {
        "hybrid_layer_ids": [1],
        "layers_block_type": ["linear_attention", "hybrid"],
        "use_mamba_kernels": False,
        "mamba_headdim": 16,
        "n_mamba_heads": 4,
        "mamba_d_state": 16,
    },
    "longformer": {"attention_window": 4},  # windows shorter than the texts: the windowed path runs
    # Multi-head latent attention: every head gets its keys (as many key/value heads as heads), and the rotary
    # part of a head is head_dim wide (qk_rope_head_dim).
    **{
        m: {"n_group": 1, "topk_group": 1, "head_dim": 8, "qk_head_dim": 16, "num_key_value_heads": 2, "num_experts_per_tok": 1}
        for m in ("deepseek_v2", "deepseek_v3", "axk2")
    },
    "axk1": {
        "n_group": 1,
        "topk_group": 1,
        "head_dim": 8,
        "qk_head_dim": 16,
        "num_key_value_heads": 2,
        "mlp_layer_types": ["dense", "sparse"],
    },
    "hunyuan_v1_dense": {"head_dim": 16},
    "hunyuan_v1_moe": {"head_dim": 16},
    "ministral": {"head_dim": 16},
    "nemotron": {"num_key_value_heads": 2},
    # Multi-head latent attention expands its keys to every head: fewer key/value heads breaks a padded batch.
    "minicpm3": {"num_key_value_heads": 2},
    "mistral4": {"num_key_value_heads": 2},
    "luke": {"entity_vocab_size": 16, "entity_emb_size": 16},
    "roc_bert": {"pronunciation_vocab_size": 16, "shape_vocab_size": 16, "pronunciation_embed_dim": 16, "shape_embed_dim": 16},
    "t5": {"decoder_start_token_id": 0},
    "esm": {"pad_token_id": 1, "mask_token_id": 3},
    "perceiver": {
        "d_latents": 32,
        "d_model": 32,
        "num_latents": 8,
        "num_self_attends_per_block": 2,
        "num_self_attention_heads": 2,
        "num_cross_attention_heads": 1,
        "image_size": 32,
    },
    "audio-spectrogram-transformer": {"max_length": 128},
    "textnet": {"image_size": [64, 64]},
    # Small where the generic table misses their own width keys (else the sweep falls back to the default config).
    "efficientnet": {"width_coefficient": 0.25, "depth_coefficient": 0.25, "hidden_dim": 320},
    "bit": {"num_groups": 1},
    "pvt": {"num_attention_heads": [1, 1, 2, 2]},
    "markuplm": {"max_depth": 4, "xpath_unit_hidden_size": 8},
}
# The same for a sub-config: SigLIP 2's position grid is sized by num_patches, which the shrink does not know.
_SUB_OVERRIDES: dict[str, dict[str, dict[str, Any]]] = {"siglip2": {"vision_config": {"num_patches": 16}}}


def all_cases() -> list[tuple[str, str]]:
    """Every (task, model_type) of the five mappings, sorted."""
    return sorted((task, m) for task, name in TASK_MAPPINGS.items() for m in getattr(modeling_auto, name))


def skip_reason(task: str, model_type: str) -> str | None:
    """Why the sweep does not build this case: hftl refuses it at config time (hftl/models/architecture_needs.py),
    or it cannot be built small (`SKIPS`)."""
    need = refusal(task, model_type)
    if need is not None:
        return f"refused by hftl at config time: needs {need}"
    return SKIPS.get((task, model_type)) or SKIPS.get(("*", model_type))


def refusal(task: str, model_type: str) -> str | None:
    """What hftl says this architecture needs, when it refuses it with its default config; else None."""
    from hftl.models.architecture_needs import architecture_need

    need = architecture_need(task, model_type, AutoConfig.for_model(model_type))
    return need.needs if need is not None else None


def model_class(task: str, model_type: str) -> type:
    name = getattr(modeling_auto, TASK_MAPPINGS[task])[model_type]
    return getattr(transformers, name[0] if isinstance(name, (tuple, list)) else name)


def _shrunk(values: dict[str, Any], image_size: int | None = None) -> dict[str, Any]:
    """Overrides for one config dict: size keys made small, stage lists shortened, special ids in range."""
    out: dict[str, Any] = {}
    for key, small in {**_INT_KEYS, **({"image_size": image_size} if image_size else {})}.items():
        value = values.get(key)
        if isinstance(value, int) and not isinstance(value, bool) and value > small:
            out[key] = small
    for key in _LIST_KEYS:
        value = values.get(key)
        if isinstance(value, (list, tuple)) and value and all(isinstance(v, int) for v in value):
            out[key] = [min(v, 16 * 2**i) for i, v in enumerate(value)]
    for key in ("depths", "num_layers_per_stage", "layers"):
        value = values.get(key)
        if isinstance(value, (list, tuple)) and value and all(isinstance(v, int) for v in value):
            out[key] = [min(v, 1) for v in value]
    size = values.get("image_size")
    if isinstance(size, (list, tuple)) and len(size) == 2 and all(isinstance(v, int) and v > 64 for v in size):
        out["image_size"] = [64, 64]  # Hiera gives (height, width); its mask units need 64
    if isinstance(values.get("conv_dim"), (list, tuple)):
        out["conv_dim"] = [32] * len(values["conv_dim"])
    layers = out.get("num_hidden_layers")
    if layers and isinstance(values.get("layer_types"), list) and len(values["layer_types"]) > layers:
        # Keep the pattern's first and last kinds (e.g. sliding and full attention) for the shrunk depth.
        kinds = values["layer_types"]
        out["layer_types"] = [kinds[0]] * (layers - 1) + [kinds[-1]]
    vocab = out.get("vocab_size", values.get("vocab_size")) or 10**9
    for key, new in _SPECIAL_IDS.items():
        if isinstance(values.get(key), int) and values[key] >= vocab:
            out[key] = new
    if isinstance(values.get("num_heads"), (list, tuple)) and all(isinstance(v, int) for v in values["num_heads"]):
        out["num_heads"] = [min(v, 2**i) for i, v in enumerate(values["num_heads"])]
    return out


def tiny_config(task: str, model_type: str, image_size: int | None = None, extra: dict[str, Any] | None = None) -> Any:
    """The architecture's default config, shrunk (see the module docstring), with 2 labels; `image_size` instead
    of the table's, `extra` settings last."""
    defaults = AutoConfig.for_model(model_type).to_dict()
    overrides = {**_shrunk(defaults, image_size), **_OVERRIDES.get(model_type, {})}
    for sub in _SUBCONFIGS:
        if isinstance(defaults.get(sub), dict):
            overrides[sub] = {
                **defaults[sub],
                **_shrunk(defaults[sub], image_size),
                **_SUB_OVERRIDES.get(model_type, {}).get(sub, {}),
            }
    if "hidden_size" in overrides and defaults.get("head_dim") and "head_dim" not in _OVERRIDES.get(model_type, {}):
        overrides["head_dim"] = overrides["hidden_size"] // overrides.get(
            "num_attention_heads", defaults.get("num_attention_heads", 2)
        )
    if task == "speech-recognition":
        overrides["vocab_size"] = 32  # a character vocabulary (CTC)
    elif defaults.get("vocab_size", 0) is None:
        overrides["vocab_size"] = _INT_KEYS["vocab_size"]  # a model with no default (ESM): the tests' word vocabulary
    config = AutoConfig.for_model(model_type, **{**overrides, **(extra or {})})
    config.num_labels = 2
    return config


MAX_DEFAULT_PARAMS = 40_000_000


def build_tiny(task: str, model_type: str) -> Any:
    """The task model (random weights) of the tiny config: at 32-px images, or at 64 px where the architecture
    cannot run at 32 (`VALID_AT_64`); or of the default config where the generic shrink breaks the architecture
    (a forward pass on an example batch fails) and the default is under 40M weights."""
    import torch

    cls = model_class(task, model_type)
    try:
        model = cls(tiny_config(task, model_type, 64 if model_type in VALID_AT_64 else None))
        model.eval()
        with torch.no_grad():
            model(**tiny_inputs(task, model))
        return model
    except Exception as shrunk_error:
        config = AutoConfig.for_model(model_type)
        config.num_labels = 2
        with torch.device("meta"):
            n = sum(p.numel() for p in cls(config).parameters())
        if n > MAX_DEFAULT_PARAMS:
            raise RuntimeError(f"cannot be built small: {str(shrunk_error).splitlines()[0][:150]}") from None
        return cls(config)


def save_tiny(task: str, model_type: str, folder: Path) -> Path:
    """A tiny checkpoint folder for `task`: the task model plus a processor hftl loads (image processor,
    tokenizer, feature extractor) sized to it."""
    model = build_tiny(task, model_type)
    model.save_pretrained(folder)
    save_processor(task, model, folder)
    return folder


def save_processor(task: str, model: Any, folder: Path) -> None:
    """A generic processor that fits the model: hftl and pipeline load it with the Auto classes."""
    make_processor(task, model).save_pretrained(folder)


def make_processor(task: str, model: Any) -> Any:
    """The processor `save_processor` writes."""
    if task == "image-classification":
        return _image_processor(model)
    if task in ("text-classification", "token-classification"):
        return _word_tokenizer(model)
    return _audio_processor(task, model)


# Architectures whose inputs only their processor can make (SigLIP 2's patch sequences with their grid shapes).
PROCESSOR_INPUTS = {"siglip2"}


def tiny_inputs(task: str, model: Any) -> dict[str, Any]:
    """An example batch for `model`: from its config, as hftl traces it without a processor, or from its processor."""
    from hftl.models.layer_trace import example_inputs

    processor = make_processor(task, model) if model.config.model_type in PROCESSOR_INPUTS else None
    return example_inputs(model, processor)


def _image_processor(model: Any) -> Any:
    """ViT's resize-and-normalise at the model's image size; ImageGPT's colour clustering (its inputs are
    cluster ids, one per pixel of a sqrt(n_positions)-px image); SigLIP 2's patch sequences."""
    import numpy as np
    from transformers import ImageGPTImageProcessor, Siglip2ImageProcessor, ViTImageProcessor

    if model.config.model_type == "imagegpt":
        side = int(model.config.n_positions**0.5)
        clusters = np.random.default_rng(0).uniform(-1, 1, (model.config.vocab_size - 1, 3))
        return ImageGPTImageProcessor(clusters=clusters, size={"height": side, "width": side})
    vision = getattr(model.config, "vision_config", None) or model.config
    if model.config.model_type == "siglip2":  # patch sequences at the image's own aspect ratio
        return Siglip2ImageProcessor(patch_size=vision.patch_size, max_num_patches=vision.num_patches)
    size = getattr(vision, "image_size", 64)
    size = size[0] if isinstance(size, (list, tuple)) else size if isinstance(size, int) else 64
    return ViTImageProcessor(size={"height": size, "width": size})


def _word_tokenizer(model: Any) -> Any:
    from transformers import BertTokenizerFast

    from tests.conftest import TEXT_WORDS

    letters = [chr(c) for c in range(ord("a"), ord("z") + 1)]
    vocab = ["[PAD]", "[CLS]", "[SEP]", "[MASK]", "[UNK]", *TEXT_WORDS, *letters, *(f"##{c}" for c in letters)]
    names = ["input_ids", "attention_mask"]
    if "token_type_ids" in inspect.signature(model.forward).parameters:
        names.insert(1, "token_type_ids")
    return BertTokenizerFast(vocab={w: i for i, w in enumerate(vocab)}, model_input_names=names)


def _audio_processor(task: str, model: Any) -> Any:
    """The architecture's own feature extractor with its defaults (Whisper's log-mel, AST's filter banks),
    or wav2vec2's raw-waveform one; for CTC hftl builds the character tokenizer from the transcripts."""
    from transformers import Wav2Vec2FeatureExtractor
    from transformers.models.auto.feature_extraction_auto import FEATURE_EXTRACTOR_MAPPING_NAMES

    model_type = model.config.model_type
    # wav2vec2-BERT checkpoints ship SeamlessM4T's filter-bank extractor, whatever the auto mapping says.
    name = {"wav2vec2-bert": "SeamlessM4TFeatureExtractor"}.get(model_type) or FEATURE_EXTRACTOR_MAPPING_NAMES.get(model_type)
    if not name or name == "Wav2Vec2FeatureExtractor":
        return Wav2Vec2FeatureExtractor(feature_size=1, sampling_rate=16_000, return_attention_mask=True)
    cls = getattr(transformers, name)
    accepted = inspect.signature(cls.__init__).parameters
    sized = {k: getattr(model.config, k) for k in ("num_mel_bins", "max_length") if k in accepted and hasattr(model.config, k)}
    return cls(**sized)
