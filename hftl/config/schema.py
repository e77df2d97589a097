"""The config's shape: the dataclasses that mirror the YAML, and the names and choices they allow.

Every field carries `metadata={"help": ..., "choices": ...}`: the help is what `hftl` shows, the
choices are what `checks.validate` enforces. Nothing here imports torch.

Example:
    >>> Config().train.epochs
    3
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

TASKS = ("image-classification", "text-classification", "token-classification", "audio-classification", "speech-recognition")
STRATEGIES = ("head_only", "freeze", "full", "lora", "scratch")
# Domain adaptation (adapt.method): how unlabelled target-domain data (data.target) is used.
ADAPT_METHODS = ("none", "adabn", "coral", "dann", "self_training", "pretrain")
_CLASSIFICATION_METRICS = ("f1", "accuracy", "precision", "recall", "loss")
PROBLEMS = ("auto", "single_label", "multi_label", "regression")
# Validation metrics of the label shapes other than single-label (image, text and audio classification);
# the first is the default train.metric_for_best. f1, precision and recall are macro averages.
PROBLEM_METRICS = {
    "multi_label": ("f1", "micro_f1", "precision", "recall", "mean_average_precision", "exact_match", "loss"),
    "regression": ("rmse", "mae", "r2", "pearson", "spearman", "loss"),
}
CLASSIFICATION_TASKS = ("image-classification", "text-classification", "audio-classification")
# Validation metrics per task; the first is the default train.metric_for_best.
TASK_METRICS = {
    "image-classification": _CLASSIFICATION_METRICS,
    "text-classification": _CLASSIFICATION_METRICS,
    "audio-classification": _CLASSIFICATION_METRICS,
    "token-classification": ("f1", "precision", "recall", "accuracy", "loss"),  # entity-level (seqeval)
    "speech-recognition": ("wer", "cer", "loss"),
}
# transformers.pipeline task names, where they differ from hftl's.
PIPELINE_TASKS = {"speech-recognition": "automatic-speech-recognition"}
LOWER_IS_BETTER = frozenset({"loss", "wer", "cer", "rmse", "mae"})
# Experiment trackers Accelerate supports (its LoggerType, less "all"); train.report_to takes any of them.
TRACKERS = ("tensorboard", "wandb", "mlflow", "comet_ml", "aim", "clearml", "dvclive", "swanlab", "trackio")
# Modality-flavoured names for the generic data keys, accepted in YAML and overrides.
KEY_ALIASES = {
    "data.text_column": "data.input_column",
    "data.tokens_column": "data.input_column",
    "data.audio_column": "data.input_column",
    "data.tags_column": "data.label_column",
    "data.transcript_column": "data.label_column",
}
# Aliases whose meaning follows the task: in speech recognition the text is the transcript, as the
# transformers speech examples' `text_column_name` is.
TASK_KEY_ALIASES = {("speech-recognition", "data.text_column"): "data.label_column"}

# Top-level keys that take a bare value for their section's main field: `strategy=lora`, `model=DIR`.
_SECTION_SHORTHAND = {"strategy": "name", "model": "name_or_path"}
# Run-control keys that do not change what is trained (ignored when comparing a resumed config).
# Keys that do not change what a run computes (the feature cache reproduces uncached training), so a
# different value neither blocks resume nor the reuse of a finished run in a study.
RUN_CONTROL_KEYS = (
    "resume", "overwrite", "push_to_hub", "hub_repo_id", "hub_private", "license", "train.feature_cache",
    "train.feature_cache_dir", "train.feature_cache_max_gb", "train.on_nonfinite",
)  # fmt: skip


def _help(text: str, choices: tuple[str, ...] | None = None) -> dict[str, Any]:
    return {"help": text, "choices": choices}


@dataclass
class ModelConfig:
    name_or_path: str = field(default="", metadata=_help("Hub id or local directory of the checkpoint."))
    revision: str | None = field(default=None, metadata=_help("Hub revision (branch, tag or commit)."))
    trust_remote_code: bool = field(
        default=False, metadata=_help("Run model code shipped with the checkpoint. Off unless you trust it.")
    )
    blocks: str | None = field(
        default=None,
        metadata=_help("Dotted path of the backbone's block list (e.g. 'encoder.layer'); found automatically."),
    )
    window_seconds: int | None = field(
        default=None,
        metadata=_help(
            "Shorten a fixed-window audio encoder (Whisper: 30 s) to this many whole seconds: about 10x cheaper at 3 s. "
            "Clips must fit; null keeps the checkpoint's window."
        ),
    )


@dataclass
class DataConfig:
    train: str | None = field(default=None, metadata=_help("imagefolder dir, csv/json/jsonl/parquet file or Hub id."))
    validation: str | None = field(default=None, metadata=_help("Validation data; split off train when null."))
    test: str | None = field(default=None, metadata=_help("Optional held-out test data, evaluated once at the end."))
    target: str | None = field(
        default=None,
        metadata=_help(
            "Domain adaptation: target-domain inputs (folder, csv or Hub id, same modality as data.train); labels in it "
            "are never read. adapt.method says how it is used."
        ),
    )
    target_test: str | None = field(
        default=None,
        metadata=_help(
            "Labelled target-domain data, evaluated once at the end: metrics.json's target_test, the headline beside "
            "source validation."
        ),
    )
    validation_split: float = field(default=0.1, metadata=_help("Fraction of train held out (stratified)."))
    dataset_config: str | None = field(
        default=None, metadata=_help("Hub dataset (or dataset-repo folder): the config (subset) to load, e.g. sst2 of glue.")
    )
    revision: str | None = field(default=None, metadata=_help("Hub dataset: the revision (branch, tag or commit)."))
    train_split: str | None = field(
        default=None,
        metadata=_help("Split of data.train to train on (default: train); a slice works too, e.g. train[:90%]."),
    )
    validation_split_name: str | None = field(
        default=None,
        metadata=_help(
            "Split of data.train to validate on (default: validation, valid or val), e.g. validation_matched or train[90%:]."
        ),
    )
    test_split: str | None = field(default=None, metadata=_help("Split of data.train to test on (default: test)."))
    input_column: str | None = field(
        default=None,
        metadata=_help(
            "Column with the inputs (alias text_column / tokens_column / audio_column; speech-recognition: audio_column); "
            "auto-detected when null."
        ),
    )
    label_column: str | list[str] | None = field(
        default=None,
        metadata=_help(
            "Column with the labels, tags or transcripts (alias tags_column / transcript_column, and text_column for "
            "speech-recognition); auto when null. "
            "Regression: one column, or a list of target columns."
        ),
    )
    problem: str = field(
        default="auto",
        metadata=_help(
            "Classification label shape: single_label, multi_label (several labels per example) or regression "
            "(numeric targets); auto: multi_label when the label column holds lists, else single_label.",
            PROBLEMS,
        ),
    )
    label_separator: str = field(
        default="|", metadata=_help("multi_label: the separator of several labels in one text cell (a csv), e.g. 'cat|dog'.")
    )
    sampler: str = field(
        default="random",
        metadata=_help(
            "Training order: random (a permutation per epoch), or balanced (draws with replacement, every class "
            "equally likely; a pure function of seed and epoch).",
            ("random", "balanced"),
        ),
    )
    text_pair_column: str | None = field(default=None, metadata=_help("Text classification: second text of a pair."))
    max_length: int | None = field(
        default=None,
        metadata=_help(
            "Text: truncate to this many tokens; when null, the tokenizer's limit, at most 512 and at most the model's "
            "learned positions. A value past the model's positions is cut to them, with a note."
        ),
    )
    max_duration_seconds: float | None = field(
        default=None, metadata=_help("Audio: random crop on train, centre crop on eval, to this length; no cut when null.")
    )
    language: str | None = field(
        default=None,
        metadata=_help(
            "Speech recognition with Whisper: the language of the transcripts (a code or name: en, german), which sets "
            "the prompt tokens; needed for multilingual checkpoints, refused by English-only ones."
        ),
    )
    task: str | None = field(
        default=None,
        metadata=_help(
            "Speech recognition with Whisper: transcribe (speech to text in its language) or translate (to English); "
            "transcribe when data.language is set.",
            ("transcribe", "translate"),
        ),
    )
    group_by_length: bool = field(
        default=False, metadata=_help("Batch examples of similar length together (less padding for text and audio).")
    )
    augment: bool = field(default=True, metadata=_help("Modality-appropriate augmentation on train only."))
    check_inputs: str = field(
        default="full",
        metadata=_help(
            "Image and audio files before training: full (decode each, in parallel, remembered by path, size and time "
            "across runs), header (open each, read its header only) or off (a trusted corpus).",
            ("full", "header", "off"),
        ),
    )
    on_bad_file: str = field(
        default="skip", metadata=_help("What to do with unreadable files: skip (counted, reported) or error.", ("skip", "error"))
    )
    max_train_samples: int | None = field(default=None, metadata=_help("Use at most this many training examples."))
    group_column: str | None = field(
        default=None,
        metadata=_help(
            "Column of groups (speaker, patient, source) kept whole: no group is split across data.folds' folds, nor "
            "across the hold-out of data.validation_split. A data.validation you give is not checked."
        ),
    )
    folds: int | None = field(
        default=None,
        metadata=_help(
            "K-fold cross-validation (K >= 2): the labelled pool (train plus validation, given or not; never test) is "
            "split into K folds, stratified by label and drawn with train.seed; the run validates on data.fold and "
            "trains on the rest. Null: no folds."
        ),
    )
    fold: int | None = field(
        default=None, metadata=_help("With data.folds: the fold this run validates on, 0 to data.folds - 1.")
    )
    train_size: int | None = field(
        default=None,
        metadata=_help(
            "Label budget: train on exactly this many examples, a stratified subset nested across sizes (for one "
            "train.seed and data.fold, the 50 are inside the 100); taken after data.folds and data.max_train_samples."
        ),
    )
    num_workers: int | None = field(
        default=None,
        metadata=_help("DataLoader worker processes; null: none without a GPU (they would compete with it), else up to 8."),
    )


@dataclass
class LoraConfig:
    r: int = field(default=8, metadata=_help("Rank of the low-rank update."))
    alpha: int = field(default=16, metadata=_help("Scaling numerator (update scaled by alpha / r)."))
    dropout: float = field(default=0.1, metadata=_help("Dropout on the LoRA input."))
    target_modules: str | list[str] = field(
        default="auto", metadata=_help("'auto' (per architecture), or module names / a regex for peft.")
    )


@dataclass
class StrategyConfig:
    name: str = field(default="full", metadata=_help("How the pretrained weights are used.", STRATEGIES))
    trainable_blocks: int = field(default=2, metadata=_help("freeze: how many top backbone blocks train."))
    keep_blocks: int | None = field(
        default=None,
        metadata=_help("Truncate the backbone to its lowest N blocks (the probe says which transfer); null keeps all."),
    )
    head_warmup_epochs: int = field(
        default=0, metadata=_help("Hybrid: epochs (out of train.epochs) that train the head alone first.")
    )
    freeze_feature_encoder: bool = field(
        default=True,
        metadata=_help("Speech: keep the convolutional feature encoder frozen (every strategy but scratch)."),
    )
    batch_norm: str = field(
        default="freeze_stats",
        metadata=_help(
            "BatchNorm in frozen parts: keep running statistics as loaded, or update them.", ("freeze_stats", "train")
        ),
    )
    lora: LoraConfig = field(default_factory=LoraConfig)


@dataclass
class TrainConfig:
    epochs: int = field(default=3, metadata=_help("Training epochs (head warm-up included)."))
    max_steps: int | None = field(default=None, metadata=_help("Stop after this many optimizer steps."))
    batch_size: int = field(default=32, metadata=_help("Examples per device per step."))
    eval_batch_size: int | None = field(default=None, metadata=_help("Defaults to batch_size."))
    learning_rate: float | str = field(
        default=5e-5,
        metadata=_help("Peak learning rate of the backbone's top block, or auto (a range test of what trains, before training)."),
    )
    head_learning_rate: float | str | None = field(
        default="auto",
        metadata=_help("Head learning rate: auto (a range test of the head before training), a number, or null (learning_rate)."),
    )
    layer_lr_decay: float = field(
        default=1.0, metadata=_help("Discriminative LR: each block below the top gets this factor once more.")
    )
    weight_decay: float = field(default=0.01, metadata=_help("AdamW decay on weight matrices (not biases or norms)."))
    scheduler: str = field(default="linear", metadata=_help("Learning-rate schedule.", ("linear", "cosine", "constant")))
    warmup_ratio: float = field(default=0.0, metadata=_help("Fraction of each phase's steps spent warming up."))
    gradient_accumulation_steps: int = field(default=1, metadata=_help("Micro-batches per optimizer step."))
    max_grad_norm: float | None = field(default=1.0, metadata=_help("Gradient clipping norm; null turns it off."))
    mixed_precision: str = field(default="no", metadata=_help("Accelerate mixed precision.", ("no", "fp16", "bf16")))
    on_nonfinite: str = field(
        default="stop",
        metadata=_help(
            "A non-finite loss or gradient norm: stop (at once, exporting nothing; the last finite checkpoint stays) "
            "or skip (the step's update, counted in metrics.json).",
            ("stop", "skip"),
        ),
    )
    early_stopping_patience: int | None = field(
        default=None, metadata=_help("Stop after this many epochs without a better metric_for_best.")
    )
    class_weights: dict[str, float] | str = field(
        default="none",
        metadata=_help(
            "Loss weight per class: none, balanced (inverse frequency; multi_label: positive weight negatives/positives "
            "per label), or a mapping {label: weight} (multi_label: positive weights)."
        ),
    )
    label_smoothing: float = field(
        default=0.0, metadata=_help("Label smoothing of the classification loss (0 = off; multi_label: targets move eps/2).")
    )
    decision_threshold: float | str = field(
        default="auto",
        metadata=_help(
            "multi_label: the score above which a label is predicted: auto (one threshold chosen on validation for the "
            "best macro F1), per_label (one per label, chosen the same way) or a number in (0, 1)."
        ),
    )
    generation_max_length: int | None = field(
        default=None,
        metadata=_help(
            "Speech recognition with an encoder-decoder (Whisper): the most tokens evaluation generates, prompt included; "
            "null: twice the longest training transcript's, within the model's limit."
        ),
    )
    generation_num_beams: int = field(
        default=1, metadata=_help("Speech recognition with an encoder-decoder: beams of the evaluation's search (1: greedy).")
    )
    metric_for_best: str | None = field(
        default=None,
        metadata=_help(
            "Validation metric that picks the best epoch (a tie goes to the lower validation loss); the task's default "
            "when null (f1, wer for speech, rmse for regression)."
        ),
    )
    load_best_at_end: bool = field(
        default=True, metadata=_help("End on the best epoch's weights (by metric_for_best); false keeps the last.")
    )
    seed: int = field(default=42, metadata=_help("Seed for init, shuffling, augmentation and dropout."))
    save_steps: int | None = field(default=None, metadata=_help("Also checkpoint every N optimizer steps."))
    save_total_limit: int = field(default=2, metadata=_help("Resumable checkpoints kept (the newest)."))
    logging_steps: int = field(default=10, metadata=_help("Log training loss every N optimizer steps."))
    report_to: str = field(
        default="tensorboard",
        metadata=_help(f"Accelerate tracker(s), comma-separated ({', '.join(TRACKERS)}), 'all' (every installed one) or 'none'."),
    )
    feature_cache: str = field(
        default="auto",
        metadata=_help(
            "Train head_only / freeze on cached outputs of the frozen part: auto (where it reproduces uncached "
            "training), on (refuse to run uncached), off.",
            ("auto", "on", "off"),
        ),
    )
    torch_compile: bool = field(
        default=False, metadata=_help("Compile the model with torch.compile (inductor); the feature cache is then off.")
    )
    feature_cache_dir: str | None = field(
        default=None, metadata=_help("Feature cache folder; $HFTL_FEATURE_CACHE or ~/.cache/hftl/features when null.")
    )
    feature_cache_max_gb: float = field(
        default=50.0,
        metadata=_help(
            "Size cap of the feature cache folder: after a fill, least recently used entries idle for an hour are "
            "deleted to stay under it (0 = no cap). `hftl cache list` shows the folder, `hftl cache clear` empties it."
        ),
    )


@dataclass
class AdaptConfig:
    method: str = field(
        default="none",
        metadata=_help(
            "Domain adaptation to data.target: none (source only), adabn (BatchNorm statistics of each domain), coral "
            "(align feature covariances), dann (domain-adversarial, gradient reversal), self_training (confident "
            "pseudo-labels under strong augmentation) or pretrain (masked-language-model pretraining on target text first).",
            ADAPT_METHODS,
        ),
    )
    coral_weight: float = field(default=1.0, metadata=_help("coral: weight of the CORAL loss (Sun & Saenko 2016: 1 on Office)."))
    dann_lambda: float = field(
        default=1.0, metadata=_help("dann: the reversed gradient's final weight, reached as 2/(1+exp(-gamma*p))-1 rises.")
    )
    dann_gamma: float = field(default=10.0, metadata=_help("dann: steepness of the lambda schedule (Ganin et al. 2016: 10)."))
    dann_hidden: int = field(default=1024, metadata=_help("dann: width of the domain classifier's two hidden layers (1024)."))
    threshold: float = field(
        default=0.95, metadata=_help("self_training: confidence a pseudo-label needs to be used (FixMatch: 0.95).")
    )
    rounds: int | None = field(
        default=None,
        metadata=_help(
            "self_training: times the model relabels data.target, spread over the epochs after the first (source only); "
            "null: every epoch after the first."
        ),
    )
    target_weight: float = field(
        default=1.0, metadata=_help("self_training: weight of the pseudo-labelled target loss (FixMatch's lambda_u: 1).")
    )
    pretrain_epochs: int = field(default=3, metadata=_help("pretrain: epochs of masked language modelling on data.target."))
    pretrain_learning_rate: float = field(default=1e-4, metadata=_help("pretrain: its peak learning rate (TAPT: 1e-4)."))
    mlm_probability: float = field(default=0.15, metadata=_help("pretrain: fraction of tokens masked (BERT: 0.15)."))


@dataclass
class Config:
    task: str = field(default="image-classification", metadata=_help("What the model does.", TASKS))
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    strategy: StrategyConfig = field(default_factory=StrategyConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    adapt: AdaptConfig = field(default_factory=AdaptConfig)
    output_dir: str = field(default="runs/run", metadata=_help("Run folder."))
    resume: bool = field(default=False, metadata=_help("Continue the unfinished run in output_dir."))
    overwrite: bool = field(default=False, metadata=_help("Replace a finished run in output_dir."))
    push_to_hub: bool = field(
        default=False, metadata=_help("Push the finished run to hub_repo_id (token: HF_TOKEN / hf auth login).")
    )
    hub_repo_id: str | None = field(default=None, metadata=_help("OWNER/NAME of the Hub repo push_to_hub creates or updates."))
    hub_private: bool = field(default=False, metadata=_help("Create the Hub repo private."))
    license: str | None = field(
        default=None,
        metadata=_help(
            "The model card's license (e.g. apache-2.0); when null, the base checkpoint's own if its card says one, "
            "else 'other'. The fine-tuned model inherits the base model's terms: check them."
        ),
    )

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def save(self, path: str | Path) -> None:
        """Write the resolved config as YAML (no secrets live in the config)."""
        Path(path).write_text(yaml.safe_dump(self.to_dict(), sort_keys=False))
