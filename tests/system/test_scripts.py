"""scripts/train_{image,text,audio}.py run as a user runs them (`python scripts/train_image.py CONFIG key=value ...`)
on the shipped configs with tiny models: a complete run folder whose model/ loads in `transformers.pipeline`,
and the printed summary is the run's own."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.audio_fixtures import tiny_w2v as tiny_w2v  # noqa: F401 - pytest fixtures
from tests.audio_fixtures import tone_classes as tone_classes  # noqa: F401
from tests.conftest import REPO
from tests.text_data import sentiment_rows, tagging_rows, write_csv, write_jsonl

COMMON = ["train.epochs=2", "train.batch_size=16", "train.report_to=none", "train.logging_steps=1"]


def run_script(name: str, config: str, *overrides: str) -> tuple[subprocess.CompletedProcess, dict]:
    """The script in a fresh interpreter (this checkout's hftl first on the path); its exit code and JSON summary."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    cmd = [sys.executable, str(REPO / "scripts" / name), str(REPO / "configs" / config), *overrides]
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO, env=env, timeout=600)
    assert proc.returncode == 0, f"{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}"
    start = proc.stdout.rindex('{\n  "output_dir"')  # the summary is printed last, indented
    return proc, json.loads(proc.stdout[start:])


def check_run_folder(run_dir: Path, summary: dict, labels: list[str]) -> dict:
    """model/, the card, config.yaml and metrics.json are there; the summary is metrics.json's."""
    for item in ("config.yaml", "README.md", "metrics.json", "model/config.json", "model/model.safetensors"):
        assert (run_dir / item).is_file(), item
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert summary["output_dir"] == str(run_dir)
    assert summary["best_epoch"] == metrics["best_epoch"] and 1 <= summary["best_epoch"] <= 2
    assert {k: v for k, v in summary.items() if k not in ("output_dir", "best_epoch")} == metrics["validation"]
    assert metrics["data"]["labels"] == labels and len(metrics["history"]) == 2
    card = (run_dir / "README.md").read_text()
    assert "model-index" in card and f"Best epoch: {metrics['best_epoch']}" in card
    return metrics


def check_classifier(run_dir: Path, pipeline_task: str, example, labels: list[str]) -> None:
    """model/ loads in its pipeline and scores every label of the run."""
    from transformers import pipeline

    predictions = pipeline(pipeline_task, model=str(run_dir / "model"))(example, top_k=len(labels))
    assert sorted(p["label"] for p in predictions) == sorted(labels)
    assert sum(p["score"] for p in predictions) == pytest.approx(1.0, abs=1e-4)


def test_train_image_script(tiny_vit, digits, tmp_path):
    run_dir = tmp_path / "run"
    overrides = [f"model.name_or_path={tiny_vit}", f"data.train={digits}", "data.augment=false", f"output_dir={run_dir}"]
    _, summary = run_script("train_image.py", "vision/vit-head-only.yaml", *overrides, *COMMON)
    metrics = check_run_folder(run_dir, summary, ["0", "1", "2"])
    check_classifier(run_dir, "image-classification", str(next((digits / "1").iterdir())), ["0", "1", "2"])
    assert metrics["strategy"]["name"] == "head_only" and metrics["data"]["validation_examples"] == 9  # 10% of 90


def test_train_text_script(tiny_bert, tmp_path):
    run_dir = tmp_path / "run"
    data = write_csv(tmp_path / "reviews.csv", sentiment_rows(40))
    overrides = [f"model.name_or_path={tiny_bert}", f"data.train={data}", "data.max_length=16", f"output_dir={run_dir}"]
    proc, summary = run_script("train_text.py", "text/bert-full.yaml", *overrides, *COMMON)
    assert "first example:" in proc.stdout and "training texts are truncated" in proc.stdout  # the script's own lines
    metrics = check_run_folder(run_dir, summary, ["neg", "pos"])
    check_classifier(run_dir, "text-classification", "a very good film", ["neg", "pos"])
    assert metrics["strategy"]["name"] == "full" and (run_dir / "model" / "tokenizer.json").is_file()


def test_train_text_script_tags_words(tiny_bert, tmp_path):
    from transformers import AutoConfig, pipeline

    run_dir = tmp_path / "run"
    data = write_jsonl(tmp_path / "ner.jsonl", tagging_rows(40))
    overrides = [f"model.name_or_path={tiny_bert}", f"data.train={data}", f"output_dir={run_dir}"]
    proc, summary = run_script("train_text.py", "text/bert-ner-full.yaml", *overrides, *COMMON)
    assert "first example:" in proc.stdout
    labels = ["O", "B-LOC", "B-PER", "I-LOC"]
    metrics = check_run_folder(run_dir, summary, labels)
    assert set(metrics["validation"]) == {"f1", "precision", "recall", "accuracy", "loss"}  # entity-level metrics
    assert list(AutoConfig.from_pretrained(run_dir / "model").id2label.values()) == labels
    tags = pipeline("token-classification", model=str(run_dir / "model"))("alice visited new york")
    assert {t["entity"] for t in tags} <= set(labels)


def test_train_audio_script(tiny_w2v, tone_classes, tmp_path):  # noqa: F811 - the fixtures imported above
    import soundfile as sf

    run_dir = tmp_path / "run"
    overrides = [f"model.name_or_path={tiny_w2v}", f"data.train={tone_classes}", f"output_dir={run_dir}"]
    _, summary = run_script("train_audio.py", "audio/wav2vec2-head-only.yaml", *overrides, *COMMON)
    clip, rate = sf.read(next((tone_classes / "mid").iterdir()), dtype="float32")
    check_run_folder(run_dir, summary, ["high", "low", "mid"])
    check_classifier(run_dir, "audio-classification", {"raw": clip, "sampling_rate": rate}, ["high", "low", "mid"])


@pytest.mark.parametrize(
    ("script", "config"), [("train_image.py", "text/bert-full.yaml"), ("train_text.py", "vision/vit-full.yaml")]
)
def test_scripts_refuse_another_tasks_config(script, config, capsys):
    spec = importlib.util.spec_from_file_location(script[:-3], REPO / "scripts" / script)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert module.main([str(REPO / "configs" / config)]) == 2
    assert "but this script trains" in capsys.readouterr().err


def test_scripts_take_the_run_lock(tiny_vit, digits, tiny_bert, tiny_w2v, tone_classes, tmp_path, capsys):  # noqa: F811
    """Each script refuses a run folder another live process is writing, as `hftl train` does, and writes nothing."""
    from tests.run_folder.test_run_lock import hold

    text = write_csv(tmp_path / "reviews.csv", sentiment_rows(40))
    cases = [
        ("train_image.py", "vision/vit-head-only.yaml", tiny_vit, digits),
        ("train_text.py", "text/bert-head-only.yaml", tiny_bert, text),
        ("train_audio.py", "audio/wav2vec2-head-only.yaml", tiny_w2v, tone_classes),
    ]
    for script, config, model, data in cases:
        spec = importlib.util.spec_from_file_location(script[:-3], REPO / "scripts" / script)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        run_dir = tmp_path / script
        holder = hold(run_dir)
        try:
            args = [f"model.name_or_path={model}", f"data.train={data}", f"output_dir={run_dir}", "train.report_to=none"]
            assert module.main([str(REPO / "configs" / config), *args]) == 2, script
            assert f"is being written by another hftl process (pid {holder.pid}" in capsys.readouterr().err, script
            assert not (run_dir / "config.yaml").exists(), script
        finally:
            holder.kill()
            holder.wait()
