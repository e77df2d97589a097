"""`hftl push RUN --space OWNER/NAME`: a Gradio Space that loads the run's model repo and serves the `hftl app` page.

The Space holds four files: `app.py` (`hftl/runs/space_app.py` as it is: standalone, since hftl is not on PyPI
for the Space to install), `space.json` (the model repo id, the pipeline task, text pairs, the card's
essentials), `requirements.txt` (what app.py imports, pinned to the versions installed here) and `README.md`
(the Space metadata: gradio SDK at the installed version, the model repo it uses). The token is used as in
`hub.push_run`: in the request header only, never written, and a file holding it is refused.

Example:
    >>> write_space("runs/bert-lora", "space", "me/bert-lora")   # doctest: +SKIP
    >>> push_space("runs/bert-lora", "me/bert-lora-demo", "me/bert-lora")   # doctest: +SKIP
    'https://huggingface.co/spaces/me/bert-lora-demo/commit/...'
"""

from __future__ import annotations

import json
import tempfile
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

from hftl.config import check_repo_id
from hftl.run_folder.layout import load_run, read_metrics
from hftl.runs.hub import OFFLINE, files_to_push, hub_error, refuse_secrets, resolve_token
from hftl.utils.errors import HftlError

TEMPLATE = Path(__file__).with_name("space_app.py")
SPACE_FILES = ("app.py", "space.json", "requirements.txt", "README.md")
# What app.py imports for each pipeline task, beyond transformers and torch (gradio comes from the SDK).
EXTRA_IMPORTS = {
    "image-classification": ("pillow", "torchvision"),  # transformers 5 image processors run on torchvision
    "audio-classification": ("numpy", "soundfile", "soxr"),
    "automatic-speech-recognition": ("numpy", "soundfile", "soxr"),
}
EMOJI = {"image-classification": "🖼️", "audio-classification": "🔊", "automatic-speech-recognition": "🎙️"}


def _pin(name: str) -> str:
    """`name==version` as installed here; a local build tag (`2.4.0+cpu`) is dropped: PyPI has no such file."""
    try:
        return f"{name}=={version(name).split('+')[0]}"
    except PackageNotFoundError:
        raise HftlError(f"a Space for this run needs {name}, which is not installed here: pip install {name}") from None


def requirements(task: str) -> str:
    """requirements.txt for a Space serving a `task` pipeline, pinned to the versions installed here.

    gradio is left out: a Space installs the version its README's `sdk_version` names.

    Example:
        >>> requirements("text-classification").splitlines()[0].startswith("transformers==")
        True
    """
    return "\n".join(_pin(name) for name in ("transformers", "torch", *EXTRA_IMPORTS.get(task, ()))) + "\n"


def space_settings(run_dir: str | Path, model_repo: str) -> dict[str, Any]:
    """What app.py reads from `space.json`: the model repo, its pipeline task and label problem, text pairs, the card."""
    from hftl.data.modalities import get_modality
    from hftl.runs.app import card_markdown

    cfg, model_dir = load_run(run_dir)
    config = json.loads((Path(model_dir) / "config.json").read_text())
    modality = get_modality(cfg.task, cfg, str(model_dir))
    link = f"\n\nModel: [{model_repo}](https://huggingface.co/{model_repo}), fine-tuned with hftl."
    return {
        "model": model_repo,
        "task": modality.pipeline_task,
        "problem": config.get("problem_type") if modality.label_shapes else None,
        "text_pair": bool(getattr(cfg.data, "text_pair_column", None)),
        "title": f"hftl: {model_repo}",
        "card": card_markdown(run_dir) + link,
    }


def space_readme(run_dir: str | Path, space_id: str, settings: dict[str, Any]) -> str:
    """README.md with the Space metadata (gradio SDK at the installed version, the model repo) and the card's essentials.

    Example:
        >>> space_readme("runs/bert-lora", "me/demo", space_settings("runs/bert-lora", "me/bert-lora"))[:4]  # doctest: +SKIP
        '---\\ntitle'
    """
    import yaml

    metrics = read_metrics(run_dir)
    strategy = metrics.get("strategy") or {}
    name = strategy.get("name", "?") if isinstance(strategy, dict) else str(strategy)
    meta = {
        "title": space_id.split("/")[1][:30],
        "emoji": EMOJI.get(settings["task"], "📝"),
        "colorFrom": "indigo",
        "colorTo": "green",
        "sdk": "gradio",
        "sdk_version": _gradio_version(),
        "app_file": "app.py",
        "pinned": False,
        "models": [settings["model"]],
        "short_description": f"{metrics.get('task', '?')}, fine-tuned with hftl ({name})"[:60],
    }
    head = yaml.safe_dump(meta, sort_keys=False, allow_unicode=True)
    return f"---\n{head}---\n\n{settings['card']}\n"


def _gradio_version() -> str:
    """The Space runs the gradio installed here, the one this page was written and tested against."""
    try:
        return version("gradio").split("+")[0]
    except PackageNotFoundError:
        raise HftlError('a Space names the gradio version it runs; install gradio here first: pip install "hftl[app]"') from None


def write_space(run_dir: str | Path, folder: str | Path, model_repo: str, space_id: str | None = None) -> Path:
    """Write the Space's files for `run_dir` into `folder` (created); the Space loads `model_repo` from the Hub.

    Example:
        >>> sorted(p.name for p in write_space("runs/bert-lora", "space", "me/bert-lora").iterdir())  # doctest: +SKIP
        ['README.md', 'app.py', 'requirements.txt', 'space.json']
    """
    check_repo_id(model_repo)
    space_id = space_id or model_repo
    files_to_push(run_dir)  # the push's own refusal of a run that is not finished or has no model/
    settings = space_settings(run_dir, model_repo)
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "app.py").write_text(TEMPLATE.read_text())
    (folder / "space.json").write_text(json.dumps(settings, indent=2, ensure_ascii=False) + "\n")
    (folder / "requirements.txt").write_text(requirements(settings["task"]))
    (folder / "README.md").write_text(space_readme(run_dir, space_id, settings))
    return folder


def push_space(
    run_dir: str | Path,
    space_id: str,
    model_repo: str,
    private: bool = False,
    token: str | None = None,
    endpoint: str | None = None,
) -> str:
    """Create the gradio Space `space_id` if needed and upload its files in one commit; returns the commit URL.

    The model repo is not pushed here (`hub.push_run` does that); the Space loads it by id when it starts.

    Example:
        >>> push_space("runs/bert-lora", "me/bert-lora-demo", "me/bert-lora")   # doctest: +SKIP
    """
    from huggingface_hub import HfApi, constants
    from huggingface_hub.errors import HfHubHTTPError, OfflineModeIsEnabled

    check_repo_id(space_id)
    files_to_push(run_dir)  # refuse a run that is not finished (or has no model/) before asking for a token
    if constants.HF_HUB_OFFLINE:
        raise HftlError(OFFLINE)
    secret = resolve_token(token)
    with tempfile.TemporaryDirectory(prefix="hftl-space-") as tmp:
        folder = write_space(run_dir, tmp, model_repo, space_id)
        refuse_secrets([(folder / name, name) for name in SPACE_FILES], secret)
        api = HfApi(endpoint=endpoint, token=secret)
        try:
            api.create_repo(space_id, repo_type="space", space_sdk="gradio", private=private, exist_ok=True)
            info = api.upload_folder(
                repo_id=space_id,
                repo_type="space",
                folder_path=folder,
                commit_message=f"Space for {model_repo}, written by hftl ({Path(run_dir).name})",
            )
        except (OfflineModeIsEnabled, HfHubHTTPError) as e:
            raise hub_error(e, space_id) from None
    return str(info.commit_url)
