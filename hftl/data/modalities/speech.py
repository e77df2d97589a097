"""Speech recognition with CTC for the wav2vec2 family (HuBERT, WavLM, ...): vocabulary, labels, error rates.

Speech recognition builds a character vocabulary from the normalised training transcripts (lower case,
single spaces, `|` between words), saves it as the tokenizer of a `Wav2Vec2Processor`, and scores word
and character error rates of greedy CTC decoding. Audio is read as for classification (`audio.py`);
CTC cannot crop audio without cutting its transcript, so clips over `data.max_duration_seconds` are
skipped instead.

Example:
    >>> normalize_transcript("  Hello,   World ")
    'hello, world'
    >>> build_vocab(["ab a", "ba"])
    ['<pad>', '<unk>', '|', 'a', 'b']
"""

from __future__ import annotations

import json
import tempfile
import unicodedata
from collections.abc import Callable
from pathlib import Path
from typing import Any

import datasets
import evaluate
import torch

from hftl.data.audio_io import duration_seconds
from hftl.data.labels import SINGLE, LabelSpace, as_space
from hftl.data.metrics import IGNORE, Evaluator
from hftl.data.modalities.audio import AudioAugment, _AudioBase, load_feature_extractor
from hftl.data.sources import column_values, source_rows
from hftl.utils.errors import DataError, HftlError

TRANSCRIPT_CANDIDATES = ("transcription", "transcript", "text", "sentence", "normalized_text", "label")
PAD, UNK, WORD_DELIMITER = "<pad>", "<unk>", "|"  # <pad> doubles as the CTC blank (id 0)


def normalize_transcript(text: str) -> str:
    """Lower case, NFC, single spaces: `Hello  World` and `hello world` are one transcript.

    Example:
        >>> normalize_transcript("Ça  Va")
        'ça va'
    """
    return " ".join(unicodedata.normalize("NFC", text).lower().split())


def build_vocab(transcripts: list[str]) -> list[str]:
    """CTC vocabulary in id order: blank/pad, unknown, word delimiter, then every character seen."""
    chars = set("".join(normalize_transcript(t) for t in transcripts)) - {" ", WORD_DELIMITER}
    return [PAD, UNK, WORD_DELIMITER, *sorted(chars)]


def build_tokenizer(vocab: list[str]) -> Any:
    """A `Wav2Vec2CTCTokenizer` over `vocab` (characters; spaces become the word delimiter).

    Example:
        >>> build_tokenizer(["<pad>", "<unk>", "|", "a", "b"])("ab a").input_ids
        [3, 4, 2, 3]
    """
    from transformers import Wav2Vec2CTCTokenizer

    with tempfile.TemporaryDirectory() as tmp:
        vocab_file = Path(tmp) / "vocab.json"
        vocab_file.write_text(json.dumps({token: i for i, token in enumerate(vocab)}, ensure_ascii=False))
        # No bos/eos: CTC never emits them, and as extra tokens they would widen the head for nothing.
        return Wav2Vec2CTCTokenizer(
            str(vocab_file), unk_token=UNK, pad_token=PAD, word_delimiter_token=WORD_DELIMITER, bos_token=None, eos_token=None
        )


class ErrorRates(evaluate.Metric):
    """Word and character error rates (jiwer, as the Hub's wer/cer metrics compute them), offline."""

    def _info(self) -> evaluate.MetricInfo:
        return evaluate.MetricInfo(
            description="Word error rate and character error rate computed by jiwer.",
            citation="",
            inputs_description="predictions and references: transcripts (str), one per clip.",
            features=datasets.Features({"predictions": datasets.Value("string"), "references": datasets.Value("string")}),
        )

    def _compute(self, predictions: list[str], references: list[str]) -> dict[str, float]:
        import jiwer

        if not references:
            return {"wer": 0.0, "cer": 0.0}
        return {"wer": float(jiwer.wer(references, predictions)), "cer": float(jiwer.cer(references, predictions))}


def error_rates(predictions: list[str], references: list[str]) -> dict[str, float]:
    """WER and CER of transcripts.

    Example:
        >>> error_rates(["a cat"], ["a hat"])
        {'wer': 0.5, 'cer': 0.2}
    """
    return ErrorRates(keep_in_memory=True).compute(predictions=predictions, references=references)


def error_counts(predictions: list[str], references: list[str]) -> dict[str, list[int]]:
    """Per transcript: word errors and reference words, character errors and reference characters, as jiwer
    counts them for `error_rates` (its default normalisation; spaces are characters). WER and CER are corpus
    rates, sum(errors) / sum(reference length); where no reference has a word, jiwer's WER is the errors' count.

    Example:
        >>> error_counts(["a cat", "hat"], ["a hat", "the hat"])
        {'word_errors': [1, 1], 'words': [2, 2], 'char_errors': [1, 4], 'chars': [5, 7]}
    """
    import jiwer

    if not references:
        return {"word_errors": [], "words": [], "char_errors": [], "chars": []}
    words = jiwer.process_words(references, predictions)
    chars = jiwer.process_characters(references, predictions)
    return {
        "word_errors": [_edits(a) for a in words.alignments],
        "words": [len(r) for r in words.references],
        "char_errors": [_edits(a) for a in chars.alignments],
        "chars": [len(r) for r in chars.references],
    }


def _edits(alignment: list[Any]) -> int:
    """Substitutions, deletions and insertions of one transcript's alignment, counted as jiwer counts them."""
    return sum(
        (c.hyp_end_idx - c.hyp_start_idx) if c.type == "insert" else (c.ref_end_idx - c.ref_start_idx)
        for c in alignment
        if c.type != "equal"
    )


class CTCEvaluator(Evaluator):
    """Greedy CTC decoding (best class per frame, repeats merged, blanks dropped), then WER and CER."""

    classification = False
    model_loss = True

    def __init__(self, tokenizer: Any) -> None:
        super().__init__()
        self.tokenizer = tokenizer

    def example_losses(self, logits: Any, labels: Any) -> Any:
        return None  # the CTC loss needs input lengths: the model's batch mean is used

    def predictions(self, logits: Any, batch: dict[str, Any], model: Any) -> Any:
        ids = logits.argmax(-1)
        mask = batch.get("attention_mask")
        output_lengths = getattr(model, "_get_feat_extract_output_lengths", None)
        if mask is not None and output_lengths is not None:
            # Frames computed from padding are not part of the clip: mark them so decoding skips them.
            frames = output_lengths(mask.sum(-1)).to(ids.device)
            ids = ids.masked_fill(torch.arange(ids.shape[1], device=ids.device)[None, :] >= frames[:, None], IGNORE)
        return ids

    def decode(self, rows: list[list[int]], group: bool) -> list[str]:
        """Token-id rows (IGNORE-padded) as text; `group` merges repeats (predictions, not references)."""
        return [self.tokenizer.decode([i for i in row if i != IGNORE], group_tokens=group) for row in rows]

    def compute(self, predictions: list, references: list) -> dict[str, float]:
        return error_rates(self.decode(predictions, True), self.decode(references, False))

    def example_table(self, predictions: list, references: list) -> dict[str, Any]:
        return {"kind": "speech", **error_counts(self.decode(predictions, True), self.decode(references, False))}


def padded_ids(rows: list[list[int]]) -> torch.Tensor:
    """Token-id rows as one tensor, padded with IGNORE (-100): the losses read each target's length from it.

    Example:
        >>> padded_ids([[5, 6], [7]]).tolist()
        [[5, 6], [7, -100]]
    """
    width = max(len(x) for x in rows)
    return torch.tensor([list(x) + [IGNORE] * (width - len(x)) for x in rows], dtype=torch.long)


def with_labels(ds: datasets.Dataset, rows: list[int], labels: list[Any]) -> datasets.Dataset:
    """The rows kept (indices into `ds`) with their encoded `labels` column (replacing one the data had)."""
    ds = ds.select(rows) if len(rows) < len(ds) else ds
    if "labels" in ds.column_names:
        ds = ds.remove_columns("labels")
    return ds.add_column("labels", labels)


class SpeechRecognition(_AudioBase):
    """CTC fine-tuning (`AutoModelForCTC`) on audio + transcript pairs with a character vocabulary."""

    task = "speech-recognition"
    pipeline_task = "automatic-speech-recognition"
    label_candidates = TRANSCRIPT_CANDIDATES
    label_shapes = False

    def model_class(self) -> Any:
        from transformers import AutoModelForCTC

        return AutoModelForCTC

    def load_processor(
        self, name_or_path: str, revision: str | None, trust_remote_code: bool, label_names: list[str] | None = None
    ) -> Any:
        """With `label_names` (the vocabulary): the checkpoint's feature extractor and a new character
        tokenizer. Without: a finished run's own processor."""
        from transformers import AutoProcessor, Wav2Vec2Processor

        if label_names is None:
            try:
                return AutoProcessor.from_pretrained(name_or_path, revision=revision, trust_remote_code=trust_remote_code)
            except (OSError, ValueError, KeyError) as e:
                raise HftlError(
                    f"{name_or_path} holds no speech-recognition processor (tokenizer + feature extractor): "
                    f"{str(e).strip().splitlines()[0][:200]}. Was it written by an hftl speech-recognition run?"
                ) from None
        feature_extractor = load_feature_extractor(name_or_path, revision, trust_remote_code)
        return Wav2Vec2Processor(feature_extractor=feature_extractor, tokenizer=build_tokenizer(label_names))

    def model_kwargs(self, labels: LabelSpace | list[str], processor: Any) -> dict[str, Any]:
        tokenizer = processor.tokenizer
        return {
            "vocab_size": len(tokenizer),
            "pad_token_id": tokenizer.pad_token_id,  # the CTC blank
            "ctc_loss_reduction": "mean",
            # A transcript longer than its clip's frames has no CTC alignment: zero its loss, not NaN the run.
            "ctc_zero_infinity": True,
        }

    def example_checker(self, ds: datasets.Dataset) -> Callable[[int, Any], str | None]:
        """Empty transcripts, and clips longer than data.max_duration_seconds (CTC does not crop)."""
        column = self.cfg.data.label_column or self.detect_label_column(ds, "the data")
        texts = column_values(ds, column)
        limit = self.cfg.data.max_duration_seconds

        def problem(i: int, value: Any) -> str | None:
            if not isinstance(texts[i], str) or not normalize_transcript(texts[i]):
                return f"empty transcript (column {column!r})"
            if limit and (seconds := duration_seconds(value)) > limit:
                return f"{seconds:.2f} s is longer than data.max_duration_seconds={limit} (CTC clips are not cropped)"
            return None

        return problem

    def label_space(self, ds: datasets.Dataset, column: str, where: str) -> LabelSpace:
        return LabelSpace(SINGLE, self.label_names(ds, column, where))

    def label_names(self, ds: datasets.Dataset, column: str, where: str) -> list[str]:
        """The character vocabulary of the training transcripts."""
        return build_vocab([t for t in column_values(ds, column) if isinstance(t, str)])

    def encode_labels(
        self, ds: datasets.Dataset, column: str, labels: LabelSpace | list[str], split: str, where: str
    ) -> datasets.Dataset:
        """`labels` = the normalised transcript. A transcript with characters the vocabulary lacks (only
        possible outside train) is skipped and reported, or refused with data.on_bad_file=error."""
        names = as_space(labels).names
        vocab = set(names)
        texts, good = [], []
        for i, (row, text) in enumerate(zip(source_rows(ds), column_values(ds, column))):
            text = normalize_transcript(text) if isinstance(text, str) else ""
            unknown = sorted(set(text.replace(" ", WORD_DELIMITER)) - vocab)
            if text and not unknown:
                good.append(i)
                texts.append(text)
                continue
            problem = f"characters {''.join(unknown)!r} are not in the training transcripts" if text else "empty transcript"
            if self.cfg.data.on_bad_file == "error":
                raise DataError(
                    f"{where}: row {row} of the {split} split: {problem} (vocabulary: {''.join(names[3:])!r}). "
                    "Fix the transcript, add training examples with these characters, or set data.on_bad_file=skip"
                )
            if self.report is not None:
                self.report.skip(split, f"row {row}", problem)
        return with_labels(ds, good, texts)

    def augmenter(self, processor: Any) -> Callable[[Any], Any] | None:
        return AudioAugment(crop=False)

    def collator(self, processor: Any) -> Callable[[list[dict]], dict]:
        tokenizer = processor.tokenizer

        def collate(examples: list[dict]) -> dict[str, torch.Tensor]:
            batch = self.features(processor, examples)
            batch["labels"] = padded_ids([tokenizer(e["labels"]).input_ids for e in examples])
            return batch

        return collate

    def evaluator(self, processor: Any, labels: LabelSpace | list[str]) -> Evaluator:
        return CTCEvaluator(processor.tokenizer)

    def predict(self, pipe: Any, inputs: list[Any], top_k: int) -> list[Any]:
        """Transcripts, one `[{"text": ...}]` per input (greedy CTC decoding)."""
        outputs = pipe(self.pipeline_inputs(pipe, inputs))
        outputs = outputs if isinstance(outputs, list) else [outputs]
        return [[out] for out in outputs]
