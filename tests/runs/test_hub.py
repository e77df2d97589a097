"""`hftl push` through the real huggingface_hub client, against a local stand-in for the Hub's HTTP API:
which files are uploaded (and which are not), that the token travels in the header only, that the
pushed folder loads in `transformers.pipeline`, and the errors."""

from __future__ import annotations

import base64
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import yaml

from hftl.runs.hub import check_repo_id, files_to_push, push_run
from hftl.utils.errors import HftlError
from tests.conftest import run_cli
from tests.text_data import sentiment_rows, write_csv

TOKEN = "hf_hftlTestToken0123456789abcdefXYZ"


class FakeHub(BaseHTTPRequestHandler):
    """The three endpoints `create_repo` + `create_commit` use, for models and Spaces; committed files land in
    `self.server.repos` (a Space's under `spaces/OWNER/NAME`)."""

    def log_message(self, *args) -> None:  # keep test output clean
        pass

    def _json(self, status: int, body: dict) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_POST(self) -> None:  # noqa: N802 - the http.server API
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        self.server.auth.append(self.headers.get("Authorization"))
        self.server.bodies.append(body)
        parts = self.path.strip("/").split("/")
        if self.path == "/api/repos/create":
            request = json.loads(body)
            repo = f"{request.get('organization') or 'me'}/{request['name']}"
            private = request.get("visibility") == "private" or request.get("private") is True  # newer / older clients
            created = {"repo": repo, "private": private}
            if request.get("type", "model") != "model":  # a Space: its type and SDK are what the Hub needs
                created.update(type=request["type"], sdk=request.get("sdk"))
            self.server.created.append(created)
            return self._json(200, {"url": f"http://{self.headers['Host']}/{repo}", "name": repo})
        if self.path == "/api/validate-yaml":  # the client checks the model card's metadata before committing
            self.server.cards.append(json.loads(body))
            return self._json(200, {"errors": [], "warnings": []})
        kind = parts[1] if len(parts) == 6 and parts[0] == "api" and parts[1] in ("models", "spaces") else None
        if kind and parts[4] == "preupload":
            modes = [{"path": f["path"], "uploadMode": "regular", "shouldIgnore": False} for f in json.loads(body)["files"]]
            return self._json(200, {"files": modes})
        if kind and parts[4] == "commit":
            repo = f"{parts[2]}/{parts[3]}" if kind == "models" else f"spaces/{parts[2]}/{parts[3]}"
            stored = self.server.repos.setdefault(repo, {})
            for line in body.decode().splitlines():
                item = json.loads(line)
                if item["key"] == "file":
                    stored[item["value"]["path"]] = base64.b64decode(item["value"]["content"])
            oid = "0" * 40
            return self._json(200, {"commitUrl": f"http://{self.headers['Host']}/{repo}/commit/{oid}", "commitOid": oid})
        return self._json(404, {"error": f"unexpected {self.path}"})


@pytest.fixture()
def hub(monkeypatch):
    import huggingface_hub.constants

    server = ThreadingHTTPServer(("127.0.0.1", 0), FakeHub)
    server.repos, server.created, server.auth, server.bodies, server.cards = {}, [], [], [], []
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)  # this "Hub" is local
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    server.endpoint = f"http://127.0.0.1:{server.server_address[1]}"
    yield server
    server.shutdown()


@pytest.fixture(scope="module")
def lora_run(tiny_bert, tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("push")
    config = {
        "task": "text-classification",
        "model": {"name_or_path": str(tiny_bert)},
        "data": {"train": str(write_csv(folder / "d.csv", sentiment_rows(40)))},
        "strategy": {"name": "lora"},
        "train": {"epochs": 1, "batch_size": 16, "report_to": "tensorboard"},  # logs/ exist and must stay home
        "output_dir": str(folder / "run"),
    }
    (folder / "c.yaml").write_text(yaml.safe_dump(config))
    run_cli("train", str(folder / "c.yaml"), in_process=True)
    return folder / "run"


def test_push_uploads_the_model_card_and_metrics_only(hub, lora_run, tmp_path):
    from transformers import pipeline

    url = push_run(lora_run, "me/bert-lora", private=True, endpoint=hub.endpoint)
    assert url.endswith("/me/bert-lora/commit/" + "0" * 40)
    assert hub.created == [{"repo": "me/bert-lora", "private": True}]
    pushed = hub.repos["me/bert-lora"]
    model_files = {p.relative_to(lora_run / "model").as_posix() for p in (lora_run / "model").rglob("*") if p.is_file()}
    assert set(pushed) == model_files | {"README.md", "metrics.json", "hftl_config.yaml"}
    assert not any(name.startswith(("checkpoints", "logs", "adapter")) for name in pushed)
    assert pushed["model.safetensors"] == (lora_run / "model" / "model.safetensors").read_bytes()
    assert b"model-index" in pushed["README.md"]
    card = pushed["README.md"].decode()
    assert 'pipeline("text-classification", model="me/bert-lora")' in card  # the repo, not the run folder
    assert "license: other" in card and "type: text-classification" in card
    assert "## Framework versions" in card and "- transformers " in card and "- torch " in card

    # The token went in the Authorization header and nowhere else.
    assert all(header == f"Bearer {TOKEN}" for header in hub.auth)
    assert not any(TOKEN.encode() in body for body in hub.bodies)
    assert not any(TOKEN.encode() in content for content in pushed.values())

    folder = tmp_path / "downloaded"
    for name, content in pushed.items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_bytes(content)
    assert {p["label"] for p in pipeline("text-classification", model=str(folder))("good film", top_k=2)} == {"neg", "pos"}


def test_adapter_only_push_loads_with_peft_on_the_base(hub, lora_run, tiny_bert, tmp_path):
    from peft import PeftModel
    from transformers import AutoModelForSequenceClassification

    push_run(lora_run, "me/bert-lora-adapter", adapter_only=True, endpoint=hub.endpoint)
    pushed = hub.repos["me/bert-lora-adapter"]
    assert "adapter_config.json" in pushed and "model.safetensors" not in pushed
    card = (lora_run / "README.md").read_text()  # hftl's card, not peft's stub; the snippet names the repo
    assert pushed["README.md"].decode() == card.replace(f'model="{lora_run.name}/model"', 'model="me/bert-lora-adapter"')
    folder = tmp_path / "adapter"
    folder.mkdir()
    for name, content in pushed.items():
        (folder / name).write_bytes(content)
    base = AutoModelForSequenceClassification.from_pretrained(tiny_bert, num_labels=2)
    assert isinstance(PeftModel.from_pretrained(base, folder), PeftModel)


def test_cli_push_and_its_errors(hub, lora_run, monkeypatch):
    proc = run_cli("push", str(lora_run), "--repo-id", "me/cli-push", "--endpoint", hub.endpoint, in_process=True)
    assert "me/cli-push" in proc.stdout and TOKEN not in proc.stdout + proc.stderr
    proc = run_cli("push", str(lora_run), "--repo-id", "not a repo", "--endpoint", hub.endpoint, in_process=True, check=False)
    assert proc.returncode == 2 and "OWNER/NAME" in proc.stderr
    monkeypatch.delenv("HF_TOKEN")
    monkeypatch.setattr("huggingface_hub.get_token", lambda: None)
    proc = run_cli("push", str(lora_run), "--repo-id", "me/x", "--endpoint", hub.endpoint, in_process=True, check=False)
    assert proc.returncode == 2 and "no Hugging Face token" in proc.stderr and "HF_TOKEN" in proc.stderr


def test_push_refuses_unfinished_runs_offline_mode_and_files_holding_the_token(lora_run, tmp_path, monkeypatch):
    with pytest.raises(HftlError, match="not a finished hftl run"):
        files_to_push(tmp_path)
    with pytest.raises(HftlError, match="HF_HUB_OFFLINE"):  # the test session itself is offline
        push_run(lora_run, "me/x", token=TOKEN)
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    leaky = tmp_path / "leaky"
    import shutil

    shutil.copytree(lora_run, leaky, ignore=shutil.ignore_patterns("checkpoints", "logs"))
    (leaky / "README.md").write_text(f"token: {TOKEN}\n")
    with pytest.raises(HftlError, match="contains your Hugging Face token"):
        push_run(leaky, "me/x", token=TOKEN, endpoint="http://127.0.0.1:9")
    for bad in ("noslash", "a/b/c", "me/..", "-me/x", "me/x.git"):
        with pytest.raises(HftlError, match="OWNER/NAME"):
            check_repo_id(bad)


def test_push_to_hub_at_the_end_of_training(hub, tiny_bert, tmp_path, monkeypatch):
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "ENDPOINT", hub.endpoint)  # what HF_ENDPOINT sets at import
    config = {
        "task": "text-classification",
        "model": {"name_or_path": str(tiny_bert)},
        "data": {"train": str(write_csv(tmp_path / "d.csv", sentiment_rows(40)))},
        "train": {"epochs": 1, "batch_size": 16, "report_to": "none"},
        "push_to_hub": True,
        "hub_repo_id": "me/pushed-at-end",
        "output_dir": str(tmp_path / "run"),
    }
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(config))
    proc = run_cli("train", str(tmp_path / "c.yaml"), in_process=True)
    assert "pushed to me/pushed-at-end" in proc.stdout
    assert {"model.safetensors", "README.md", "metrics.json"} <= set(hub.repos["me/pushed-at-end"])
    refused = run_cli("train", str(tmp_path / "c.yaml"), "hub_repo_id=bad id", "overwrite=true", in_process=True, check=False)
    assert refused.returncode == 2 and "hub_repo_id" in refused.stderr and "OWNER/NAME" in refused.stderr
