"""A tiny Whisper checkpoint folder laid out as openai/whisper-tiny is: config, generation config (language
and task tables), feature extractor and a byte-level tokenizer with Whisper's special tokens in their order.

The tokenizer has no merges: every byte is a token, so tone "words" over a/b/c are one token a letter. The
feature extractor keeps Whisper's log-mel recipe; `chunk_length` sets its fixed window (30 s and 3,000
frames as Whisper's own, or shorter for fast tests), and the encoder's positions follow it.
"""

from __future__ import annotations

from pathlib import Path

SPECIAL_AFTER_LANGUAGES = (
    *("<|translate|>", "<|transcribe|>", "<|startoflm|>"),
    *("<|startofprev|>", "<|nospeech|>", "<|notimestamps|>"),
)


def whisper_tokenizer():
    """A WhisperTokenizer over the 256 byte symbols, with Whisper's special tokens after them in Whisper's order."""
    from transformers import WhisperTokenizer
    from transformers.convert_slow_tokenizer import bytes_to_unicode
    from transformers.models.whisper.tokenization_whisper import LANGUAGES

    vocab = {symbol: i for i, symbol in enumerate(bytes_to_unicode().values())}
    specials = ["<|startoftranscript|>", *(f"<|{code}|>" for code in LANGUAGES), *SPECIAL_AFTER_LANGUAGES]
    # Padding as openai/whisper-tiny pads: with its end-of-text token.
    return WhisperTokenizer(vocab=vocab, merges=[], pad_token="<|endoftext|>", additional_special_tokens=specials)


def save_tiny_whisper(folder: Path, chunk_length: int = 2, multilingual: bool = True, **overrides) -> Path:
    """A pretrained-looking Whisper folder (random weights, seeded) that `pipeline` and hftl load offline."""
    import torch
    from transformers import (
        GenerationConfig,
        WhisperConfig,
        WhisperFeatureExtractor,
        WhisperForConditionalGeneration,
        WhisperProcessor,
    )
    from transformers.models.whisper.tokenization_whisper import LANGUAGES

    tokenizer = whisper_tokenizer()
    extractor = WhisperFeatureExtractor(feature_size=80, chunk_length=chunk_length)
    ids = tokenizer.convert_tokens_to_ids
    eot, sot = ids("<|endoftext|>"), ids("<|startoftranscript|>")
    kwargs = dict(
        vocab_size=len(tokenizer), num_mel_bins=80, d_model=32, encoder_layers=2, decoder_layers=2,
        encoder_attention_heads=2, decoder_attention_heads=2, encoder_ffn_dim=64, decoder_ffn_dim=64,
        max_source_positions=extractor.nb_max_frames // 2, max_target_positions=64,
        pad_token_id=eot, bos_token_id=eot, eos_token_id=eot, decoder_start_token_id=sot,
    )  # fmt: skip
    kwargs.update(overrides)
    torch.manual_seed(0)
    model = WhisperForConditionalGeneration(WhisperConfig(**kwargs))
    generation = dict(decoder_start_token_id=sot, eos_token_id=eot, pad_token_id=eot, bos_token_id=eot, max_length=64)
    generation.update(
        no_timestamps_token_id=ids("<|notimestamps|>"),
        is_multilingual=multilingual,
        begin_suppress_tokens=[ids("Ġ"), eot],
    )
    if multilingual:
        generation["lang_to_id"] = {f"<|{code}|>": ids(f"<|{code}|>") for code in LANGUAGES}
        generation["task_to_id"] = {"translate": ids("<|translate|>"), "transcribe": ids("<|transcribe|>")}
    model.generation_config = GenerationConfig(**generation)
    model.save_pretrained(folder)
    WhisperProcessor(feature_extractor=extractor, tokenizer=tokenizer).save_pretrained(folder)
    return folder
