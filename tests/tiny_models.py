"""A tiny random checkpoint for every model_type of transformers' five task mappings hftl trains.

`tiny_config(task, model_type)` shrinks the architecture's default config generically (one table of
size keys, applied to the config and its vision/text/audio/encoder sub-configs); `save_tiny` writes the
task model and a processor hftl can load into a folder, as `save_pretrained` would for a Hub checkpoint.
`SKIPS` is the one list of architectures the sweep leaves out, each with its reason.

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
    ("token-classification", "bros"): "needs inputs hftl never supplies: word bounding boxes (`bbox` is required)",
    ("*", "layoutlmv2"): "needs the detectron2 package (its visual backbone), not installed",
    **{
        ("*", m): "cannot be built small: the generic shrink breaks its 2-D layout stream's widths"
        for m in ("lilt", "layoutlmv3")
    },
    **{
        ("*", m): "cannot be built small: the generic shrink breaks its mixture-of-experts latent attention, and the "
        "default config is billions of weights"
        for m in ("axk1", "axk2", "deepseek_v2", "deepseek_v3")
    },
    **{
        ("*", m): "cannot be built small: its hybrid layer pattern (attention vs. linear/state-space layers) does not "
        "survive the generic shrink, and the default config is billions of weights"
        for m in ("zamba", "zamba2", "cohere_compass_text")
    },
    **{
        ("*", m): "cannot be built small: its config validator ties the layer shapes to the published sizes"
        for m in ("esmc", "t5gemma2")
    },
    ("image-classification", "siglip2"): "cannot be built small: its patch embedding sizes are tied to the default "
    "num_patches, and the default config is 90M weights",
    ("speech-recognition", "granite_speech5_ctc"): "cannot be built small: the encoder's input width is tied to its "
    "feature stacking, and the default config is over 40M weights",
    ("*", "xmod"): "needs a language adapter chosen (XmodModel.set_default_language) before any forward pass",
    ("image-classification", "dinat"): "needs the natten package (neighbourhood attention kernels), not installed",
    ("speech-recognition", "omniasr_ctc"): "not yet supported: it takes raw audio as (batch, 1, samples) with a "
    "`padding_mask`, and its tokenizer is a multilingual subword vocabulary; hftl's CTC recipe feeds (batch, samples) "
    "and builds a character vocabulary",
    ("token-classification", "qwen3_asr"): "a speech-language model: on text its audio tower, most of its weights, never runs",
    ("image-classification", "shieldgemma2"): "cannot be built small: its image token id lies outside a shrunk vocabulary, "
    "and the default config is billions of weights",
}

# Architectures whose LoRA default is a clear refusal (the error names strategy.lora.target_modules), and why.
LORA_REFUSED = {"ibert": "I-BERT's layers are its own QuantLinear, returning (output, scale) pairs: peft cannot wrap them"}

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
    "image_size": 64,
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
    "cohere_compass_text": {"layer_types": ["full_attention"] * 2},
    "deepseek_v2": {"n_group": 1, "topk_group": 1, "head_dim": 8, "qk_head_dim": 16},
    "deepseek_v3": {"n_group": 1, "topk_group": 1, "head_dim": 8, "qk_head_dim": 16},
    "axk1": {"n_group": 1, "topk_group": 1, "head_dim": 8, "qk_head_dim": 16, "mlp_layer_types": ["dense", "sparse"]},
    "axk2": {"n_group": 1, "topk_group": 1, "head_dim": 8, "qk_head_dim": 16},
    "hunyuan_v1_dense": {"head_dim": 16},
    "hunyuan_v1_moe": {"head_dim": 16},
    "ministral": {"head_dim": 16},
    "nemotron": {"num_key_value_heads": 2},
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
    "markuplm": {"max_depth": 4, "xpath_unit_hidden_size": 8},
}


def all_cases() -> list[tuple[str, str]]:
    """Every (task, model_type) of the five mappings, sorted."""
    return sorted((task, m) for task, name in TASK_MAPPINGS.items() for m in getattr(modeling_auto, name))


def skip_reason(task: str, model_type: str) -> str | None:
    return SKIPS.get((task, model_type)) or SKIPS.get(("*", model_type))


def model_class(task: str, model_type: str) -> type:
    name = getattr(modeling_auto, TASK_MAPPINGS[task])[model_type]
    return getattr(transformers, name[0] if isinstance(name, (tuple, list)) else name)


def _shrunk(values: dict[str, Any]) -> dict[str, Any]:
    """Overrides for one config dict: size keys made small, stage lists shortened, special ids in range."""
    out: dict[str, Any] = {}
    for key, small in _INT_KEYS.items():
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


def tiny_config(task: str, model_type: str) -> Any:
    """The architecture's default config, shrunk (see the module docstring), with 2 labels."""
    defaults = AutoConfig.for_model(model_type).to_dict()
    overrides = {**_shrunk(defaults), **_OVERRIDES.get(model_type, {})}
    for sub in _SUBCONFIGS:
        if isinstance(defaults.get(sub), dict):
            overrides[sub] = {**defaults[sub], **_shrunk(defaults[sub])}
    if "hidden_size" in overrides and defaults.get("head_dim"):
        overrides["head_dim"] = overrides["hidden_size"] // overrides.get(
            "num_attention_heads", defaults.get("num_attention_heads", 2)
        )
    if task == "speech-recognition" or defaults.get("vocab_size", 0) is None:
        overrides["vocab_size"] = 32  # a character vocabulary (CTC), or a model with no default (ESM)
    config = AutoConfig.for_model(model_type, **overrides)
    config.num_labels = 2
    return config


MAX_DEFAULT_PARAMS = 40_000_000


def build_tiny(task: str, model_type: str) -> Any:
    """The task model (random weights) of the tiny config, or of the default config where the generic shrink
    breaks the architecture (a forward pass on an example batch fails) and the default is under 40M weights."""
    import torch

    from hftl.models.layer_trace import example_inputs

    cls = model_class(task, model_type)
    try:
        model = cls(tiny_config(task, model_type))
        model.eval()
        with torch.no_grad():
            model(**example_inputs(model))
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
    if task == "image-classification":
        from transformers import ViTImageProcessor

        vision = getattr(model.config, "vision_config", None) or model.config
        size = getattr(vision, "image_size", 64)
        size = size if isinstance(size, int) else 64
        ViTImageProcessor(size={"height": size, "width": size}).save_pretrained(folder)
    elif task in ("text-classification", "token-classification"):
        _word_tokenizer(model).save_pretrained(folder)
    else:
        _audio_processor(task, model).save_pretrained(folder)


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
