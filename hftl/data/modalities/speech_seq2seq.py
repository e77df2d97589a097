"""Speech recognition with an encoder-decoder that generates text (Whisper and its kin, `AutoModelForSpeechSeq2Seq`).

Chosen from the checkpoint's config (`task: speech-recognition` with a Whisper checkpoint), so there is no
new task name. The checkpoint's own tokenizer is kept (no character vocabulary); `data.language` and
`data.task` set Whisper's prompt tokens, for the labels and for generation alike. Inputs are the log-mel
features the feature extractor makes, padded to its fixed window (Whisper: 30 s, exactly 3,000 frames);
a clip longer than the window is skipped and reported (cropping it would cut words its transcript
holds). Evaluation generates (`train.generation_max_length`, `train.generation_num_beams`) and scores
word and character error rates of normalised transcripts.

The layer map reads the encoder's layers as the blocks and the decoder as the head (`layers.py`): head_only
trains the decoder on a frozen encoder (whose outputs the feature cache keeps), freeze adds the top
encoder blocks, LoRA adapts the query and value projections of both stacks.

Example:
    >>> get_modality("speech-recognition", cfg)   # cfg.model.name_or_path: a Whisper checkpoint  # doctest: +SKIP
    <hftl.data.modalities.speech_seq2seq.SpeechSeq2Seq object at ...>
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable
from functools import cached_property
from typing import Any

import datasets
import torch
from transformers.utils import logging as hf_logging

from hftl.data.audio_io import duration_seconds
from hftl.data.labels import SINGLE, LabelSpace
from hftl.data.metrics import IGNORE, Evaluator
from hftl.data.modalities.audio import load_feature_extractor
from hftl.data.modalities.speech import (
    SpeechRecognition,
    error_counts,
    error_rates,
    normalize_transcript,
    padded_ids,
    with_labels,
)
from hftl.data.sources import column_values, source_rows
from hftl.utils.errors import ConfigError, DataError, HftlError


def is_seq2seq_checkpoint(name_or_path: str, revision: str | None = None, trust_remote_code: bool = False) -> bool:
    """Whether a checkpoint generates transcripts with a decoder (Whisper) rather than CTC (wav2vec2).

    Read from its config's model type against transformers' own mappings; False when no config can be read
    (the model's loading then says why). A speech-language model (Voxtral, Granite Speech: a decoder-only
    language model) is refused, naming what is supported.
    """
    from transformers import AutoConfig
    from transformers.models.auto.modeling_auto import MODEL_FOR_CTC_MAPPING_NAMES, MODEL_FOR_SPEECH_SEQ_2_SEQ_MAPPING_NAMES

    try:
        config = AutoConfig.from_pretrained(name_or_path, revision=revision, trust_remote_code=trust_remote_code)
    except (OSError, ValueError, KeyError):
        return False
    kind = getattr(config, "model_type", None)
    if kind not in MODEL_FOR_SPEECH_SEQ_2_SEQ_MAPPING_NAMES or kind in MODEL_FOR_CTC_MAPPING_NAMES:
        return False
    if not getattr(config, "is_encoder_decoder", False):
        raise ConfigError(
            f"model.name_or_path={name_or_path} is a {kind} model: an audio encoder feeding a decoder-only language "
            "model, which hftl does not fine-tune. Speech recognition takes CTC models (wav2vec2 family) and "
            "encoder-decoders (Whisper, Moonshine)"
        )
    return True


class Seq2SeqEvaluator(Evaluator):
    """Generated transcripts against the labels: word and character error rates of normalised text.

    The loss is the model's teacher-forced one; predictions come from `generate` on the encoder's output
    (the feature cache's stand-in answers for a frozen encoder), padded with IGNORE.
    """

    classification = False
    model_loss = True

    def __init__(self, tokenizer: Any, generate_kwargs: dict[str, Any]) -> None:
        super().__init__()
        self.tokenizer = tokenizer
        self.generate_kwargs = generate_kwargs

    def example_losses(self, logits: Any, labels: Any) -> Any:
        return None  # token-weighted within a batch: the batch mean is used

    def predictions(self, logits: Any, batch: dict[str, Any], model: Any) -> Any:
        main = getattr(model, "main_input_name", "input_features")
        encoder_outputs = model.get_encoder()(**{main: batch.get(main)})
        verbosity = hf_logging.get_verbosity()
        # Quiet: generate warns on every batch that its prompt has no attention mask (a prompt has no padding).
        hf_logging.set_verbosity_error()
        try:
            ids = model.generate(encoder_outputs=encoder_outputs, **self.generate_kwargs)
        finally:
            hf_logging.set_verbosity(verbosity)
        ids = ids.sequences if hasattr(ids, "sequences") else ids
        pad = self.tokenizer.pad_token_id
        return ids.masked_fill(ids == pad, IGNORE) if pad is not None else ids

    def decode(self, rows: list[list[int]]) -> list[str]:
        return [normalize_transcript(t) for t in self.tokenizer.batch_decode(_strip(rows), skip_special_tokens=True)]

    def compute(self, predictions: list, references: list) -> dict[str, float]:
        return error_rates(self.decode(predictions), self.decode(references))

    def example_table(self, predictions: list, references: list) -> dict[str, Any]:
        return {"kind": "speech", **error_counts(self.decode(predictions), self.decode(references))}


def _strip(rows: list[list[int]]) -> list[list[int]]:
    return [[i for i in row if i != IGNORE] for row in rows]


class SpeechSeq2Seq(SpeechRecognition):
    """Fine-tuning a speech encoder-decoder (`AutoModelForSpeechSeq2Seq`) on audio + transcript pairs: the
    CTC task's data, augmentation and serving, with the checkpoint's tokenizer, prompt and generation."""

    longest_label = 0  # tokens of the longest training label: evaluation's generation length follows it
    max_positions: int | None = None
    checkpoint: str | None = None  # where the tokenizer and limits are read: a finished run's model/, else model.name_or_path

    def _source(self) -> tuple[str, str | None]:
        m = self.cfg.model
        return (self.checkpoint, None) if self.checkpoint else (m.name_or_path, m.revision)

    @cached_property
    def _labelling(self) -> tuple[Any, int | None, int | None]:
        """The tokenizer, the decoder's positions and its start token, as the labels are written."""
        from transformers import AutoConfig

        path, revision = self._source()
        trust = self.cfg.model.trust_remote_code
        config = AutoConfig.from_pretrained(path, revision=revision, trust_remote_code=trust)
        tokenizer = self.load_processor(path, revision, trust).tokenizer
        return tokenizer, getattr(config, "max_target_positions", None), getattr(config, "decoder_start_token_id", None)

    def model_class(self) -> Any:
        from transformers import AutoModelForSpeechSeq2Seq

        return AutoModelForSpeechSeq2Seq

    def load_processor(
        self, name_or_path: str, revision: str | None, trust_remote_code: bool, label_names: list[str] | None = None
    ) -> Any:
        """The checkpoint's (or a finished run's) processor, its tokenizer prompting as data.language/task say."""
        from transformers import AutoProcessor

        try:
            processor = AutoProcessor.from_pretrained(name_or_path, revision=revision, trust_remote_code=trust_remote_code)
        except (OSError, ValueError, KeyError) as e:
            raise HftlError(
                f"{name_or_path} holds no speech-recognition processor (tokenizer + feature extractor): "
                f"{str(e).strip().splitlines()[0][:200]}. Save one beside the weights: "
                "AutoProcessor.from_pretrained(<its base>).save_pretrained(<dir>)"
            ) from None
        if getattr(processor, "tokenizer", None) is None:
            raise HftlError(f"{name_or_path}: its processor has no tokenizer, which a speech encoder-decoder needs")
        self._set_prompt(processor.tokenizer)
        return processor

    def _set_prompt(self, tokenizer: Any) -> None:
        d = self.cfg.data
        if not hasattr(tokenizer, "set_prefix_tokens"):
            if d.language or d.task:
                raise ConfigError(
                    f"data.language/data.task set Whisper's prompt tokens; {type(tokenizer).__name__} has none. Remove them"
                )
            return
        try:
            tokenizer.set_prefix_tokens(language=d.language, task=self.prompt_task, predict_timestamps=False)
        except ValueError as e:
            raise ConfigError(f"data.language={d.language!r}: {str(e).splitlines()[0][:300]}") from None

    @property
    def prompt_task(self) -> str | None:
        return self.cfg.data.task or ("transcribe" if self.cfg.data.language else None)

    def model_kwargs(self, labels: LabelSpace | list[str], processor: Any) -> dict[str, Any]:
        return {}  # the pretrained decoder and its vocabulary stay as they are

    def adapt_model(self, model: Any, processor: Any) -> None:
        """Generation as the labels are written: the checkpoint's generation config (a scratch model too),
        with data.language and data.task, and no older forced prompt."""
        from transformers import GenerationConfig

        m = self.cfg.model
        with contextlib.suppress(OSError):  # without generation_config.json the one built from its config stays
            model.generation_config = GenerationConfig.from_pretrained(m.name_or_path, revision=m.revision)
        gc = model.generation_config
        gc.forced_decoder_ids = None
        language, multilingual = self.cfg.data.language, getattr(gc, "is_multilingual", None)
        if language is None and multilingual and self.prompt_task is None:
            raise ConfigError(
                f"{m.name_or_path} is multilingual: set data.language to the transcripts' language (e.g. data.language=en), "
                "which Whisper's prompt names in training and generation"
            )
        if language is not None and multilingual is False:
            raise ConfigError(f"{m.name_or_path} is English-only: it takes no data.language or data.task; remove them")
        if language is not None:
            gc.language = language
        if self.prompt_task is not None:
            gc.task = self.prompt_task

    # -- data --------------------------------------------------------------------------------------
    @cached_property
    def window_seconds(self) -> float:
        """The longest clip the encoder takes (Whisper: 30 s), within data.max_duration_seconds and model.window_seconds."""
        path, revision = self._source()
        fe = load_feature_extractor(path, revision, self.cfg.model.trust_remote_code)
        window = getattr(fe, "chunk_length", None) or math.inf
        return min(window, self.cfg.data.max_duration_seconds or math.inf, self.cfg.model.window_seconds or math.inf)

    def example_checker(self, ds: datasets.Dataset) -> Callable[[int, Any], str | None]:
        """Empty transcripts, and clips longer than the encoder's window (not cropped: the words would go)."""
        column = self.cfg.data.label_column or self.detect_label_column(ds, "the data")
        texts = column_values(ds, column)
        limit = self.window_seconds

        def problem(i: int, value: Any) -> str | None:
            if not isinstance(texts[i], str) or not texts[i].strip():
                return f"empty transcript (column {column!r})"
            if math.isfinite(limit) and (seconds := duration_seconds(value)) > limit:
                return f"{seconds:.2f} s is longer than the {limit:g} s the encoder takes (clips are not cropped)"
            return None

        return problem

    def label_space(self, ds: datasets.Dataset, column: str, where: str) -> LabelSpace:
        return LabelSpace(SINGLE, [])  # the tokenizer's vocabulary: nothing to learn from the data

    def encode_labels(
        self, ds: datasets.Dataset, column: str, labels: LabelSpace | list[str], split: str, where: str
    ) -> datasets.Dataset:
        """`labels` = the transcript's token ids after the decoder's start token, prompt included. A label
        longer than the decoder's positions is skipped and reported, or refused with data.on_bad_file=error."""
        tokenizer, limit, start = self._labelling
        ids, good = [], []
        for i, (row, text) in enumerate(zip(source_rows(ds), column_values(ds, column))):
            tokens = tokenizer(text.strip()).input_ids if isinstance(text, str) and text.strip() else []
            if tokens and tokens[0] == start:  # the model prepends it when it shifts the labels right
                tokens = tokens[1:]
            problem = "empty transcript" if not tokens else None
            if tokens and limit and len(tokens) >= limit:
                problem = f"{len(tokens)} tokens, over the decoder's {limit} positions"
            if problem is None:
                good.append(i)
                ids.append(tokens)
                continue
            if self.cfg.data.on_bad_file == "error":
                raise DataError(f"{where}: row {row} of the {split} split: {problem}. Fix it, or set data.on_bad_file=skip")
            if self.report is not None:
                self.report.skip(split, f"row {row}", problem)
        if split == "train":
            self.longest_label = max((len(x) for x in ids), default=0)
            self.max_positions = limit
        return with_labels(ds, good, ids)

    def collator(self, processor: Any) -> Callable[[list[dict]], dict]:
        def collate(examples: list[dict]) -> dict[str, torch.Tensor]:
            batch = self.features(processor, examples)
            batch["labels"] = padded_ids([e["labels"] for e in examples])
            return batch

        return collate

    # -- evaluation and serving --------------------------------------------------------------------
    def evaluator(self, processor: Any, labels: LabelSpace | list[str]) -> Evaluator:
        t = self.cfg.train
        kwargs: dict[str, Any] = {"num_beams": t.generation_num_beams}
        if t.generation_max_length:
            kwargs["max_length"] = t.generation_max_length
        elif self.longest_label:  # the decoder's start token, then twice the longest label, within its positions
            kwargs["max_length"] = min(2 * self.longest_label + 1, self.max_positions or math.inf)
        return Seq2SeqEvaluator(processor.tokenizer, kwargs)
