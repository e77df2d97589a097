"""The frozen-prefix feature cache: cached training equals uncached training, the key tracks what changes
the features, the cache lives on disk and is reused, and it steps aside where it would not be exact."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from safetensors.torch import load_file

from hftl.utils.errors import ConfigError
from tests.audio_fixtures import one_thread  # noqa: F401 (autouse: tiny models run steadier on one thread)
from tests.conftest import run_cli
from tests.text_data import sentiment_rows, write_csv


@pytest.fixture(scope="module")
def reviews(tmp_path_factory) -> Path:
    return write_csv(tmp_path_factory.mktemp("reviews") / "reviews.csv", sentiment_rows(64))


def config(tmp_path: Path, model: Path, data: Path, task: str, **train) -> Path:
    cfg = {
        "task": task,
        "model": {"name_or_path": str(model)},
        "data": {"train": str(data), "validation_split": 0.25, "augment": False},
        "train": {"epochs": 3, "batch_size": 8, "learning_rate": 5e-3, "report_to": "none", "load_best_at_end": False, **train},
    }
    path = tmp_path / f"config-{len(list(tmp_path.glob('config-*')))}.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def train(path: Path, run_dir: Path, *overrides: str) -> dict:
    proc = run_cli("train", str(path), f"output_dir={run_dir}", *overrides, in_process=True)
    metrics = json.loads((run_dir / "metrics.json").read_text())
    metrics["stdout"] = proc.stdout
    return metrics


def trained(run_dir: Path) -> dict[str, torch.Tensor]:
    return load_file(str(run_dir / "model" / "model.safetensors"))


def assert_same_training(cached: Path, uncached: Path, atol: float = 1e-5) -> None:
    a, b = trained(cached), trained(uncached)
    assert a.keys() == b.keys()
    for name in a:
        torch.testing.assert_close(a[name], b[name], atol=atol, rtol=1e-4, msg=name)


CASES = {
    "vit-head_only": ("tiny_vit", "image", ["strategy.name=head_only"], "base-model outputs"),
    "resnet-head_only": ("tiny_resnet", "image", ["strategy.name=head_only"], "base-model outputs"),
    "vit-freeze": ("tiny_vit", "image", ["strategy.name=freeze", "strategy.trainable_blocks=1"], "hidden states entering"),
    "resnet-freeze": ("tiny_resnet", "image", ["strategy.name=freeze", "strategy.trainable_blocks=1"], "hidden states"),
    "bert-head_only": ("tiny_bert", "text", ["strategy.name=head_only"], "base-model outputs"),
    "bert-freeze": ("tiny_bert", "text", ["strategy.name=freeze", "strategy.trainable_blocks=1"], "hidden states entering"),
    # Nothing frozen: the decoded, resized and normalised images are cached instead.
    "vit-full": ("tiny_vit", "image", ["strategy.name=full"], "model inputs"),
    "resnet-lora": ("tiny_resnet", "image", ["strategy.name=lora"], "model inputs"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_cached_training_equals_uncached(case, request, digits, reviews, tmp_path, monkeypatch):
    fixture, kind, strategy, cut = CASES[case]
    monkeypatch.setenv("HFTL_FEATURE_CACHE", str(tmp_path / "cache"))
    model = request.getfixturevalue(fixture)
    task, data = ("image-classification", digits) if kind == "image" else ("text-classification", reviews)
    path = config(tmp_path, model, data, task)
    on = train(path, tmp_path / "on", *strategy, "train.feature_cache=on")
    off = train(path, tmp_path / "off", *strategy, "train.feature_cache=off")

    assert on["feature_cache"]["train"] and on["feature_cache"]["eval"] and cut in on["feature_cache"]["cut"]
    assert not off["feature_cache"]["train"] and not off["feature_cache"]["eval"]
    assert "runs on cached" in on["stdout"]
    assert_same_training(tmp_path / "on", tmp_path / "off")
    for a, b in zip(on["history"], off["history"]):
        assert a["eval_loss"] == pytest.approx(b["eval_loss"], abs=1e-4)
        assert a["eval_accuracy"] == b["eval_accuracy"]
    # Every epoch's record says how long it took (the first includes filling the cache).
    assert all(r["epoch_seconds"] > 0 for r in on["history"])


def test_cache_is_on_disk_memory_mapped_and_reused(tiny_bert, reviews, tmp_path, monkeypatch):
    from hftl.training.feature_cache import CachedSplit

    monkeypatch.setenv("HFTL_FEATURE_CACHE", str(tmp_path / "cache"))
    path = config(tmp_path, tiny_bert, reviews, "text-classification", epochs=1)
    first = train(path, tmp_path / "a", "strategy.name=head_only")
    assert not first["feature_cache"]["reused"]
    folders = sorted(p for p in (tmp_path / "cache").iterdir())
    assert len(folders) == 2  # train and validation
    split = CachedSplit(folders[0])
    record = split.batch([0, 1, 2])
    # BERT's sequence classifier reads the pooled output only: the token states are kept as shapes.
    assert isinstance(record["feature.pooler_output"], torch.Tensor) and record["feature.pooler_output"].shape == (3, 32)
    assert isinstance(record["feature.last_hidden_state"], tuple) and record["feature.last_hidden_state"][0][0] == 3
    # Stored unpadded: each example's attention mask is all ones, padded only when batched.
    masks = [split.batch([i])["input.attention_mask"] for i in range(3)]
    assert all(bool(m.all()) for m in masks)
    assert record["input.attention_mask"].shape[1] == max(m.shape[1] for m in masks)
    assert isinstance(split._arrays_of(0, "feature.pooler_output")[2], np.memmap)
    assert split.nbytes() > 0

    # Another run (another learning rate) over the same frozen backbone and data reuses it.
    second = train(path, tmp_path / "b", "strategy.name=head_only", "train.learning_rate=1e-2")
    assert second["feature_cache"]["reused"] and "reused" in second["stdout"]
    assert sorted((tmp_path / "cache").iterdir()) == folders


def test_vit_head_only_stores_the_cls_token_only(tiny_vit, digits, tmp_path, monkeypatch):
    """ViT's classifier reads the first token of the last hidden state: one position of ~17 is stored."""
    from hftl.training.feature_cache import FEATURES, FULL, CachedSplit, collate_cached
    from hftl.training.feature_cache.standins import _Feed

    monkeypatch.setenv("HFTL_FEATURE_CACHE", str(tmp_path / "cache"))
    path = config(tmp_path, tiny_vit, digits, "image-classification", epochs=1)
    train(path, tmp_path / "a", "strategy.name=head_only")
    split = CachedSplit(next(p for p in (tmp_path / "cache").iterdir() if json.loads((p / "meta.json").read_text())))
    record = split.batch([0, 1])
    tokens = record[f"feature.last_hidden_state{FULL}"][0]
    assert record["feature.last_hidden_state"].shape == (2, 1, tokens[2]) and tokens[1] > 1
    feed = _Feed()
    feed.features = collate_cached(record, "pixel_values", pass_main=False)[FEATURES]
    assert feed.tensors()["last_hidden_state"].shape == tokens  # handed to the head at full length
    # (cached and uncached head_only training on ViT are compared in test_cached_training_equals_uncached)


@pytest.mark.parametrize(
    "change",
    [
        "data.max_length=4",  # the processor's output changes
        "train.mixed_precision=bf16",  # the dtype changes
        "strategy.name=freeze",  # another cut (hidden states entering the top block)
        "data.max_train_samples=20",  # other training rows
    ],
)
def test_key_changes_with_what_changes_the_features(change, tiny_bert, reviews, tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    monkeypatch.setenv("HFTL_FEATURE_CACHE", str(cache))
    path = config(tmp_path, tiny_bert, reviews, "text-classification", epochs=1)
    train(path, tmp_path / "a", "strategy.name=head_only")
    before = {p.name for p in cache.iterdir()}
    again = train(path, tmp_path / "b", "strategy.name=head_only", change, "strategy.trainable_blocks=1")
    after = {p.name for p in cache.iterdir()}
    assert not again["feature_cache"]["reused"]
    assert after - before  # a new train split cache at least


def test_changed_weights_or_files_get_a_new_key(tiny_bert, reviews, tmp_path, monkeypatch):
    import shutil

    from transformers import AutoModelForSequenceClassification

    cache = tmp_path / "cache"
    monkeypatch.setenv("HFTL_FEATURE_CACHE", str(cache))
    model = tmp_path / "model"
    shutil.copytree(tiny_bert, model)
    path = config(tmp_path, model, reviews, "text-classification", epochs=1)
    train(path, tmp_path / "a", "strategy.name=head_only")
    n = len(list(cache.iterdir()))

    m = AutoModelForSequenceClassification.from_pretrained(model)
    with torch.no_grad():
        m.bert.encoder.layer[0].output.dense.weight.mul_(1.01)
    m.save_pretrained(model)
    assert not train(path, tmp_path / "b", "strategy.name=head_only")["feature_cache"]["reused"]
    assert len(list(cache.iterdir())) == n + 2


def test_augmentation_keeps_training_uncached_and_says_how_to_get_the_speed(tiny_vit, digits, tmp_path, monkeypatch):
    monkeypatch.setenv("HFTL_FEATURE_CACHE", str(tmp_path / "cache"))
    path = config(tmp_path, tiny_vit, digits, "image-classification", epochs=1)
    out = train(path, tmp_path / "aug", "strategy.name=head_only", "data.augment=true")
    assert out["feature_cache"]["eval"] and not out["feature_cache"]["train"]
    assert out["stdout"].count("data.augment=false") == 1


def test_dropout_in_the_frozen_part_keeps_training_uncached(tiny_bert, reviews, tmp_path, monkeypatch):
    # batch_norm=train leaves frozen parts in training mode: BERT's dropout then draws per epoch.
    monkeypatch.setenv("HFTL_FEATURE_CACHE", str(tmp_path / "cache"))
    path = config(tmp_path, tiny_bert, reviews, "text-classification", epochs=1)
    out = train(path, tmp_path / "r", "strategy.name=head_only", "strategy.batch_norm=train")
    assert out["feature_cache"]["eval"] and not out["feature_cache"]["train"]
    assert "computes differently in training" in out["stdout"]


def test_phases_switch_the_cache_and_the_export_is_the_real_model(tiny_bert, reviews, tmp_path, monkeypatch):
    from transformers import pipeline

    monkeypatch.setenv("HFTL_FEATURE_CACHE", str(tmp_path / "cache"))
    path = config(tmp_path, tiny_bert, reviews, "text-classification", epochs=2)
    hybrid = ["strategy.name=full", "strategy.head_warmup_epochs=1"]
    on = train(path, tmp_path / "on", *hybrid)
    train(path, tmp_path / "off", *hybrid, "train.feature_cache=off")
    assert "head_warmup runs on cached" in on["stdout"] and "full phase trains the lowest" in on["stdout"]
    assert_same_training(tmp_path / "on", tmp_path / "off")
    out = pipeline("text-classification", model=str(tmp_path / "on" / "model"))(["a good film"])
    assert out[0]["label"] in ("neg", "pos")


def test_on_refuses_where_nothing_is_frozen(tiny_bert, reviews, tmp_path, monkeypatch):
    monkeypatch.setenv("HFTL_FEATURE_CACHE", str(tmp_path / "cache"))
    path = config(tmp_path, tiny_bert, reviews, "text-classification", epochs=1)
    args = ["strategy.name=full", "train.feature_cache=on"]
    proc = run_cli("train", str(path), f"output_dir={tmp_path / 'x'}", *args, check=False, in_process=True)
    assert proc.returncode == 2
    assert "train.feature_cache=on" in proc.stderr and "feature_cache=auto" in proc.stderr


def test_bad_choice_is_a_config_error():
    from hftl.config import load_config

    with pytest.raises(ConfigError, match="train.feature_cache must be one of auto, on, off"):
        load_config({"model": {"name_or_path": "m"}, "data": {"train": "d"}}, ["train.feature_cache=yes"])


def test_batched_reads_pad_inputs_labels_and_features(tmp_path):
    from hftl.training.feature_cache import FEATURES, CachedSplit, collate_cached
    from hftl.training.feature_cache.store import _ShardWriter

    writer = _ShardWriter(tmp_path / "shard-0")
    for i, n in enumerate((3, 5)):
        writer.add(i, {
            "input.attention_mask": (torch.ones(n, dtype=torch.long), (n,), torch.long),
            "input.labels": (torch.arange(n) + 10 * i, (n,), torch.long),
            "input.input_ids": (None, (n,), torch.long),
            "feature.hidden": (torch.full((n, 2), float(i + 1)), (n, 2), torch.float32),
            "feature.pooler_output": (None, (2,), torch.float32),
            "feature.fixed": (torch.full((4,), float(i)), (4,), torch.float32),
        })  # fmt: skip
    writer.finish({})
    (tmp_path / "meta.json").write_text(json.dumps({"shards": ["shard-0"]}))
    split = CachedSplit(tmp_path)
    batch = collate_cached(split.batch([1, 0]), "input_ids", pass_main=True)
    assert batch["attention_mask"].tolist() == [[1, 1, 1, 1, 1], [1, 1, 1, 0, 0]]
    assert batch["labels"].tolist() == [[10, 11, 12, 13, 14], [0, 1, 2, -100, -100]]
    assert batch["input_ids"].shape == (2, 5) and batch["input_ids"].dtype == torch.int64
    hidden = batch[FEATURES]["stored"]["hidden"]
    assert hidden.shape == (2, 5, 2) and hidden[0].eq(2).all() and hidden[1, :3].eq(1).all() and hidden[1, 3:].eq(0).all()
    assert batch[FEATURES]["stored"]["fixed"].tolist() == [[1.0] * 4, [0.0] * 4]  # the one-gather path, in order
    assert batch[FEATURES]["shapes"]["pooler_output"] == ((2, 2), "float32")
    assert "input_ids" not in collate_cached(split.batch([0]), "input_ids", pass_main=False)
    # A batch whose examples happen to share a length, of a key whose lengths differ in the file.
    alone = collate_cached(split.batch([1]), "input_ids", pass_main=True)
    assert alone["labels"].tolist() == [[10, 11, 12, 13, 14]] and alone[FEATURES]["stored"]["fixed"].tolist() == [[1.0] * 4]


def _mapped_kib(path) -> int:
    """Resident KiB of this process's mappings of `path` (Linux /proc/self/smaps)."""
    total, inside = 0, False
    for line in Path("/proc/self/smaps").read_text().splitlines():
        if re.match(r"[0-9a-f]+-[0-9a-f]+ ", line):  # a mapping's header line: address range ... path
            inside = line.rstrip().endswith(str(path))
        elif inside and line.startswith("Rss:"):
            total += int(line.split()[1])
    return total


@pytest.mark.skipif(not Path("/proc/self/smaps").exists(), reason="reads /proc/self/smaps (Linux)")
def test_reading_a_cache_leaves_none_of_it_resident(tmp_path):
    from hftl.training.feature_cache.store import CachedSplit, _ShardWriter

    writer = _ShardWriter(tmp_path / "shard-0")
    for i in range(64):  # 64 examples of 256 KiB: 16 MiB on disk
        writer.add(i, {"input.pixel_values": (torch.full((64, 1024), float(i)), (64, 1024), torch.float32)})
    writer.finish({})
    (tmp_path / "meta.json").write_text(json.dumps({"shards": ["shard-0"]}))
    split = CachedSplit(tmp_path)
    for start in range(0, 64, 8):
        batch = split.batch(list(range(start, start + 8)))
        assert batch["input.pixel_values"][:, 0, 0].tolist() == [float(i) for i in range(start, start + 8)]
    path = tmp_path / "shard-0" / "input.pixel_values.bin"
    assert split._arrays[(0, "input.pixel_values")][2] is not None  # still mapped, for the next epoch
    assert _mapped_kib(path) < 1024, "pages read through the memory map stayed in the process's resident set"


def test_speech_head_only_trains_on_cached_features_and_freeze_says_why_not(tmp_path, monkeypatch):
    from tests.audio_fixtures import save_tiny_wav2vec2, write_tone_classes

    monkeypatch.setenv("HFTL_FEATURE_CACHE", str(tmp_path / "cache"))
    model = save_tiny_wav2vec2(tmp_path / "w2v")
    data = write_tone_classes(tmp_path / "tones", per_class=8)
    path = config(tmp_path, model, data, "audio-classification", epochs=2)
    # head_only: the whole frozen base runs in inference mode (no SpecAugment, no encoder dropout).
    on = train(path, tmp_path / "on", "strategy.name=head_only")
    train(path, tmp_path / "off", "strategy.name=head_only", "train.feature_cache=off")
    assert on["feature_cache"]["train"] and on["feature_cache"]["eval"]
    assert_same_training(tmp_path / "on", tmp_path / "off")
    # freeze: the top block trains while SpecAugment masks what enters it, so training stays uncached.
    frozen = train(path, tmp_path / "freeze", "strategy.name=freeze", "strategy.trainable_blocks=1")
    assert frozen["feature_cache"]["eval"] and not frozen["feature_cache"]["train"]
    assert "SpecAugment (mask_time_prob=0.05)" in frozen["stdout"]
    # full: nothing frozen, so the decoded, resampled and normalised clips are cached, stored unpadded
    # (the tones differ in length), and training equals training on clips decoded every epoch.
    full = train(path, tmp_path / "full", "strategy.name=full")
    train(path, tmp_path / "full-off", "strategy.name=full", "train.feature_cache=off")
    assert full["feature_cache"]["train"] and "model inputs" in full["feature_cache"]["cut"]
    assert_same_training(tmp_path / "full", tmp_path / "full-off")


def test_inputs_cache_steps_aside_for_augmentation_and_size(tiny_vit, digits, tmp_path, monkeypatch):
    monkeypatch.setenv("HFTL_FEATURE_CACHE", str(tmp_path / "cache"))
    path = config(tmp_path, tiny_vit, digits, "image-classification", epochs=1)
    augmented = train(path, tmp_path / "aug", "strategy.name=full", "data.augment=true")
    assert augmented["feature_cache"]["eval"] and not augmented["feature_cache"]["train"]
    assert "set data.augment=false to cache them too" in augmented["stdout"]
    capped = train(path, tmp_path / "capped", "strategy.name=full", "train.feature_cache_max_gb=0.00001")
    assert not capped["feature_cache"]["eval"] and "over half of train.feature_cache_max_gb" in capped["stdout"]


def test_torch_compile_is_passed_to_accelerate_and_turns_the_cache_off(tiny_bert, tmp_path, monkeypatch):
    from accelerate.utils import DynamoBackend

    from hftl.config import load_config
    from hftl.models.strategies import Phase
    from hftl.training.feature_cache import FeatureCache
    from hftl.training.trainer import make_accelerator

    cfg = load_config({"model": {"name_or_path": str(tiny_bert)}, "data": {"train": "d"}}, ["train.torch_compile=true"])
    accelerator = make_accelerator(cfg, tmp_path, multi_phase=False)
    assert accelerator.state.dynamo_plugin.backend == DynamoBackend.INDUCTOR
    split = type("Split", (), {"cached": None})
    data = type("Data", (), {"train": split(), "validation": split(), "test": None})()
    cache = FeatureCache(cfg, torch.nn.Linear(2, 2), None, data, accelerator)
    cache.activate(Phase("head_only", 0, 1, frozenset()))
    assert "torch_compile" in cache.status.note and not cache.status.train
    make_accelerator(load_config(cfg, ["train.torch_compile=false"]), tmp_path, multi_phase=False)


def test_a_training_engine_that_rules_the_cache_out_turns_it_off_with_its_reason(tiny_bert, tmp_path):
    from hftl.config import load_config
    from hftl.models.strategies import Phase
    from hftl.training.feature_cache import FeatureCache
    from hftl.training.trainer import make_accelerator

    split = type("Split", (), {"cached": None})
    data = type("Data", (), {"train": split(), "validation": split(), "test": None})()
    from hftl.backends import FSDPBackend

    why = FSDPBackend.feature_cache_refusal  # what the trainer passes under FSDP (and DeepSpeed)
    assert why
    for mode in ("auto", "on"):
        cfg = load_config({"model": {"name_or_path": str(tiny_bert)}, "data": {"train": "d"}}, [f"train.feature_cache={mode}"])
        cache = FeatureCache(cfg, torch.nn.Linear(2, 2), None, data, make_accelerator(cfg, tmp_path, multi_phase=False), why)
        if mode == "auto":
            cache.activate(Phase("head_only", 0, 1, frozenset()))
            assert cache.status.note == why and not cache.status.train and not cache.status.eval
        else:
            with pytest.raises(ConfigError, match=f"train.feature_cache=on, but {why}"):
                cache.activate(Phase("head_only", 0, 1, frozenset()))


def test_feature_cache_modules_import_one_way():
    """Each module of the package imports only those before it here; none asks which engine trains, and the
    data path does not import the cache (it owns the batch key, FEATURES)."""
    import ast

    import hftl

    order = ["folder", "cut", "key", "store", "standins", "checks", "cache", "__init__"]
    root = Path(hftl.__file__).parent / "training"

    def hftl_imports(path: Path) -> set[str]:
        tree = ast.parse(path.read_text())
        names = {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
        names |= {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module}
        return {name for name in names if name.startswith("hftl")}

    assert {p.stem for p in (root / "feature_cache").glob("*.py")} == set(order)
    for i, name in enumerate(order):
        imported = hftl_imports(root / "feature_cache" / f"{name}.py")
        inside = {
            m.removeprefix("hftl.training.feature_cache.") for m in imported if m.startswith("hftl.training.feature_cache.")
        }
        assert inside <= set(order[:i]), f"feature_cache/{name}.py imports {inside - set(order[:i])}"
        assert not {m for m in imported if m in ("hftl.sharding", "hftl.training.trainer", "hftl.training.feature_cache")}, name
    assert not {m for m in hftl_imports(root.parent / "data" / "sources.py") if m.startswith("hftl.training.feature_cache")}


def test_cache_folder_is_listed_capped_least_recently_used_first_and_cleared(tiny_bert, reviews, tmp_path, monkeypatch):
    import os
    import time

    from hftl.training.feature_cache.folder import entries

    cache = tmp_path / "cache"
    monkeypatch.setenv("HFTL_FEATURE_CACHE", str(cache))
    path = config(tmp_path, tiny_bert, reviews, "text-classification", epochs=1)
    train(path, tmp_path / "a", "strategy.name=head_only", "data.max_length=16")
    old = {e.path for e in entries(cache)}
    assert len(old) == 2 and {e.split for e in entries(cache)} == {"train", "validation"}
    assert all(e.model == str(tiny_bert) and e.examples > 0 and e.size_bytes > 0 for e in entries(cache))
    listing = run_cli("cache", "list", in_process=True).stdout
    assert "2 entries" in listing and "train" in listing and "validation" in listing

    day_ago = time.time() - 86_400
    for folder in old:  # last used a day ago: idle, so a capped run may prune them
        os.utime(folder / "meta.json", (day_ago, day_ago))
    crashed = cache / ".0123abcd.partial-1-2"  # a fill a crash left behind a day ago
    (crashed / "shard-0").mkdir(parents=True)
    (crashed / "shard-0" / "input.bin").write_bytes(b"x" * 100)
    os.utime(crashed / "shard-0" / "input.bin", (day_ago, day_ago))
    writing = cache / ".4567ef.partial-3-4"  # a fill writing right now: never deleted
    (writing / "shard-0").mkdir(parents=True)
    (writing / "shard-0" / "input.bin").write_bytes(b"x" * 100)

    # A new key (another max_length), capped at 1 KB: the idle old entries go, its own two stay.
    second = train(path, tmp_path / "b", "strategy.name=head_only", "data.max_length=12", "train.feature_cache_max_gb=0.000001")
    assert "least recently used entries" in second["stdout"]
    left = {e.path for e in entries(cache)}
    assert not (left & old) and not crashed.exists() and writing.exists()
    assert len([e for e in entries(cache) if not e.partial]) == 2  # over the cap, but in use by the run

    # Reusing an entry records its use; the default cap (50 GB) removes nothing.
    before = {e.path: e.last_used for e in entries(cache) if not e.partial}
    time.sleep(0.05)
    train(path, tmp_path / "c", "strategy.name=head_only", "data.max_length=12")
    assert all(e.last_used > before[e.path] for e in entries(cache) if not e.partial)

    out = run_cli("cache", "clear", in_process=True).stdout
    assert "removed 2 entries" in out and [e.path for e in entries(cache)] == [writing]
    assert run_cli("train", str(path), "train.feature_cache_max_gb=-1", check=False, in_process=True).returncode == 2
