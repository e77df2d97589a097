"""The plain Hugging Face way: `transformers.Trainer` (and `peft` for LoRA), written as a user would.

Same model folder, data files, batch size, epochs, learning rate, precision and dataloader workers as the
hftl side; the same parameters frozen, set by hand from the architecture's module names:

- head_only: `requires_grad=False` on the whole base model (`model.base_model`): only the new head trains.
- freeze: the same, then the top N blocks and what follows them inside the base model (final norm, pooler)
  train again.
- full: everything trains.
- lora: `peft.get_peft_model` with the same r / alpha / dropout, the attention query and value projections
  (every non-depthwise convolution in the blocks of a CNN), and the head in `modules_to_save`.

Speech models keep the convolutional feature encoder frozen in every strategy (`freeze_feature_encoder()`,
as transformers' audio-classification example does, and as hftl does). One evaluation per epoch, no
checkpoints (`save_strategy="no"`), no trackers (`report_to="none"`), dynamic padding for text, accuracy
computed as the task guides do (an `evaluate` accuracy module, scikit-learn underneath).

Example:
    >>> result = run_trainer(settings_dict, Path("runs/bench/trainer"))   # doctest: +SKIP
    >>> result["epoch_seconds"], result["accuracy"]                       # doctest: +SKIP
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from transformers import TrainerCallback

from benchmarks.measure import peak_rss_mb, sync

# Module names, as `print(model)` shows them, of each architecture's block list and of what follows the
# blocks inside the base model. Several spellings where transformers versions differ (ViT's `layers` in 5.2x).
BLOCKS = {
    "vit": ("vit.layers", "vit.encoder.layer"),
    "resnet": ("resnet.encoder.stages",),
    "bert": ("bert.encoder.layer",),
    "wav2vec2": ("wav2vec2.encoder.layers",),
    "efficientnet": ("efficientnet.encoder.blocks",),
}
AFTER_BLOCKS = {
    "vit": ("vit.layernorm", "vit.pooler"),
    "resnet": ("resnet.pooler",),
    "bert": ("bert.pooler",),
    "wav2vec2": (),
    "efficientnet": ("efficientnet.encoder.top_conv", "efficientnet.encoder.top_bn"),
}
ATTENTION_QV = ("query", "value", "q_proj", "v_proj")


class EpochTimer(TrainerCallback):
    """Wall time of each epoch's training steps (on_epoch_end fires before the epoch's evaluation), and the
    process's peak RSS when training ends."""

    def __init__(self) -> None:
        self.seconds: list[float] = []
        self._start = 0.0
        self.training_peak_mb: float | None = None

    def on_epoch_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        sync()
        self._start = time.perf_counter()

    def on_epoch_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        sync()
        self.seconds.append(time.perf_counter() - self._start)

    def on_train_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self.training_peak_mb = peak_rss_mb()


def _get(model: nn.Module, names: tuple[str, ...]) -> list[nn.Module]:
    found = []
    for name in names:
        try:
            found.append(model.get_submodule(name))
        except AttributeError:
            continue
    return found


def head_names(model: nn.Module) -> list[str]:
    """Top-level modules outside the base model that hold weights: the task head."""
    base = model.base_model
    return [n for n, m in model.named_children() if m is not base and any(True for _ in m.parameters())]


def lora_targets(model: nn.Module, model_type: str) -> list[str] | str:
    """Attention query/value projections; for CNNs every non-depthwise convolution inside the blocks."""
    names = {n.rsplit(".", 1)[-1] for n, m in model.named_modules() if isinstance(m, nn.Linear)}
    qv = [t for t in ATTENTION_QV if t in names]
    if qv and model_type in ("vit", "bert", "wav2vec2"):
        # BERT names them query/value, ViT and wav2vec2 q_proj/v_proj in transformers 5.
        return qv
    blocks = BLOCKS[model_type][0]
    return [n for n, m in model.named_modules() if n.startswith(blocks + ".") and isinstance(m, nn.Conv2d) and m.groups == 1]


def apply_strategy(model: nn.Module, s: dict[str, Any]) -> nn.Module:
    """Freeze or wrap `model` for the strategy, by hand (see the module docstring)."""
    model_type = model.config.model_type
    strategy = s["strategy"]
    if strategy in ("head_only", "freeze"):
        for p in model.base_model.parameters():
            p.requires_grad = False
    if strategy == "freeze" and s["trainable_blocks"]:
        (blocks,) = _get(model, BLOCKS[model_type])[:1]
        for module in [*list(blocks)[-s["trainable_blocks"] :], *_get(model, AFTER_BLOCKS[model_type])]:
            for p in module.parameters():
                p.requires_grad = True
    if hasattr(model, "freeze_feature_encoder"):
        model.freeze_feature_encoder()
    if strategy == "lora":
        from peft import LoraConfig, get_peft_model

        lora = s["lora"]
        config = LoraConfig(
            r=lora["r"],
            lora_alpha=lora["alpha"],
            lora_dropout=lora["dropout"],
            target_modules=lora_targets(model, model_type),
            modules_to_save=head_names(model),
            bias="none",
        )
        model = get_peft_model(model, config)
    return model


# -- data, one function per modality: (train dataset, validation dataset, collator, label names) -------------


def _label_ids(ds: Any, names: list[str]) -> Any:
    """String labels -> ids in a new `labels` column (a column keeps its type when `map` rewrites it)."""
    ids = {n: i for i, n in enumerate(names)}
    return ds.map(lambda b: {"labels": [ids[v] for v in b["label"]]}, batched=True, remove_columns=["label"])


def image_data(s: dict[str, Any], processor: Any) -> tuple[Any, Any, Any, list[str]]:
    """imagefolder -> the checkpoint's image processor per batch (as transformers' image-classification docs)."""
    from datasets import load_dataset

    ds = load_dataset("imagefolder", data_dir=s["data_root"])
    names = ds["train"].features["label"].names

    def transform(batch: dict[str, list]) -> dict[str, Any]:
        pixels = processor(images=[im.convert("RGB") for im in batch["image"]], return_tensors="pt")["pixel_values"]
        return {"pixel_values": pixels, "labels": batch["label"]}

    def collate(rows: list[dict]) -> dict[str, torch.Tensor]:
        return {
            "pixel_values": torch.stack([r["pixel_values"] for r in rows]),
            "labels": torch.tensor([r["labels"] for r in rows]),
        }

    return ds["train"].with_transform(transform), ds["validation"].with_transform(transform), collate, names


def text_data(s: dict[str, Any], tokenizer: Any) -> tuple[Any, Any, Any, list[str]]:
    """csv -> tokenized once with `map` (truncation only), padded per batch by DataCollatorWithPadding."""
    from datasets import load_dataset
    from transformers import DataCollatorWithPadding

    ds = load_dataset("csv", data_files={"train": s["train"], "validation": s["validation"]})
    names = sorted(set(ds["train"]["label"]))
    ds = _label_ids(ds, names)
    tokenize = lambda b: tokenizer(b["text"], truncation=True, max_length=s["max_length"])  # noqa: E731
    ds = ds.map(tokenize, batched=True, remove_columns=["text"])
    return ds["train"], ds["validation"], DataCollatorWithPadding(tokenizer), names


def audio_data(s: dict[str, Any], extractor: Any) -> tuple[Any, Any, Any, list[str]]:
    """csv of wav paths -> decoded per access with soundfile (datasets' torchcodec decoding is not
    installable everywhere), batched by the feature extractor with padding to the longest clip."""
    import soundfile as sf
    from datasets import load_dataset

    root = Path(s["data_root"])
    ds = load_dataset("csv", data_files={"train": s["train"], "validation": s["validation"]})
    names = sorted(set(ds["train"]["label"]))
    ds = _label_ids(ds, names)
    max_samples = int(s["max_duration"] * extractor.sampling_rate)

    def transform(batch: dict[str, list]) -> dict[str, Any]:
        audio = []
        for path in batch["audio"]:
            x, rate = sf.read(root / path, dtype="float32")
            if rate != extractor.sampling_rate:
                raise ValueError(f"{path}: {rate} Hz, the feature extractor wants {extractor.sampling_rate}")
            audio.append(x if x.ndim == 1 else x.mean(axis=1))
        return {"audio": audio, "labels": batch["labels"]}

    def collate(rows: list[dict]) -> dict[str, torch.Tensor]:
        batch = extractor(
            [r["audio"] for r in rows],
            sampling_rate=extractor.sampling_rate,
            padding=True,
            max_length=max_samples,
            truncation=True,
            return_tensors="pt",
        )
        batch["labels"] = torch.tensor([r["labels"] for r in rows])
        return dict(batch)

    return ds["train"].with_transform(transform), ds["validation"].with_transform(transform), collate, names


def _load(s: dict[str, Any]) -> tuple[Any, Any, Any, Any, list[str]]:
    """Processor, model class and data of the task."""
    import transformers as tf

    folder = s["model_dir"]
    if s["task"] == "image-classification":
        processor = tf.AutoImageProcessor.from_pretrained(folder)
        return processor, tf.AutoModelForImageClassification, *image_data(s, processor)
    if s["task"] == "text-classification":
        tokenizer = tf.AutoTokenizer.from_pretrained(folder)
        return tokenizer, tf.AutoModelForSequenceClassification, *text_data(s, tokenizer)
    if s["task"] == "audio-classification":
        extractor = tf.AutoFeatureExtractor.from_pretrained(folder)
        return extractor, tf.AutoModelForAudioClassification, *audio_data(s, extractor)
    raise ValueError(f"no Trainer baseline for task {s['task']!r}")


def load_accuracy() -> Any:
    """The task guides' `evaluate.load("accuracy")`, offline.

    `evaluate.load` downloads the Hub's accuracy script, an `evaluate.Metric` that returns scikit-learn's
    `accuracy_score`; with no Hub access the same module is defined here, so this side imports and runs
    what a user following the guides does (evaluate, scikit-learn), not a numpy shortcut.
    """
    import datasets
    import evaluate
    from sklearn.metrics import accuracy_score

    class Accuracy(evaluate.Metric):
        def _info(self) -> evaluate.MetricInfo:
            return evaluate.MetricInfo(
                description="Accuracy: the fraction of correct predictions (scikit-learn's accuracy_score).",
                citation="",
                inputs_description="predictions and references: class ids.",
                features=datasets.Features({"predictions": datasets.Value("int32"), "references": datasets.Value("int32")}),
            )

        def _compute(self, predictions: list[int], references: list[int]) -> dict[str, float]:
            return {"accuracy": float(accuracy_score(references, predictions))}

    return Accuracy()


def metrics_function() -> Any:
    """`compute_metrics` as the task guides write it: argmax of the logits, then the accuracy module."""
    accuracy = load_accuracy()

    def compute_metrics(eval_pred: Any) -> dict[str, float]:
        predictions, labels = eval_pred
        predictions = predictions[0] if isinstance(predictions, tuple) else predictions
        return accuracy.compute(predictions=np.argmax(predictions, axis=-1), references=labels)

    return compute_metrics


def run_trainer(s: dict[str, Any], out_dir: Path) -> dict[str, Any]:
    """Train one case with `transformers.Trainer`; epoch times, final accuracy and parameter counts."""
    from transformers import Trainer, TrainingArguments, set_seed

    set_seed(s["seed"])
    processor, model_class, train, validation, collate, names = _load(s)
    extra = {"pad_token_id": processor.pad_token_id} if s["task"] == "text-classification" else {}
    set_seed(s["seed"])
    model = model_class.from_pretrained(
        s["model_dir"],
        num_labels=len(names),
        id2label=dict(enumerate(names)),
        label2id={n: i for i, n in enumerate(names)},
        ignore_mismatched_sizes=True,  # a checkpoint with another head (Lite0's ImageNet classes) gets a new one
        **extra,
    )
    model = apply_strategy(model, s)
    args = TrainingArguments(
        output_dir=str(out_dir),
        num_train_epochs=s["epochs"],
        per_device_train_batch_size=s["batch_size"],
        per_device_eval_batch_size=s["batch_size"],
        learning_rate=s["learning_rate"],
        weight_decay=s["weight_decay"],
        max_grad_norm=s["max_grad_norm"],
        lr_scheduler_type="linear",
        eval_strategy="epoch",
        save_strategy="no",
        logging_steps=s["logging_steps"],
        report_to="none",
        seed=s["seed"],
        bf16=s["mixed_precision"] == "bf16",
        fp16=s["mixed_precision"] == "fp16",
        dataloader_num_workers=s["num_workers"],
        remove_unused_columns=s["task"] == "text-classification",  # image/audio transforms read raw columns
    )
    timer = EpochTimer()
    trainer = Trainer(
        model=model,
        args=args,
        train_dataset=train,
        eval_dataset=validation,
        data_collator=collate,
        compute_metrics=metrics_function(),
        callbacks=[timer],
    )
    trainer.train()
    evals = [e for e in trainer.state.log_history if "eval_accuracy" in e]
    params = list(model.parameters())
    return {
        "epoch_seconds": timer.seconds,
        "epoch_source": "TrainerCallback (on_epoch_begin .. on_epoch_end)",
        "accuracy": evals[-1]["eval_accuracy"],
        "accuracy_per_epoch": [e["eval_accuracy"] for e in evals],
        "train_examples": len(train),
        "validation_examples": len(validation),
        "trainable_parameters": sum(p.numel() for p in params if p.requires_grad),
        "optimizer": str(args.optim),
        "peak_rss_training_mb": timer.training_peak_mb,
    }
