"""Speech recognition with an encoder-decoder (Whisper) through the real CLI on a tiny Whisper built here.

The checkpoint folder is laid out as openai/whisper-tiny (config, generation config with its language and
task tables, log-mel feature extractor, byte-level tokenizer with Whisper's special tokens); the data are
tone "words" (one tone per letter) whose transcripts the decoder has to write token by token.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
import yaml
from safetensors.torch import load_file

from hftl.config import load_config
from hftl.data.modalities import get_modality
from hftl.data.modalities.speech import SpeechRecognition
from hftl.data.modalities.speech_seq2seq import SpeechSeq2Seq
from hftl.models.layer_map import build_layer_map
from hftl.models.layer_trace import example_inputs
from hftl.models.strategies.lora import default_lora_targets
from hftl.utils.errors import ConfigError
from tests.audio_fixtures import RATE, letters_clip, one_thread, save_tiny_wav2vec2, tone, write_tone_sequences  # noqa: F401
from tests.conftest import REPO, run_cli
from tests.whisper_fixtures import save_tiny_whisper


@pytest.fixture(scope="module")
def tiny_whisper(tmp_path_factory) -> Path:
    return save_tiny_whisper(tmp_path_factory.mktemp("tiny-whisper"))


@pytest.fixture(scope="module")
def tone_words(tmp_path_factory) -> Path:
    return write_tone_sequences(tmp_path_factory.mktemp("tone-words"), n=48)


def write_config(tmp_path: Path, model: Path, data: Path, strategy: str = "full", **train) -> Path:
    cfg = {
        "task": "speech-recognition",
        "model": {"name_or_path": str(model)},
        "data": {"train": str(data), "language": "en", "augment": False, "validation_split": 0.25},
        "strategy": {"name": strategy},
        "train": {"epochs": 2, "batch_size": 8, "learning_rate": 3e-3, "scheduler": "constant", "report_to": "none", **train},
        "output_dir": str(tmp_path / f"run-{strategy}"),
    }
    path = tmp_path / f"{strategy}.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def weights(folder: Path) -> dict[str, torch.Tensor]:
    return load_file(str(folder / "model.safetensors"))


def changed(before: dict, after: dict, prefix: str) -> list[bool]:
    return [not torch.equal(before[k], after[k]) for k in before if k.startswith(prefix)]


def test_a_whisper_checkpoint_is_read_as_encoder_blocks_and_a_decoder_head(tiny_whisper, tmp_path):
    cfg = load_config({"task": "speech-recognition", "model": {"name_or_path": str(tiny_whisper)}, "data": {"train": "x"}})
    modality = get_modality(cfg.task, cfg)
    assert isinstance(modality, SpeechSeq2Seq)
    cfg.model.name_or_path = str(save_tiny_wav2vec2(tmp_path / "w2v"))
    assert type(get_modality(cfg.task, cfg)) is SpeechRecognition  # CTC for the wav2vec2 family, as before

    from transformers import AutoProcessor, WhisperForConditionalGeneration

    model = WhisperForConditionalGeneration.from_pretrained(tiny_whisper)
    layer_map = build_layer_map(model, None, example_inputs(model, AutoProcessor.from_pretrained(tiny_whisper)))
    assert "the blocks are its encoder's 2 layers and the head is the decoder" in layer_map.note  # said before training
    assert layer_map.blocks == ["model.encoder.layers.0", "model.encoder.layers.1"]
    assert layer_map.neck == ["model.encoder.layer_norm"] and layer_map.head == ["model.decoder", "proj_out"]
    assert layer_map.base_prefix == "model.encoder" and not layer_map.head_is_new
    targets = default_lora_targets(model, layer_map)
    for stack in ("model.encoder.layers.1.self_attn", "model.decoder.layers.1.self_attn", "model.decoder.layers.1.encoder_attn"):
        assert {f"{stack}.q_proj", f"{stack}.v_proj"} <= set(targets)
    assert not any(t.endswith(("k_proj", "fc1", "out_proj")) for t in targets)


def train(config: Path, *overrides: str) -> None:
    run_cli("train", str(config), *overrides, in_process=True)


def refused(config: Path, *overrides: str) -> str:
    out = run_cli("train", str(config), *overrides, in_process=True, check=False)
    assert out.returncode == 2, out.stdout[-2000:]
    return out.stderr


def test_full_fine_tuning_learns_tone_words_and_the_pipeline_transcribes(tiny_whisper, tone_words, tmp_path):
    from transformers import pipeline

    config = write_config(tmp_path, tiny_whisper, tone_words, epochs=40)
    train(config)
    run = tmp_path / "run-full"
    metrics = json.loads((run / "metrics.json").read_text())
    losses = [h["eval_loss"] for h in metrics["history"]]
    assert losses[-1] < 0.3 * losses[0]
    assert metrics["history"][0]["eval_wer"] == 1.0  # nothing right at first ...
    assert metrics["validation"]["wer"] < 0.6, metrics["history"]  # ... most words right at the end
    # model/ is a Whisper that generates with the run's prompt, as a user's pipeline loads it.
    generation = json.loads((run / "model" / "generation_config.json").read_text())
    assert generation["language"] == "en" and generation["task"] == "transcribe"
    transcribe = pipeline("automatic-speech-recognition", model=str(run / "model"))
    rng = np.random.default_rng(5)
    words = ["ab", "cab", "bca", "ac ba"]
    heard = [transcribe({"raw": letters_clip(w, rng), "sampling_rate": RATE})["text"].strip().lower() for w in words]
    assert sum(h == w for h, w in zip(heard, words)) >= 2, heard
    card = (run / "README.md").read_text()
    assert "pipeline_tag: automatic-speech-recognition" in card and "language `en`, task `transcribe`" in card
    # hftl evaluate generates from model/ as the run did (training rows included here, so it does better).
    out = run_cli("evaluate", str(run), "--data", str(tone_words), in_process=True)
    scored = json.loads(out.stdout[out.stdout.index("{") :])
    assert scored["examples"] == 48 and scored["wer"] < 0.5
    out = run_cli("predict", str(run), "--data", str(tone_words), "--output", str(tmp_path / "p.csv"), in_process=True)
    assert len((tmp_path / "p.csv").read_text().splitlines()) == 49


@pytest.mark.parametrize("strategy", ["head_only", "freeze", "lora", "scratch", "hybrid"])
def test_each_strategy_trains_exactly_its_parts(strategy, tiny_whisper, tmp_path):
    data = write_tone_sequences(tmp_path / "data", n=16)
    name = "full" if strategy == "hybrid" else strategy
    overrides = {"head_only": ["strategy.trainable_blocks=1"], "freeze": ["strategy.trainable_blocks=1"]}.get(strategy, [])
    if strategy == "hybrid":  # two epochs at WER 1.0: the tie goes to the lower loss, the full phase's
        overrides = ["strategy.head_warmup_epochs=1"]
    config = write_config(tmp_path, tiny_whisper, data, name)
    train(config, *overrides)
    run = tmp_path / f"run-{name}"
    before, after = weights(tiny_whisper), weights(run / "model")
    assert set(before) == set(after)
    encoder_low = changed(before, after, "model.encoder.layers.0.") + changed(before, after, "model.encoder.conv")
    encoder_top = changed(before, after, "model.encoder.layers.1.")
    decoder = changed(before, after, "model.decoder.layers.")
    metrics = json.loads((run / "metrics.json").read_text())
    if strategy == "head_only":  # the decoder learns on a frozen encoder, whose outputs the cache holds
        assert not any(encoder_low + encoder_top) and all(decoder)
        assert metrics["feature_cache"]["cut"] == "base-model outputs" and metrics["feature_cache"]["train"]
    elif strategy == "freeze":  # plus the top encoder block: blocks count encoder layers, the decoder is the head
        assert not any(encoder_low) and all(encoder_top) and all(decoder)
        assert metrics["feature_cache"]["cut"].startswith("hidden states entering model.encoder.layers.1")
    elif strategy == "lora":  # q/v of both stacks merged in; nothing else moves
        q_v = [k for k in before if k.endswith(("q_proj.weight", "v_proj.weight"))]
        assert all(not torch.equal(before[k], after[k]) for k in q_v)
        assert all(torch.equal(before[k], after[k]) for k in before if k not in q_v)
        assert (run / "adapter" / "adapter_model.safetensors").is_file()
    else:  # scratch starts from random weights, hybrid trains all after a decoder warm-up
        assert all(encoder_low + encoder_top + decoder)
        phases = [p["name"] for p in metrics["strategy"]["phases"]]
        assert phases == (["head_warmup", "full"] if strategy == "hybrid" else ["scratch"])
    assert metrics["history"][-1]["eval_loss"] < metrics["history"][0]["eval_loss"]


def test_clips_longer_than_the_window_are_skipped_and_reported(tiny_whisper, tmp_path):
    data = write_tone_sequences(tmp_path / "data", n=16)
    rows = data.read_text().splitlines()
    sf.write(tmp_path / "data" / "clips" / "long.wav", tone(400.0, 2.5), RATE)  # the tiny encoder's window is 2 s
    data.write_text("\n".join([*rows, "clips/long.wav,ab"]) + "\n")
    config = write_config(tmp_path, tiny_whisper, data, epochs=1)
    train(config)
    skipped = json.loads((tmp_path / "run-full" / "metrics.json").read_text())["data"]["skipped"]
    assert skipped["train"]["count"] == 1 and skipped["train"]["items"][0]["item"].endswith("long.wav")
    assert skipped["train"]["items"][0]["reason"].startswith("2.50 s is longer than the 2 s the encoder takes")
    assert "2.50 s is longer than the 2 s" in refused(config, "data.on_bad_file=error", "overwrite=true")


def test_language_and_task_are_checked_against_the_checkpoint(tiny_whisper, tone_words, tmp_path):
    config = write_config(tmp_path, tiny_whisper, tone_words, epochs=1)
    assert "multilingual: set data.language" in refused(config, "data.language=null")
    assert "data.language='klingon'" in refused(config, "data.language=klingon")
    english = save_tiny_whisper(tmp_path / "tiny-en", multilingual=False)
    assert "English-only" in refused(write_config(tmp_path, english, tone_words, epochs=1))


@pytest.mark.slow
def test_whisper_own_window_of_30_seconds_and_3000_frames_with_beam_search(tmp_path):
    """Whisper's real input: every clip padded to 30 s, exactly 3,000 log-mel frames; evaluation by beam search."""
    from transformers import pipeline

    whisper = save_tiny_whisper(tmp_path / "tiny-30s", chunk_length=30)
    data = write_tone_sequences(tmp_path / "data", n=24)
    cfg = load_config({"task": "speech-recognition", "model": {"name_or_path": str(whisper)}, "data": {"train": str(data)}})
    cfg.data.language = "en"
    modality = get_modality(cfg.task, cfg)
    processor = modality.load_processor(str(whisper), None, False)
    clips = [{"input": letters_clip(w, np.random.default_rng(0)), "labels": [1, 2]} for w in ("ab", "cab ba")]
    assert modality.collator(processor)(clips)["input_features"].shape == (2, 80, 3000)
    cfg.train.generation_num_beams, cfg.train.generation_max_length = 2, 12
    assert modality.evaluator(processor, None).generate_kwargs == {"num_beams": 2, "max_length": 12}

    config = write_config(tmp_path, whisper, data, epochs=3, generation_num_beams=2, generation_max_length=12)
    train(config)
    run = tmp_path / "run-full"
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["history"][-1]["eval_loss"] < metrics["history"][0]["eval_loss"]
    transcribe = pipeline("automatic-speech-recognition", model=str(run / "model"))
    assert isinstance(transcribe({"raw": letters_clip("ab", np.random.default_rng(1)), "sampling_rate": RATE})["text"], str)


def test_the_whisper_configs_run_on_a_local_checkpoint(tiny_whisper, tmp_path):
    data = write_tone_sequences(tmp_path / "data", n=16)
    for name in ("whisper-full", "whisper-head-only", "whisper-lora"):
        cfg = load_config(REPO / "configs" / "audio" / f"{name}.yaml")
        assert cfg.task == "speech-recognition" and cfg.data.language == "en"
    overrides = [f"model.name_or_path={tiny_whisper}", f"data.train={data}", f"output_dir={tmp_path / 'run'}"]
    overrides += ["train.epochs=1", "train.batch_size=8", "train.report_to=none", "data.validation_split=0.25"]
    run_cli("train", str(REPO / "configs" / "audio" / "whisper-lora.yaml"), *overrides, in_process=True)
    assert (tmp_path / "run" / "adapter").is_dir() and (tmp_path / "run" / "model" / "generation_config.json").is_file()


def test_a_ctc_checkpoint_refuses_whisper_prompt_keys(tmp_path):
    w2v = str(save_tiny_wav2vec2(tmp_path / "w"))
    cfg = load_config({"task": "speech-recognition", "model": {"name_or_path": w2v}, "data": {"train": "x"}})
    cfg.data.language = "en"
    with pytest.raises(ConfigError, match="read as a CTC model"):
        get_modality(cfg.task, cfg)


def test_encoder_outputs_that_would_fill_the_disk_run_uncached(tiny_whisper, tmp_path, monkeypatch):
    import shutil
    from collections import namedtuple

    data = write_tone_sequences(tmp_path / "data", n=16)
    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(shutil, "disk_usage", lambda path: usage(10**6, 9 * 10**5, 10**5))  # 100 kB free
    train(write_config(tmp_path, tiny_whisper, data, "head_only", epochs=1))
    cache = json.loads((tmp_path / "run-head_only" / "metrics.json").read_text())["feature_cache"]
    assert not cache["train"] and "the features would take" in cache["note"] and "free disk space" in cache["note"]


def test_a_speech_language_model_is_refused_naming_what_is_supported(tmp_path):
    from transformers import AutoConfig

    AutoConfig.for_model("voxtral").save_pretrained(tmp_path / "voxtral")  # a config is all the choice reads
    cfg = load_config(
        {"task": "speech-recognition", "model": {"name_or_path": str(tmp_path / "voxtral")}, "data": {"train": "x"}}
    )
    with pytest.raises(ConfigError, match="decoder-only language model.*encoder-decoders \\(Whisper"):
        get_modality(cfg.task, cfg)
