"""Push a finished run to the Hugging Face Hub: the pipeline-ready model, its card and metrics.

Only an explicit list of files leaves the machine: `model/` (or `adapter/` with `adapter_only`) at
the repo root, so `pipeline(task, model=repo_id)` loads it, plus README.md (the model card with
`model-index`), metrics.json and the resolved config. Checkpoints, optimizer state and logs stay.
The token comes from `HF_TOKEN` or the saved login (`hf auth login`); it is sent in the request
header only, never written anywhere, and a file that contains it is refused.

Example:
    >>> push_run("runs/bert-lora", "me/bert-lora-reviews", private=True)  # doctest: +SKIP
    'https://huggingface.co/me/bert-lora-reviews/commit/...'
"""

from __future__ import annotations

import re
from pathlib import Path

from hftl.config import check_repo_id
from hftl.run_folder.layout import ADAPTER_DIR, CARD_FILE, CONFIG_FILE, METRICS_FILE, MODEL_DIR, is_finished
from hftl.utils.errors import HftlError

OFFLINE = "HF_HUB_OFFLINE=1 is set, which blocks pushing; unset it to push"
# Run-folder files that describe the model; everything else (checkpoints, logs) is not pushed.
RUN_FILES = {CARD_FILE: "README.md", METRICS_FILE: METRICS_FILE, CONFIG_FILE: "hftl_config.yaml"}


def files_to_push(run_dir: str | Path, adapter_only: bool = False) -> list[tuple[Path, str]]:
    """(local file, path in the repo) for every file a push uploads."""
    run_dir = Path(run_dir)
    if not is_finished(run_dir) or not (run_dir / MODEL_DIR).is_dir():
        raise HftlError(f"{run_dir} is not a finished hftl run (no metrics.json or model/); only finished runs are pushed")
    source = run_dir / (ADAPTER_DIR if adapter_only else MODEL_DIR)
    if not source.is_dir():
        raise HftlError(f"{run_dir} has no adapter/ (not a LoRA run); push the model without --adapter-only")
    by_target = {p.relative_to(source).as_posix(): p for p in sorted(source.rglob("*")) if p.is_file()}
    # The run's card replaces any README the folder has (peft writes a stub one into adapter/).
    by_target.update({target: run_dir / name for name, target in RUN_FILES.items() if (run_dir / name).is_file()})
    return [(path, target) for target, path in by_target.items()]


def _pushed_content(path: Path, target: str, repo_id: str) -> str | bytes:
    """What is uploaded for `path`: the file itself, but the card's usage snippet names the repo, not the run folder."""
    if target != "README.md" or path.name != CARD_FILE:
        return str(path)
    text = path.read_text()
    return re.sub(r'(pipeline\("[^"]+", model=)"[^"]*"', lambda m: f'{m.group(1)}"{repo_id}"', text).encode()


def resolve_token(token: str | None) -> str:
    """`token`, else HF_TOKEN or the saved login; refused clearly when there is none."""
    from huggingface_hub import get_token

    token = token or get_token()
    if not token:
        raise HftlError("no Hugging Face token found: set HF_TOKEN, or run `hf auth login` once (it saves one)")
    return token


def refuse_secrets(files: list[tuple[Path, str]], token: str) -> None:
    """Refuse before uploading anything when a file holds the token."""
    needle = token.encode()
    for path, _ in files:
        if needle in path.read_bytes():
            raise HftlError(f"{path} contains your Hugging Face token; remove it before pushing (nothing was uploaded)")


def push_run(
    run_dir: str | Path,
    repo_id: str,
    private: bool = False,
    adapter_only: bool = False,
    token: str | None = None,
    endpoint: str | None = None,
    commit_message: str | None = None,
) -> str:
    """Create `repo_id` if needed and upload the run in one commit; returns the commit URL."""
    from huggingface_hub import CommitOperationAdd, HfApi, constants
    from huggingface_hub.errors import HfHubHTTPError, OfflineModeIsEnabled

    check_repo_id(repo_id)
    files = files_to_push(run_dir, adapter_only)
    if constants.HF_HUB_OFFLINE:
        raise HftlError(OFFLINE)
    secret = resolve_token(token)
    refuse_secrets(files, secret)
    contents = {target: _pushed_content(path, target, repo_id) for path, target in files}
    api = HfApi(endpoint=endpoint, token=secret)
    what = "adapter" if adapter_only else "model"
    try:
        api.create_repo(repo_id, private=private, exist_ok=True)
        info = api.create_commit(
            repo_id,
            operations=[CommitOperationAdd(path_in_repo=target, path_or_fileobj=contents[target]) for _, target in files],
            commit_message=commit_message or f"Upload {what} fine-tuned with hftl ({Path(run_dir).name})",
        )
    except (OfflineModeIsEnabled, HfHubHTTPError) as e:
        raise hub_error(e, repo_id) from None
    return str(info.commit_url)


def hub_error(e: Exception, repo_id: str) -> HftlError:
    """A failed Hub call as an error users can act on (offline mode, a bad or read-only token)."""
    from huggingface_hub.errors import OfflineModeIsEnabled

    if isinstance(e, OfflineModeIsEnabled):
        return HftlError(OFFLINE)
    status = getattr(getattr(e, "response", None), "status_code", None)
    hint = {401: "the token is invalid or expired", 403: f"the token cannot write to {repo_id}"}.get(status, "")
    why = f"{status}: {hint}" if hint else str(status)
    return HftlError(f"pushing to {repo_id} failed ({why}): {str(e).splitlines()[0][:200]}")
