"""Every strategy x (audio classification, CTC speech recognition) through the real CLI on a tiny wav2vec2:
what changed and what stayed bit-identical (the feature encoder above all), the exported model/ in its
pipeline, learnable tone sets, `hftl predict` / `hftl evaluate`, the script and the shipped configs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import yaml
from accelerate.utils import set_seed

from hftl.config import load_config
from hftl.data.modalities import get_modality
from hftl.models.loading import setup_model
from hftl.models.strategies import feature_encoder_parameters
from hftl.run_folder.layout import load_run
from tests.audio_fixtures import LETTER_TONES, RATE, letters_clip, tone
from tests.audio_fixtures import one_thread as one_thread  # noqa: F401 - autouse: one torch thread
from tests.audio_fixtures import tiny_w2v as tiny_w2v  # noqa: F401 - pytest fixtures
from tests.audio_fixtures import tone_classes as tone_classes  # noqa: F401
from tests.audio_fixtures import tone_sequences as tone_sequences  # noqa: F401
from tests.conftest import REPO, run_cli
from tests.training.test_training import STRATEGIES  # the same overrides per strategy as the image runs

TASKS = ("audio-classification", "speech-recognition")


def write_config(tmp_path: Path, task: str, model_dir: Path, data: Path, **train) -> Path:
    config = {
        "task": task,
        "model": {"name_or_path": str(model_dir)},
        "data": {"train": str(data), "validation_split": 0.25},
        "train": {
            "epochs": 2, "batch_size": 8, "learning_rate": 1e-3, "head_learning_rate": 1e-2, "report_to": "none",
            "logging_steps": 1, "load_best_at_end": False, **train,
        },
    }  # fmt: skip
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def initial_state(run_dir: Path) -> tuple[dict[str, torch.Tensor], object, set[str]]:
    """The model exactly as the run started (same seed, same code path), merged if LoRA, its layer map,
    and the names of its feature-encoder parameters."""
    cfg, _ = load_run(run_dir)
    labels = json.loads((run_dir / "metrics.json").read_text())["data"]["labels"]
    set_seed(cfg.train.seed)
    model, _, layer_map, _ = setup_model(cfg, get_modality(cfg.task, cfg), labels)
    if hasattr(model, "peft_config"):
        model = model.merge_and_unload()
    return {k: v.clone() for k, v in model.state_dict().items()}, layer_map, feature_encoder_parameters(model)


def data_for(task: str, tone_classes: Path, tone_sequences: Path) -> Path:
    return tone_classes if task == "audio-classification" else tone_sequences


@pytest.mark.parametrize("task", TASKS)
@pytest.mark.parametrize("strategy", list(STRATEGIES))
def test_strategy_trains_through_cli_and_changes_exactly_its_parts(
    task, strategy, tiny_w2v, tone_classes, tone_sequences, tmp_path
):
    run_dir = tmp_path / "run"
    config = write_config(tmp_path, task, tiny_w2v, data_for(task, tone_classes, tone_sequences))
    proc = run_cli("train", str(config), f"output_dir={run_dir}", *STRATEGIES[strategy], in_process=True)
    assert "what trains" in proc.stdout

    for item in ("config.yaml", "model/config.json", "model/model.safetensors", "README.md", "metrics.json"):
        assert (run_dir / item).exists(), item
    init, layer_map, encoder = initial_state(run_dir)
    model_class = get_modality(task).model_class()
    final = model_class.from_pretrained(run_dir / "model").state_dict()
    assert set(final) <= set(init)
    changed = {k for k in final if not torch.equal(final[k], init[k])}
    encoder_weights = {k for k in final if k.startswith("wav2vec2.feature_extractor.")}
    assert encoder_weights and {n for n in encoder if n in final} == encoder_weights
    if strategy == "scratch":
        assert encoder_weights <= changed  # from scratch, the feature encoder trains too
    else:
        assert not changed & encoder_weights  # frozen by default: bit-identical
    parts = {layer_map.part_of(k) for k in changed}
    n = len(layer_map.blocks)
    if strategy == "head_only":
        assert parts == {"head"}  # every encoder weight bit-identical
    elif strategy == "freeze":
        assert parts == {"head", f"block.{n - 1}"}
    elif strategy == "lora":
        adapted = {k for k in changed if layer_map.part_of(k) != "head"}
        assert "head" in parts and adapted and all(k.endswith(("q_proj.weight", "v_proj.weight")) for k in adapted)
    else:  # full, scratch, hybrid: every part trains (the frozen feature encoder aside)
        assert parts == {"embeddings", "block.0", "block.1", "head"}
        assert changed | encoder_weights | {k for k in final if "masked_spec_embed" in k} >= {
            k for k, v in final.items() if v.is_floating_point()
        }

    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert len(metrics["history"]) == 2
    if strategy == "hybrid":
        assert [h["phase"] for h in metrics["history"]] == ["head_warmup", "full"]
    card = (run_dir / "README.md").read_text()
    assert "model-index" in card and "trainable parameters" in card

    from transformers import pipeline

    if task == "audio-classification":
        assert metrics["confusion_matrix"] and set(metrics["validation"]) >= {"accuracy", "f1"}
        classify = pipeline("audio-classification", model=str(run_dir / "model"))
        preds = classify({"raw": tone(880.0, 0.3), "sampling_rate": RATE}, top_k=3)
        assert {p["label"] for p in preds} == {"high", "low", "mid"}
    else:
        assert metrics["confusion_matrix"] is None and set(metrics["validation"]) == {"wer", "cer", "loss"}
        transcribe = pipeline("automatic-speech-recognition", model=str(run_dir / "model"))
        out = transcribe({"raw": tone(400.0, 0.3), "sampling_rate": RATE})
        assert isinstance(out["text"], str) and set(out["text"]) <= set(LETTER_TONES) | {" "}


def test_feature_encoder_trains_when_freeze_feature_encoder_is_false(tiny_w2v, tone_classes, tmp_path):
    run_dir = tmp_path / "run"
    config = write_config(tmp_path, "audio-classification", tiny_w2v, tone_classes, epochs=1)
    unfrozen = "strategy.freeze_feature_encoder=false"
    run_cli("train", str(config), f"output_dir={run_dir}", "strategy=full", unfrozen, in_process=True)
    init, _, _ = initial_state(run_dir)
    from transformers import AutoModelForAudioClassification

    final = AutoModelForAudioClassification.from_pretrained(run_dir / "model").state_dict()
    encoder = [k for k in final if k.startswith("wav2vec2.feature_extractor.") and k.endswith("conv.weight")]
    assert encoder and all(not torch.equal(final[k], init[k]) for k in encoder)


def test_audio_classification_of_tones_reaches_clearly_above_chance(tiny_w2v, tone_classes, tmp_path):
    run_dir = tmp_path / "run"
    config = write_config(tmp_path, "audio-classification", tiny_w2v, tone_classes, epochs=3, batch_size=4)
    run_cli("train", str(config), f"output_dir={run_dir}", "strategy=full", "data.group_by_length=true", in_process=True)
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["validation"]["accuracy"] >= 0.8  # chance is 1/3


def test_ctc_lowers_the_character_error_rate_on_tone_letters(tiny_w2v, tmp_path):
    from tests.audio_fixtures import write_tone_sequences

    data = write_tone_sequences(tmp_path / "seq", n=96)
    run_dir = tmp_path / "run"
    config = write_config(
        tmp_path, "speech-recognition", tiny_w2v, data, epochs=6, batch_size=4, scheduler="constant", metric_for_best="cer"
    )
    run_cli("train", str(config), f"output_dir={run_dir}", "strategy=full", "train.learning_rate=2e-3", in_process=True)
    cer = [h["eval_cer"] for h in json.loads((run_dir / "metrics.json").read_text())["history"]]
    assert cer[0] >= 0.9  # a new CTC head first emits blanks only
    assert min(cer) <= 0.4 and cer[-1] < cer[0] - 0.4, cer


@pytest.mark.parametrize("task", TASKS)
def test_predict_and_evaluate_a_finished_run(task, tiny_w2v, tone_classes, tone_sequences, tmp_path):
    import numpy as np
    import soundfile as sf

    run_dir = tmp_path / "run"
    data = data_for(task, tone_classes, tone_sequences)
    config = write_config(tmp_path, task, tiny_w2v, data, epochs=1)
    run_cli("train", str(config), f"output_dir={run_dir}", "strategy=head_only", in_process=True)
    pipeline_task = {"speech-recognition": "automatic-speech-recognition"}.get(task, task)
    assert f"type: {pipeline_task}" in (run_dir / "README.md").read_text()  # model-index task types are the Hub's
    clip = tmp_path / "clip.wav"  # 44.1 kHz stereo: predict resamples and down-mixes like training did
    mono = letters_clip("ab", np.random.default_rng(0)) if task == "speech-recognition" else tone(880.0, 0.3)
    import soxr

    stereo = soxr.resample(mono, RATE, 44_100)
    sf.write(clip, np.stack([stereo, stereo], axis=1), 44_100)
    if task == "speech-recognition":  # a transcript is no ranking: --top-k is refused, not ignored
        refused = run_cli("predict", str(run_dir), str(clip), "--top-k", "2", in_process=True, check=False)
        assert refused.returncode != 0 and "--top-k ranks classes" in refused.stderr
    top_k = ["--top-k", "2"] if task == "audio-classification" else []
    out = run_cli("predict", str(run_dir), str(clip), "--json", *top_k, in_process=True)
    parsed = json.loads(out.stdout[out.stdout.index("[") :])
    assert parsed[0]["input"] == str(clip)
    if task == "audio-classification":
        assert len(parsed[0]["predictions"]) == 2 and parsed[0]["predictions"][0]["label"] in {"high", "low", "mid"}
    else:
        assert set(parsed[0]["predictions"][0]) == {"text"}
    out = run_cli("predict", str(run_dir), str(clip), in_process=True)
    assert out.stdout.startswith(f"{clip}: ")

    out = run_cli("evaluate", str(run_dir), "--data", str(data), in_process=True)
    metrics = json.loads(out.stdout[out.stdout.index("{") :])
    assert metrics["examples"] == 48 and ("cer" in metrics if task == "speech-recognition" else "f1" in metrics)

    sf.write(tmp_path / "silent.wav", np.zeros(RATE // 2, dtype=np.float32), RATE)
    bad = run_cli("predict", str(run_dir), str(tmp_path / "silent.wav"), in_process=True, check=False)
    assert bad.returncode == 2 and "silent.wav: silence only" in bad.stderr


def test_train_audio_script_and_every_audio_config(tiny_w2v, tone_sequences, tmp_path):
    configs = sorted((REPO / "configs" / "audio").glob("*.yaml"))
    names = {p.stem for p in configs}
    assert {f"wav2vec2-{s}" for s in ("head-only", "freeze", "full", "lora", "scratch", "hybrid")} <= names
    assert {f"wav2vec2-ctc-{s}" for s in ("head-only", "freeze", "full", "lora")} <= names
    for path in configs:
        cfg = load_config(path)
        assert cfg.task in TASKS and path.read_text().startswith("# hftl train configs/audio/"), path

    import importlib.util

    spec = importlib.util.spec_from_file_location("train_audio", REPO / "scripts" / "train_audio.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    run_dir = tmp_path / "run"
    overrides = [f"model.name_or_path={tiny_w2v}", f"data.train={tone_sequences}", f"output_dir={run_dir}"]
    overrides += ["train.epochs=1", "train.batch_size=8", "train.report_to=none", "data.max_duration_seconds=null"]
    assert script.main([str(REPO / "configs" / "audio" / "wav2vec2-ctc-lora.yaml"), *overrides]) == 0
    assert (run_dir / "model" / "vocab.json").exists() and (run_dir / "adapter").is_dir()
    assert script.main([str(REPO / "configs" / "vision" / "vit-full.yaml")]) == 2  # another task: refused


def test_audio_regression_and_multi_label_predict_through_the_plain_pipeline(tiny_w2v, tone_classes, tmp_path):
    """The label shapes on audio: a tone's pitch step (low 0, mid 1, high 2) as a number, and as labels."""
    import soundfile as sf
    from transformers import pipeline

    from tests.text_data import write_jsonl

    step = {"low": 0.0, "mid": 1.0, "high": 2.0}
    clips = sorted(tone_classes.glob("*/*.wav"))
    tags = {"low": ["low"], "mid": ["mid", "raised"], "high": ["high", "raised"]}
    rows = [{"audio": str(c), "pitch": step[c.parent.name], "tags": tags[c.parent.name]} for c in clips]
    data = write_jsonl(tmp_path / "tones.jsonl", rows)
    config = write_config(tmp_path, "audio-classification", tiny_w2v, data, epochs=3, batch_size=4)
    regression = tmp_path / "regression"
    run_cli(
        "train", str(config), f"output_dir={regression}", "strategy=full", "data.problem=regression",
        "data.label_column=pitch", "load_best_at_end=true", in_process=True,
    )  # fmt: skip
    metrics = json.loads((regression / "metrics.json").read_text())["validation"]
    assert metrics["r2"] > 0.3, metrics
    pipe = pipeline("audio-classification", model=str(regression / "model"))
    # Decoded here as hftl predict does: the pipeline would need ffmpeg to read files itself.
    high = [{"raw": sf.read(c, dtype="float32")[0], "sampling_rate": RATE} for c in clips if c.parent.name == "high"][:3]
    values = [out[0]["score"] for out in pipe(high, top_k=None)]
    assert all(0.5 < v < 3.0 for v in values), values  # in pitch steps: the scaling is folded into the head

    multi = tmp_path / "multi"
    run_cli("train", str(config), f"output_dir={multi}", "strategy=full", "data.label_column=tags", "epochs=1", in_process=True)
    assert json.loads((multi / "metrics.json").read_text())["data"]["labels"] == ["high", "low", "mid", "raised"]
    outputs = pipeline("audio-classification", model=str(multi / "model"))(high[0], top_k=None)
    assert sorted(o["label"] for o in outputs) == ["high", "low", "mid", "raised"]
    assert abs(sum(o["score"] for o in outputs) - 1) > 1e-3  # a sigmoid per label
