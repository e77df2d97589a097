"""Speech modality without training: decoding and resampling, vocabulary, CTC decoding and error rates,
augmentation, batching, the frozen feature encoder in every strategy's plan, and bad input."""

from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf
import torch

from hftl.config import load_config
from hftl.data.audio_io import load_audio
from hftl.data.metrics import IGNORE
from hftl.data.modalities import get_modality
from hftl.data.modalities.audio import AudioAugment, centre_crop
from hftl.data.modalities.speech import CTCEvaluator, build_tokenizer, build_vocab, error_rates, normalize_transcript
from hftl.data.sources import load_splits
from hftl.models.layer_map import build_layer_map
from hftl.models.strategies import build_plan, feature_encoder_parameters
from hftl.models.strategies.lora import apply_lora, default_lora_targets
from hftl.utils.errors import DataError, HftlError
from tests.audio_fixtures import RATE, tiny_wav2vec2_config, tone, write_tone_classes, write_tone_sequences
from tests.audio_fixtures import one_thread as one_thread  # noqa: F401 - autouse: one torch thread
from tests.audio_fixtures import tiny_w2v as tiny_w2v  # noqa: F401 - pytest fixture

STRATEGIES = {
    "head_only": {"strategy.name": "head_only"},
    "freeze": {"strategy.name": "freeze", "strategy.trainable_blocks": 1},
    "full": {"strategy.name": "full"},
    "lora": {"strategy.name": "lora"},
    "scratch": {"strategy.name": "scratch"},
    "hybrid": {"strategy.name": "full", "strategy.head_warmup_epochs": 1},
}


def cfg(task: str, **overrides):
    return load_config(None, {"task": task, "model.name_or_path": "m", "data.train": "d", "train.epochs": 3, **overrides})


# -- decoding ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("rate", "channels", "fmt", "tolerance"),
    [
        (8_000, 1, "wav", 0.01),
        (22_050, 2, "wav", 0.01),
        (44_100, 1, "wav", 0.01),
        (44_100, 2, "flac", 0.01),
        (48_000, 1, "ogg", 0.06),
    ],
    ids=["8k-mono-wav", "22k-stereo-wav", "44k-mono-wav", "44k-stereo-flac", "48k-ogg-vorbis"],
)
def test_the_same_tone_at_any_rate_and_layout_decodes_to_the_same_16k_mono_input(tmp_path, rate, channels, fmt, tolerance):
    seconds, freq = 0.5, 440.0
    mono = tone(freq, seconds, rate)
    # Stereo with unequal channels: the down-mix must average them (0.6 and 0.4 of the tone give 0.5).
    data = np.stack([mono * 1.2, mono * 0.8], axis=1) if channels == 2 else mono
    path = tmp_path / f"tone.{fmt}"
    sf.write(path, data, rate)
    decoded = load_audio(str(path), RATE)
    expected = tone(freq, seconds, RATE)
    assert decoded.dtype == np.float32 and decoded.ndim == 1
    assert abs(len(decoded) - len(expected)) <= 1
    middle = slice(800, len(expected) - 800)  # resampler edges and fades aside
    assert np.abs(decoded[middle] - expected[middle]).max() < tolerance


def test_embedded_bytes_and_decoded_arrays_decode_like_files(tmp_path):
    x = tone(440.0, 0.3, 22_050)
    sf.write(tmp_path / "t.wav", x, 22_050)
    from_file = load_audio(str(tmp_path / "t.wav"), RATE)
    from_bytes = load_audio({"bytes": (tmp_path / "t.wav").read_bytes(), "path": None}, RATE)
    from_array = load_audio({"array": x, "sampling_rate": 22_050}, RATE)
    np.testing.assert_allclose(from_bytes, from_file, atol=1e-4)
    np.testing.assert_allclose(from_array, from_file, atol=1e-4)


def test_an_mp3_decodes_to_roughly_its_length(tmp_path):
    sf.write(tmp_path / "t.mp3", tone(440.0, 1.0, 44_100), 44_100)
    assert abs(len(load_audio(str(tmp_path / "t.mp3"), RATE)) - RATE) < 0.1 * RATE  # mp3 adds encoder padding


# -- vocabulary, decoding, metrics -----------------------------------------------------------------


def test_vocab_from_transcripts_and_tokenizer_round_trip():
    assert normalize_transcript("  Hello,\tWORLD  ") == "hello, world"
    vocab = build_vocab(["Abba", "cab  ba"])
    assert vocab == ["<pad>", "<unk>", "|", "a", "b", "c"]
    tokenizer = build_tokenizer(vocab)
    assert len(tokenizer) == len(vocab)  # no bos/eos widening the head
    ids = tokenizer("abba cab").input_ids
    assert ids == [3, 4, 4, 3, 2, 5, 3, 4]
    assert tokenizer.decode(ids, group_tokens=False) == "abba cab"  # references keep double letters


def test_ctc_evaluator_ignores_padded_frames_and_scores_wer_cer():
    tokenizer = build_tokenizer(["<pad>", "<unk>", "|", "a", "b", "c"])
    evaluator = CTCEvaluator(tokenizer)

    class Model:  # 2 input samples per output frame
        def _get_feat_extract_output_lengths(self, lengths):
            return lengths // 2

    # frames: a a _ b | c (then padding frames that would decode as "c")
    frames = torch.tensor([[3, 3, 0, 4, 2, 5, 5, 5], [4, 0, 4, 0, 0, 0, 0, 0]])
    logits = torch.nn.functional.one_hot(frames, 6).float()
    mask = torch.tensor([[1] * 12 + [0] * 4, [1] * 6 + [0] * 10])
    preds = evaluator.predictions(logits, {"attention_mask": mask}, Model())
    assert preds[0].tolist()[-2:] == [IGNORE, IGNORE] and preds[1].tolist()[3:] == [IGNORE] * 5
    assert evaluator.decode(preds.tolist(), group=True) == ["ab c", "bb"]
    refs = [[3, 4, 2, 5, IGNORE], [4, 4, IGNORE, IGNORE, IGNORE]]
    assert evaluator.compute(preds.tolist(), refs) == {"wer": 0.0, "cer": 0.0}
    assert error_rates(["a cat sat"], ["a hat sat"]) == pytest.approx({"wer": 1 / 3, "cer": 1 / 9})
    assert not evaluator.classification


# -- augmentation and batches ----------------------------------------------------------------------


def test_augmentation_is_seeded_by_torch_and_respects_lengths():
    x = tone(440.0, 0.5)
    augment = AudioAugment(max_samples=4_000)
    with torch.random.fork_rng():
        torch.manual_seed(3)
        a = augment(x)
        torch.manual_seed(3)
        b = augment(x)
        torch.manual_seed(4)
        c = augment(x)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
    assert len(a) <= 4_000 and len(c) <= 4_000
    ctc = AudioAugment(max_samples=4_000, crop=False)
    for seed in range(5):
        torch.manual_seed(seed)
        assert len(ctc(x)) >= len(x)  # CTC clips are never cut: their transcripts would lie
    assert len(centre_crop(x, 1_000)) == 1_000 and centre_crop(x, None) is x


def test_collators_pad_per_batch_with_attention_masks_and_ctc_labels(tiny_w2v):
    speech = get_modality("speech-recognition", cfg("speech-recognition"))
    processor = speech.load_processor(str(tiny_w2v), None, False, build_vocab(["ab", "ca"]))
    batch = speech.collator(processor)(
        [{"input": tone(400.0, 0.2), "labels": "ab"}, {"input": tone(400.0, 0.4), "labels": "ca b"}]
    )
    assert batch["input_values"].shape == (2, int(0.4 * RATE)) and batch["attention_mask"][0].sum() == int(0.2 * RATE)
    assert batch["labels"].tolist() == [[3, 4, IGNORE, IGNORE], [5, 3, 2, 4]]
    assert speech.model_kwargs([], processor) == {
        "vocab_size": 6, "pad_token_id": 0, "ctc_loss_reduction": "mean", "ctc_zero_infinity": True,
    }  # fmt: skip

    classify = get_modality("audio-classification", cfg("audio-classification", **{"data.max_duration_seconds": 0.25}))
    fe = classify.load_processor(str(tiny_w2v), None, False)
    batch = classify.collator(fe)([{"input": tone(400.0, 0.1), "labels": 0}, {"input": tone(400.0, 1.0), "labels": 2}])
    assert batch["input_values"].shape == (2, int(0.25 * RATE))  # the long clip is centre-cropped
    assert batch["labels"].tolist() == [0, 2]


# -- strategies on speech models -------------------------------------------------------------------


def tiny_models():
    from transformers import (
        HubertConfig,
        HubertForSequenceClassification,
        Wav2Vec2ForCTC,
        Wav2Vec2ForSequenceClassification,
        WavLMConfig,
        WavLMForSequenceClassification,
    )

    keys = ("hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size", "conv_dim", "conv_stride")
    shared = {k: v for k, v in tiny_wav2vec2_config().to_dict().items() if k in keys}
    shared.update(conv_kernel=(10, 8, 8), num_conv_pos_embeddings=8, num_conv_pos_embedding_groups=4)
    return {
        "wav2vec2-cls": Wav2Vec2ForSequenceClassification(tiny_wav2vec2_config()),
        "wav2vec2-ctc": Wav2Vec2ForCTC(tiny_wav2vec2_config(vocab_size=6)),
        "hubert-cls": HubertForSequenceClassification(HubertConfig(**shared)),
        "wavlm-cls": WavLMForSequenceClassification(WavLMConfig(**shared, num_buckets=8, max_bucket_distance=16)),
    }


def test_layer_map_lora_targets_and_feature_encoder_of_wav2vec2_hubert_wavlm():
    for name, model in tiny_models().items():
        layer_map = build_layer_map(model)
        base = model.base_model_prefix
        assert len(layer_map.blocks) == 2, name
        assert f"{base}.feature_extractor" in layer_map.embeddings and f"{base}.feature_projection" in layer_map.embeddings
        assert set(layer_map.head) == ({"lm_head"} if "ctc" in name else {"projector", "classifier"})
        encoder = feature_encoder_parameters(model)
        assert encoder and all(n.startswith(f"{base}.feature_extractor.") for n in encoder), name
        assert all(p.requires_grad for p in model.parameters())  # found without leaving anything frozen
        targets = default_lora_targets(model, layer_map)
        assert sorted(t.rsplit(".", 1)[-1] for t in targets) == ["q_proj", "q_proj", "v_proj", "v_proj"], (name, targets)


@pytest.mark.parametrize("strategy", list(STRATEGIES))
def test_feature_encoder_is_frozen_in_every_phase_except_for_scratch(strategy):
    for name in ("wav2vec2-cls", "wav2vec2-ctc"):
        model = tiny_models()[name]
        layer_map = build_layer_map(model)
        config = cfg("speech-recognition" if "ctc" in name else "audio-classification", **STRATEGIES[strategy])
        if strategy == "lora":
            model = apply_lora(model, layer_map, config.strategy.lora)
        encoder = feature_encoder_parameters(model)
        plan = build_plan(model, layer_map, config)
        trained = plan.trainable_any & encoder
        assert trained == (encoder if strategy == "scratch" else set()), name
        if strategy in ("full", "hybrid"):  # and everything else trains
            assert plan.phases[-1].trainable == {n for n, _ in model.named_parameters()} - encoder
        unfrozen = build_plan(
            model, layer_map, cfg(config.task, **STRATEGIES[strategy], **{"strategy.freeze_feature_encoder": False})
        )
        if strategy in ("full", "hybrid", "scratch"):
            assert encoder <= unfrozen.trainable_any


# -- data loading and bad input --------------------------------------------------------------------


def bad_clips(folder) -> dict[str, str]:
    """One file per kind of bad input, with the words its reason must contain."""
    folder.mkdir(parents=True, exist_ok=True)
    sf.write(folder / "empty.wav", np.zeros(0, dtype=np.float32), RATE)
    sf.write(folder / "silence.wav", np.zeros(RATE // 4, dtype=np.float32), RATE)
    (folder / "corrupt.wav").write_bytes(b"RIFF\x00\x00 this is not audio" * 20)
    sf.write(folder / "rate0.wav", tone(440.0, 0.25), RATE, subtype="PCM_16")
    header = bytearray((folder / "rate0.wav").read_bytes())
    header[24:28] = (0).to_bytes(4, "little")  # the WAV header's sampling-rate field
    (folder / "rate0.wav").write_bytes(bytes(header))
    return {
        "empty.wav": "zero-length",
        "silence.wav": "silence only",
        "corrupt.wav": "not audio soundfile can read",
        "rate0.wav": "sampling rate cannot be read",
        "missing.wav": "file not found",
    }


def test_each_bad_clip_is_skipped_with_its_reason_or_refused_with_on_bad_file_error(tmp_path):
    good = write_tone_classes(tmp_path / "tones", per_class=4)
    reasons = bad_clips(tmp_path / "bad")
    rows = [{"audio": str(p), "label": p.parent.name} for p in sorted(good.rglob("*.wav"))]
    rows += [{"audio": f"bad/{name}", "label": "low"} for name in reasons]  # relative to the csv
    rows.append({"audio": None, "label": "low"})
    import pandas as pd

    pd.DataFrame(rows).to_csv(tmp_path / "data.csv", index=False)
    config = cfg("audio-classification", **{"data.train": str(tmp_path / "data.csv")})
    splits = load_splits(config.data, get_modality(config.task, config), seed=0)
    assert len(splits.train) + len(splits.validation) == 12
    skipped = dict(splits.report.skipped["train"])
    assert len(skipped) == len(reasons) + 1
    for name, words in reasons.items():
        item = next(k for k in skipped if k.endswith(f"bad/{name}"))
        assert words in skipped[item], (name, skipped[item])
    assert any("empty cell" in reason for reason in skipped.values())
    assert f"row {13 + list(reasons).index('silence.wav')}" in next(k for k in skipped if "silence" in k)

    config.data.on_bad_file = "error"
    with pytest.raises(DataError, match=r"row 13 of the train split: .*bad/empty.wav: zero-length audio.*on_bad_file=skip"):
        load_splits(config.data, get_modality(config.task, config), seed=0)


def test_speech_recognition_data_problems(tmp_path):
    csv_path = write_tone_sequences(tmp_path / "seq", n=12)
    import pandas as pd

    table = pd.read_csv(csv_path)
    table.loc[3, "transcription"] = "   "  # empty transcript
    table.loc[5, "audio"] = "clips/long.wav"  # longer than max_duration_seconds
    sf.write(tmp_path / "seq" / "clips" / "long.wav", tone(400.0, 2.0), RATE)
    table.to_csv(csv_path, index=False)
    validation = table.iloc[:4].copy()
    validation.loc[1, "transcription"] = "abz"  # a character the training transcripts never have
    validation.to_csv(tmp_path / "seq" / "validation.csv", index=False)
    overrides = {"data.train": str(csv_path), "data.validation": str(tmp_path / "seq" / "validation.csv")}
    config = cfg("speech-recognition", **overrides, **{"data.max_duration_seconds": 1.5})
    splits = load_splits(config.data, get_modality(config.task, config), seed=0)
    train, val = dict(splits.report.skipped["train"]), dict(splits.report.skipped["validation"])
    assert len(splits.train) == 10 and len(splits.validation) == 2
    assert sorted(train.values()) == [
        "2.00 s is longer than data.max_duration_seconds=1.5 (CTC clips are not cropped)",
        "empty transcript (column 'transcription')",
    ]
    assert sorted(val.values()) == [
        "characters 'z' are not in the training transcripts",
        "empty transcript (column 'transcription')",
    ]
    assert "row 2" in val and any(item.startswith("row 4: ") for item in val)
    assert splits.label_names[:3] == ["<pad>", "<unk>", "|"] and set(splits.label_names[3:]) == {"a", "b", "c"}
    assert all(t == t.lower() for t in splits.train["labels"])  # transcripts normalised

    config.data.on_bad_file = "error"
    config.data.max_duration_seconds = None
    table.loc[3, "transcription"] = validation.loc[3, "transcription"] = "ab"
    table.to_csv(csv_path, index=False)
    validation.to_csv(tmp_path / "seq" / "validation.csv", index=False)
    with pytest.raises(DataError, match=r"row 2 of the validation split: characters 'z' are not in the training transcripts"):
        load_splits(config.data, get_modality(config.task, config), seed=0)


def test_audiofolders_with_split_and_class_folders_or_a_metadata_file(tmp_path):
    write_tone_classes(tmp_path / "split" / "train", per_class=3)
    write_tone_classes(tmp_path / "split" / "test", per_class=2)
    (tmp_path / "split" / "train" / "low" / "notes.txt").write_text("not audio")
    config = cfg("audio-classification", **{"data.train": str(tmp_path / "split")})
    splits = load_splits(config.data, get_modality(config.task, config), seed=0)
    assert splits.label_names == ["high", "low", "mid"] and len(splits.test) == 6
    assert "not an audio file" in str(splits.report.skipped["train"])

    csv_path = write_tone_sequences(tmp_path / "asr", n=8)
    import pandas as pd

    pd.read_csv(csv_path).rename(columns={"audio": "file_name"}).to_csv(tmp_path / "asr" / "metadata.csv", index=False)
    config = cfg("speech-recognition", **{"data.train": str(tmp_path / "asr")})
    splits = load_splits(config.data, get_modality(config.task, config), seed=0)
    assert len(splits.train) + len(splits.validation) == 8 and splits.input_column == "audio"
    with pytest.raises(DataError, match="metadata.csv with columns file_name,transcription"):
        load_splits(
            cfg("speech-recognition", **{"data.train": str(tmp_path / "split")}).data, get_modality("speech-recognition"), 0
        )


def test_missing_columns_and_checkpoints_without_feature_extractor_are_clear_errors(tmp_path, tiny_w2v):
    (tmp_path / "t.csv").write_text("clip,label\na.wav,x\n")
    config = cfg("audio-classification", **{"data.train": str(tmp_path / "t.csv")})
    with pytest.raises(DataError, match="no audio column found.*data.audio_column"):
        load_splits(config.data, get_modality(config.task, config), seed=0)
    (tmp_path / "n.csv").write_text("audio,label\n1,x\n")
    config = cfg("audio-classification", **{"data.train": str(tmp_path / "n.csv")})
    with pytest.raises(DataError, match="must hold audio file paths"):
        load_splits(config.data, get_modality(config.task, config), seed=0)
    bare = tmp_path / "bare"
    bare.mkdir()
    (bare / "config.json").write_text((tiny_w2v / "config.json").read_text())
    with pytest.raises(HftlError, match="no feature extractor could be loaded.*AutoFeatureExtractor"):
        get_modality("audio-classification").load_processor(str(bare), None, False)
    sf.write(tmp_path / "quiet.wav", np.zeros(800, dtype=np.float32), RATE)
    with pytest.raises(DataError, match="silence only"):
        get_modality("audio-classification").load_predict_input(str(tmp_path / "quiet.wav"))


def test_lengths_for_group_by_length_come_from_headers_capped_at_max_duration(tmp_path, tiny_w2v):
    for i, seconds in enumerate((0.2, 0.5, 3.0)):
        sf.write(tmp_path / f"{i}.wav", tone(440.0, seconds, 8_000), 8_000)
    import datasets

    ds = datasets.Dataset.from_dict({"audio": [str(tmp_path / f"{i}.wav") for i in range(3)]})
    modality = get_modality("audio-classification", cfg("audio-classification", **{"data.max_duration_seconds": 1.0}))
    processor = modality.load_processor(str(tiny_w2v), None, False)
    assert modality.lengths(ds, "audio", processor) == [3_200, 8_000, 16_000]


def test_a_table_with_embedded_audio_decodes_without_torchcodec(tmp_path, tiny_w2v):
    """A parquet file whose column is a datasets `Audio` feature holding the bytes, as Hub datasets are stored."""
    import io

    import datasets

    clips = []
    for freq in (330.0, 2_200.0) * 3:
        buffer = io.BytesIO()
        sf.write(buffer, tone(freq, 0.3, 22_050), 22_050, format="FLAC")
        clips.append({"bytes": buffer.getvalue(), "path": None})
    ds = datasets.Dataset.from_dict({"speech": clips, "label": ["low", "high"] * 3})
    ds.cast_column("speech", datasets.Audio(decode=False)).to_parquet(tmp_path / "embedded.parquet")
    config = cfg("audio-classification", **{"data.train": str(tmp_path / "embedded.parquet")})
    modality = get_modality(config.task, config)
    splits = load_splits(config.data, modality, seed=0)
    assert splits.input_column == "speech" and len(splits.train) + len(splits.validation) == 6
    samples = modality.loader(modality.load_processor(str(tiny_w2v), None, False))(splits.train[0]["speech"])
    assert samples.dtype == np.float32 and abs(len(samples) - int(0.3 * RATE)) <= 1
