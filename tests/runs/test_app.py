"""`hftl app RUN`: the Gradio page answers as `hftl predict` does, renders in a real browser, and stays on 127.0.0.1.

The slow tests serve tiny trained runs (image, text, audio classification) with the real command in a subprocess,
call its `predict` endpoint with gradio_client, open it in headless Chromium, and run the server under an egress
guard: a `sitecustomize` that records (and refuses) every socket connect or name lookup that is not loopback.
"""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from contextlib import contextmanager
from pathlib import Path

import pytest
import yaml

from hftl.runs.app import highlighted, import_gradio, label_value, passing_labels, regression_value
from hftl.utils.errors import HftlError
from tests.audio_fixtures import one_thread, save_tiny_wav2vec2, write_tone_classes  # noqa: F401
from tests.conftest import REPO, require, run_cli
from tests.runs.run_fixtures import free_port
from tests.text_data import sentiment_rows, write_csv

# Loaded by the app's interpreter (PYTHONPATH): every non-loopback connect or lookup is written to
# $HFTL_EGRESS_LOG and refused, so a request leaving the machine fails loudly and is on record.
GUARD = """
import ipaddress, os, socket

_LOG = os.environ["HFTL_EGRESS_LOG"]

def _loopback(host):
    host = host.decode() if isinstance(host, bytes) else str(host)
    if host in ("localhost", "ip6-localhost"):
        return True
    try:
        return ipaddress.ip_address(host.split("%")[0]).is_loopback
    except ValueError:
        return False

def _refuse(what):
    with open(_LOG, "a") as f:
        f.write(what + "\\n")
    raise OSError(101, "hftl test egress guard: " + what)

def _guard(name):
    real = getattr(socket.socket, name)
    def guarded(self, address, *args):
        target = args[-1] if name == "sendto" else address
        if self.family in (socket.AF_INET, socket.AF_INET6) and not _loopback(target[0]):
            _refuse(f"{name} {target[0]}:{target[1]}")
        return real(self, address, *args)
    setattr(socket.socket, name, guarded)

for _name in ("connect", "connect_ex", "sendto"):
    _guard(_name)

_getaddrinfo = socket.getaddrinfo
def _literal(host):  # an address, not a name: no lookup goes out (a connect to it is caught above)
    try:
        return bool(ipaddress.ip_address(str(host).split("%")[0]))
    except ValueError:
        return False

def getaddrinfo(host, *args, **kwargs):
    if host is not None and not _loopback(host) and not _literal(host):
        _refuse(f"lookup {host}")
    return _getaddrinfo(host, *args, **kwargs)
socket.getaddrinfo = getaddrinfo
"""
READY = "[...document.querySelectorAll('button')].some(b => b.textContent.includes('Predict'))"


@pytest.fixture(scope="module")
def guard(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("egress-guard")
    (folder / "sitecustomize.py").write_text(GUARD)
    return folder


def guarded_env(guard: Path, log: Path) -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": f"{guard}{os.pathsep}{REPO}", "HFTL_EGRESS_LOG": str(log), "OMP_NUM_THREADS": "1"}


def test_the_egress_guard_records_and_refuses_what_leaves_the_machine(guard, tmp_path):
    """The guard the app runs under is real: a connect to a routable address and a lookup are caught."""
    log = tmp_path / "egress.log"
    code = (
        "import socket\n"
        "for target in (('192.0.2.1', 80), ('127.0.0.1', 9)):\n"
        "    try: socket.create_connection(target, timeout=0.5)\n"
        "    except OSError: pass\n"
        "try: socket.getaddrinfo('example.com', 443)\n"
        "except OSError: pass\n"
    )
    subprocess.run([sys.executable, "-c", code], env=guarded_env(guard, log), check=True, timeout=60)
    assert log.read_text().splitlines() == ["connect 192.0.2.1:80", "lookup example.com"]  # loopback passes


# -- fast: the pieces of the page, and the refusals ----------------------------------------------------
def test_outputs_take_the_shapes_the_gradio_components_show():
    preds = [{"label": "a", "score": 0.8, "predicted": True}, {"label": "b", "score": 0.3, "predicted": False}]
    assert label_value(preds) == {"a": 0.8, "b": 0.3} and passing_labels(preds) == "a"
    assert passing_labels([{**preds[1]}]) == "(none reaches the threshold)"
    assert regression_value([{"label": "valence", "value": -1.5}]) == {"valence": -1.5}
    ents = [{"entity_group": "LOC", "start": 10, "end": 15}, {"entity_group": "PER", "start": 0, "end": 3}]
    assert highlighted("Ada lives Paris now", ents) == [("Ada", "PER"), (" lives ", None), ("Paris", "LOC"), (" now", None)]


def test_without_gradio_the_error_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "gradio", None)  # as if not installed: `import gradio` raises ImportError
    with pytest.raises(HftlError, match=r'pip install "hftl\[app\]"'):
        import_gradio()


def test_the_defaults_bind_this_machine_only_and_share_nothing():
    from hftl.cli import parse_args

    args = parse_args(["app", "runs/x"])
    assert (args.host, args.port, args.share, args.onnx) == ("127.0.0.1", None, False, None)


def test_importing_gradio_through_hftl_turns_analytics_off(monkeypatch):
    monkeypatch.setenv("GRADIO_ANALYTICS_ENABLED", "True")
    require("gradio", 'pip install -e ".[app]"')
    import_gradio()
    assert os.environ["GRADIO_ANALYTICS_ENABLED"] == "False" and os.environ["HF_HUB_DISABLE_TELEMETRY"] == "1"


# -- slow: tiny trained runs served by the real command ------------------------------------------------
def train(root: Path, config: dict) -> Path:
    (root / "c.yaml").write_text(yaml.safe_dump({**config, "train": {"epochs": 1, "batch_size": 8, "report_to": "none"}}))
    run_cli("train", str(root / "c.yaml"), f"output_dir={root / 'run'}", in_process=True)
    return root / "run"


@pytest.fixture(scope="module")
def runs(tiny_vit, tiny_bert, digits, tmp_path_factory) -> dict:
    """Builders of a tiny trained run and one input per kind (trained on first use)."""
    made: dict = {}

    def image() -> tuple[Path, str]:
        root = tmp_path_factory.mktemp("app-image")
        config = {"task": "image-classification", "model": {"name_or_path": str(tiny_vit)}}
        run = train(root, {**config, "data": {"train": str(digits), "validation_split": 0.2, "augment": False}})
        return run, str(sorted((digits / "1").iterdir())[0])

    def text() -> tuple[Path, str]:
        root = tmp_path_factory.mktemp("app-text")
        data = write_csv(root / "train.csv", sentiment_rows(48))
        config = {"task": "text-classification", "model": {"name_or_path": str(tiny_bert)}}
        return train(root, {**config, "data": {"train": str(data), "validation_split": 0.25}}), "a wonderful film"

    def audio() -> tuple[Path, str]:
        root = tmp_path_factory.mktemp("app-audio")
        data = write_tone_classes(root / "tones", per_class=4)
        w2v = save_tiny_wav2vec2(root / "w2v")
        config = {"task": "audio-classification", "model": {"name_or_path": str(w2v)}}
        return train(root, {**config, "data": {"train": str(data), "validation_split": 0.25}}), str(data / "mid" / "0.wav")

    builders = {"image": image, "text": text, "audio": audio}

    def get(kind: str) -> tuple[Path, str]:
        if kind not in made:
            made[kind] = builders[kind]()
        return made[kind]

    return get


@contextmanager
def served(run: Path, env: dict[str, str], *options: str, timeout: float = 240.0):
    """`hftl app RUN --port P` in its own process until its page answers; stopped with Ctrl-C (SIGINT) after."""
    port = free_port()
    cmd = [sys.executable, "-m", "hftl.cli", "app", str(run), "--port", str(port), *options]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env, cwd=REPO)
    url = f"http://127.0.0.1:{port}/"
    try:
        deadline = time.monotonic() + timeout
        while True:
            if proc.poll() is not None:
                pytest.fail(f"hftl app exited with {proc.returncode}:\n{proc.stdout.read()[-4000:]}")
            try:
                urllib.request.urlopen(url, timeout=5).read()
                break
            except OSError:
                assert time.monotonic() < deadline, f"hftl app did not answer on {url} in {timeout:.0f} s"
                time.sleep(0.5)
        yield url
    finally:
        out = stop(proc)
    assert proc.returncode == 0, out[-4000:]  # Ctrl-C is the normal way out


def stop(proc: subprocess.Popen, wait: float = 45.0) -> str:
    """Ctrl-C, and a second one if the first is still closing the server after `wait` s, as a user presses it:
    after the whole slow suite, CI once saw every app still closing 60 s after the first (never when run alone)."""
    for _ in range(2):
        proc.send_signal(signal.SIGINT)
        try:
            return proc.communicate(timeout=wait)[0]
        except subprocess.TimeoutExpired:
            continue
    proc.kill()
    return proc.communicate()[0]


def pixel_spread(png: bytes) -> float:
    """Standard deviation of the grey levels: 0 for a blank (one-colour) page."""
    import numpy as np
    from PIL import Image

    return float(np.asarray(Image.open(io.BytesIO(png)).convert("L"), dtype=np.float32).std())


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["image", "text", "audio"])
def test_the_page_answers_as_hftl_predict_renders_and_stays_on_this_machine(kind, runs, guard, tmp_path, chromium):
    require("gradio", 'pip install -e ".[app]"')
    client_module = require("gradio_client", 'pip install -e ".[app]"')
    from tests.browser import render

    run, item = runs(kind)
    labels = json.loads((run / "metrics.json").read_text())["data"]["labels"]
    cli = run_cli("predict", str(run), item, "--top-k", str(len(labels)), "--json", in_process=True).stdout
    expected = json.loads(cli)[0]["predictions"]
    log = tmp_path / "egress.log"
    with served(run, guarded_env(guard, log)) as url:
        client = client_module.Client(url, verbose=False)
        got = client.predict(item if kind == "text" else client_module.handle_file(item), api_name="/predict")
        client.close()  # its heartbeat stream is an open connection the server would wait for when it closes
        seen = render(url, timeout=180, ready=READY, screenshot=True)
    (tmp_path / "page.png").write_bytes(seen["screenshot"])  # kept in pytest's basetemp, to look at on a failure
    assert [c["label"] for c in got["confidences"]] == [p["label"] for p in expected]
    assert [c["confidence"] for c in got["confidences"]] == pytest.approx([p["score"] for p in expected], abs=1e-6)
    assert got["label"] == expected[0]["label"]
    assert seen["errors"] == [], seen["errors"]  # an empty console: no script error, no failed load
    assert all(r.startswith((url, "data:", "blob:")) for r in seen["requests"]), seen["requests"]  # the page too
    assert pixel_spread(seen["screenshot"]) > 5, "the page rendered blank"
    assert not log.exists(), log.read_text()  # the server connected to, and looked up, loopback only


@pytest.mark.slow
def test_with_onnx_the_page_serves_the_exported_graph_with_the_same_answers(runs, guard, tmp_path):
    """`hftl app RUN --onnx`: RUN/onnx/ (from `hftl export`) on onnxruntime answers as the PyTorch model does."""
    client_module = require("gradio_client", 'pip install -e ".[app]"')
    require("onnxruntime", 'pip install -e ".[export]"')
    export = pytest.importorskip("hftl.runs.onnx_export", reason="hftl export --format onnx is not in this hftl")
    run, item = runs("text")
    if not (run / "onnx" / "model.onnx").is_file():
        export.export_onnx(run, None, None, None)
    expected = json.loads(run_cli("predict", str(run), item, "--top-k", "2", "--json", in_process=True).stdout)[0]
    with served(run, guarded_env(guard, tmp_path / "egress.log"), "--onnx") as url:
        client = client_module.Client(url, verbose=False)
        got = client.predict(item, api_name="/predict")
        client.close()
    assert [c["label"] for c in got["confidences"]] == [p["label"] for p in expected["predictions"]]
    assert [c["confidence"] for c in got["confidences"]] == pytest.approx([p["score"] for p in expected["predictions"]], abs=1e-4)
