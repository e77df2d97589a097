"""`hftl push --space` against the push tests' local stand-in for the Hub: the Space repo is created with the
gradio SDK and holds app.py, space.json, requirements.txt and README.md; the Space's app.py, run in its own
process without hftl, loads the model repo by its id (from a Hub cache filled with what was pushed, offline)
and answers as `hftl predict` does (a text, image, audio and token-tagging run); the metadata and pins are
right; the refusals and the token."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from importlib.metadata import version
from pathlib import Path

import pytest
import yaml

from hftl.runs.app import TOP_K, highlighted, label_value
from hftl.runs.inference import Predictor
from hftl.runs.space import SPACE_FILES, TEMPLATE, push_space, write_space
from hftl.utils.errors import HftlError
from tests.conftest import run_cli
from tests.runs.run_fixtures import text_case, train
from tests.runs.test_hub import TOKEN
from tests.runs.test_hub import hub as hub  # noqa: F401 - the local Hub stand-in, a fixture (used by name)
from tests.text_data import sentiment_rows, write_csv

pytest.importorskip("gradio")

COMMIT = "a" * 40


@pytest.fixture(scope="module")
def text_run(tiny_bert, tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("space")
    config = {
        "task": "text-classification",
        "model": {"name_or_path": str(tiny_bert)},
        "data": {"train": str(write_csv(folder / "d.csv", sentiment_rows(40)))},
        "strategy": {"name": "head_only"},
        "train": {"epochs": 1, "batch_size": 16, "report_to": "none"},
        "output_dir": str(folder / "run"),
    }
    (folder / "c.yaml").write_text(yaml.safe_dump(config))
    run_cli("train", str(folder / "c.yaml"), in_process=True)
    return folder / "run"


def unpack(files: dict[str, bytes], folder: Path) -> Path:
    for name, content in files.items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_bytes(content)
    return folder


def hub_cache(repo_id: str, files: dict[str, bytes], cache: Path) -> Path:
    """A Hugging Face cache holding `repo_id` at one commit, as a Space's first download leaves it, so the
    app loads the repo by its id with HF_HUB_OFFLINE=1."""
    repo = cache / f"models--{repo_id.replace('/', '--')}"
    unpack(files, repo / "snapshots" / COMMIT)
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(COMMIT)
    return cache


APP_CHECK = """
import json, sys
import app
answer = app.predict(sys.argv[1])
import inspect
fns = list(app.build().fns.values())
names = [fn.api_name for fn in fns]
params = [list(inspect.signature(fn.fn).parameters) for fn in fns]  # named for gradio_client, not param_0
print(json.dumps({"answer": answer, "api": names, "params": params,
                  "hftl": any(m.split(".")[0] == "hftl" for m in sys.modules)}))
"""


def space_answer(hub, repo_id: str, item: str, tmp_path: Path) -> dict:
    """What the pushed Space `repo_id` answers for `item`, its app.py run in its own process without hftl,
    offline, on a Hub cache holding the pushed model repo `repo_id`."""
    folder = unpack(hub.repos[f"spaces/{repo_id}"], tmp_path / "space")
    cache = hub_cache(repo_id, hub.repos[repo_id], tmp_path / "cache")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HUB_CACHE": str(cache), "PYTHONPATH": str(folder)}
    env.pop("MODEL_ID", None)
    done = subprocess.run(
        [sys.executable, "-c", APP_CHECK, item], cwd=folder, env=env, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def expected_answer(run: Path, item: str) -> object:
    """What `hftl app` shows for `item` (a text or file path), from hftl's own `Predictor`, as JSON gives it back."""
    predictor = Predictor(run)
    if predictor.modality.task == "token-classification":
        return [list(piece) for piece in highlighted(item, predictor([item])[0])]
    return label_value(predictor([predictor.modality.load_predict_input(item)], top_k=min(TOP_K, len(predictor.order)))[0])


def assert_same_answer(got: object, expected: object) -> None:
    """Equal, but for the scores: within 1e-5."""
    if isinstance(expected, dict):
        assert isinstance(got, dict) and got.keys() == expected.keys(), (got, expected)
        assert all(abs(got[k] - v) < 1e-5 for k, v in expected.items()), (got, expected)
    else:
        assert got == expected


def test_cli_pushes_the_model_and_a_space_that_loads_it(hub, text_run, tmp_path):
    proc = run_cli("push", str(text_run), "--space", "me/sentiment", "--endpoint", hub.endpoint, in_process=True)
    assert "pushed the Space me/sentiment (loads me/sentiment)" in proc.stdout
    assert TOKEN not in proc.stdout + proc.stderr
    assert hub.created == [
        {"repo": "me/sentiment", "private": False},
        {"repo": "me/sentiment", "private": False, "type": "space", "sdk": "gradio"},
    ]
    space = hub.repos["spaces/me/sentiment"]
    assert set(space) == set(SPACE_FILES)
    assert space["app.py"] == TEMPLATE.read_bytes()
    assert {"model.safetensors", "config.json", "README.md"} <= set(hub.repos["me/sentiment"])
    assert all(header == f"Bearer {TOKEN}" for header in hub.auth)
    assert not any(TOKEN.encode() in content for repo in hub.repos.values() for content in repo.values())

    # The Space's app, in its own process and without hftl, loads the model repo by id and answers as hftl predict.
    got = space_answer(hub, "me/sentiment", "a wonderful film", tmp_path)
    assert got["api"] == ["predict"] and got["params"] == [["text"]] and got["hftl"] is False
    assert_same_answer(got["answer"], expected_answer(text_run, "a wonderful film"))


@pytest.fixture(scope="module")
def runs(tiny_vit, tiny_bert, digits, tmp_path_factory):
    """Builders of a tiny trained run of each kind and one input to predict (a PNG, a wav, a text)."""

    def image() -> tuple[Path, str]:
        root = tmp_path_factory.mktemp("space-image")
        return train(root, "image-classification", tiny_vit, digits), str(sorted((digits / "1").glob("*.png"))[0])

    def audio() -> tuple[Path, str]:
        import numpy as np
        import soundfile

        from tests.audio_fixtures import CLASS_TONES, save_tiny_wav2vec2, tone, write_tone_classes

        root = tmp_path_factory.mktemp("space-audio")
        run = train(
            root, "audio-classification", save_tiny_wav2vec2(root / "w2v"), write_tone_classes(root / "tones", per_class=4)
        )
        # A stereo clip at 22.05 kHz: both sides mix it down and resample it to the model's 16 kHz.
        x = tone(CLASS_TONES["mid"], 0.3, rate=22_050)
        soundfile.write(root / "clip.wav", np.stack([x, 0.5 * x], axis=1), 22_050)
        return run, str(root / "clip.wav")

    def tokens() -> tuple[Path, str]:
        run, _, inputs = text_case(tmp_path_factory.mktemp("space-tokens"), tiny_bert, "tokens")
        return run, inputs[1]

    return {"image": image, "audio": audio, "tokens": tokens}


@pytest.mark.slow
@pytest.mark.parametrize(
    ("kind", "task", "param", "extra"),
    [
        ("image", "image-classification", "image", {"pillow", "torchvision"}),
        ("audio", "audio-classification", "audio", {"numpy", "soundfile", "soxr"}),
        ("tokens", "token-classification", "text", set()),
    ],
)
def test_the_space_answers_as_hftl_predict_for_images_audio_and_tags(hub, runs, kind, task, param, extra, tmp_path):
    """Each kind of input the Space's page takes (a PNG path, a wav path, a text to tag), with what it imports pinned."""
    run, item = runs[kind]()
    run_cli("push", str(run), "--space", f"me/{kind}", "--endpoint", hub.endpoint, in_process=True)
    space = hub.repos[f"spaces/me/{kind}"]
    assert json.loads(space["space.json"])["task"] == task
    pins = dict(line.split("==") for line in space["requirements.txt"].decode().splitlines())
    assert set(pins) == {"transformers", "torch", *extra}
    assert all(version(name).split("+")[0] == pinned for name, pinned in pins.items())

    got = space_answer(hub, f"me/{kind}", item, tmp_path)
    assert got["api"] == ["predict"] and got["params"] == [[param]] and got["hftl"] is False
    assert_same_answer(got["answer"], expected_answer(run, item))


def test_the_space_metadata_and_pins(text_run, tmp_path):
    folder = write_space(text_run, tmp_path / "space", "me/model", space_id="me/demo")
    text = (folder / "README.md").read_text()
    assert text.startswith("---\n")
    meta = yaml.safe_load(text.split("---\n")[1])
    assert meta["sdk"] == "gradio" and meta["sdk_version"] == version("gradio") and meta["app_file"] == "app.py"
    assert meta["models"] == ["me/model"] and meta["pinned"] is False and meta["title"] == "demo"
    assert {"emoji", "colorFrom", "colorTo", "short_description"} <= set(meta) and len(meta["short_description"]) <= 60
    body = text.split("---\n", 2)[2]
    assert "**Base model:**" in body and "| validation |" in body and "me/model" in body
    pins = dict(line.split("==") for line in (folder / "requirements.txt").read_text().splitlines())
    assert set(pins) == {"transformers", "torch"}  # a text page imports nothing else; gradio comes from sdk_version
    assert all(version(name).split("+")[0] == pinned for name, pinned in pins.items())
    settings = json.loads((folder / "space.json").read_text())
    assert settings["model"] == "me/model" and settings["task"] == "text-classification"
    assert settings["text_pair"] is False and settings["problem"] == "single_label_classification"


def test_a_space_is_refused_without_a_model_to_serve(hub, text_run, tmp_path, monkeypatch):
    with pytest.raises(HftlError, match="not a finished hftl run"):
        push_space(tmp_path, "me/demo", "me/model", endpoint=hub.endpoint)
    proc = run_cli("push", str(text_run), "--space", "me/x", "--adapter-only", in_process=True, check=False)
    assert proc.returncode == 2 and "not a LoRA adapter" in proc.stderr
    proc = run_cli("push", str(text_run), in_process=True, check=False)
    assert proc.returncode == 2 and "--repo-id OWNER/NAME" in proc.stderr
    proc = run_cli("push", str(text_run), "--repo-id", "me/ok", "--space", "bad id", in_process=True, check=False)
    assert proc.returncode == 2 and "OWNER/NAME" in proc.stderr
    assert hub.repos == {} and hub.created == []  # nothing went up: every refusal comes before the first upload

    (text_run / "model" / "notes.txt").write_text(f"token: {TOKEN}\n")  # the model push refuses a file holding it
    try:
        proc = run_cli("push", str(text_run), "--space", "me/x", "--endpoint", hub.endpoint, in_process=True, check=False)
    finally:
        (text_run / "model" / "notes.txt").unlink()
    assert proc.returncode == 2 and "contains your Hugging Face token" in proc.stderr and hub.repos == {}


def test_space_only_pushes_the_space_alone(hub, text_run):
    args = ["--repo-id", "me/m", "--space", "me/d", "--space-only", "--endpoint", hub.endpoint]
    run_cli("push", str(text_run), *args, in_process=True)
    assert set(hub.repos) == {"spaces/me/d"}
    assert json.loads(hub.repos["spaces/me/d"]["space.json"])["model"] == "me/m"
    assert not any(TOKEN.encode() in content for content in hub.repos["spaces/me/d"].values())
