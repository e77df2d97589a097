"""Speech: audio classification and CTC speech recognition for the wav2vec2 family (HuBERT, WavLM, ...).

Audio is decoded by hftl (soundfile + soxr, see `hftl.audio_io`), not by torchcodec, and batched by the
checkpoint's own feature extractor, so what the model sees in training is what `pipeline(...)` feeds it.
`data.max_duration_seconds` crops classification clips (at random on augmented train, centred
otherwise); CTC cannot crop audio without cutting its transcript, so longer clips are skipped instead.

Speech recognition builds a character vocabulary from the normalised training transcripts (lower case,
single spaces, `|` between words), saves it as the tokenizer of a `Wav2Vec2Processor`, and scores word
and character error rates of greedy CTC decoding.

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
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import datasets
import evaluate
import numpy as np
import torch

from hftl.audio_io import EXTENSIONS, audio_problem, describe, duration_seconds, load_audio, read_audio, resample, to_mono
from hftl.data import FILE_BUILDERS, SPLIT_DIRS, DataReport, source_rows
from hftl.errors import DataError, HftlError
from hftl.metrics import IGNORE, Evaluator
from hftl.modalities import FileModality, check_model_path

INPUT = "audio"
INPUT_CANDIDATES = (
    "audio",
    "speech",
    "file",
    "path",
    "audio_path",
    "audio_file",
    "filepath",
    "file_path",
    "filename",
    "file_name",
)
TRANSCRIPT_CANDIDATES = ("transcription", "transcript", "text", "sentence", "normalized_text", "label")
METADATA_FILES = tuple(f"metadata{ext}" for ext in (".csv", ".jsonl", ".json", ".parquet"))
PAD, UNK, WORD_DELIMITER = "<pad>", "<unk>", "|"  # <pad> doubles as the CTC blank (id 0)

# Train-time augmentation: a random start shift of up to this fraction of the clip, a gain in dB,
# and, on half the clips, white noise at a signal-to-noise ratio drawn from this range (dB).
SHIFT_FRACTION = 0.1
GAIN_DB = (-6.0, 6.0)
NOISE_SNR_DB = (10.0, 30.0)
NOISE_PROBABILITY = 0.5


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


def feature_extractor_of(processor: Any) -> Any:
    """The feature extractor inside a processor (or the processor itself when it is one)."""
    return getattr(processor, "feature_extractor", processor)


def load_feature_extractor(name_or_path: str, revision: str | None, trust_remote_code: bool) -> Any:
    """The checkpoint's feature extractor, or an error saying how to save one next to the weights."""
    from transformers import AutoFeatureExtractor

    check_model_path(name_or_path, "facebook/wav2vec2-base")
    try:
        return AutoFeatureExtractor.from_pretrained(name_or_path, revision=revision, trust_remote_code=trust_remote_code)
    except (OSError, ValueError, KeyError) as e:
        raise HftlError(
            f"no feature extractor could be loaded from model.name_or_path={name_or_path} "
            f"({str(e).strip().splitlines()[0][:200]}). Save one next to the weights: "
            "AutoFeatureExtractor.from_pretrained(<its base>).save_pretrained(<dir>)"
        ) from None


@dataclass
class AudioAugment:
    """Random shift (or crop to `max_samples`), gain and noise at an SNR, drawn from torch's RNG.

    The trainer seeds torch per (seed, epoch, example), so an example looks the same wherever a run
    resumes. `crop` is off for CTC: cutting audio would cut words its transcript still holds.
    """

    max_samples: int | None = None
    crop: bool = True

    def __call__(self, samples: np.ndarray) -> np.ndarray:
        x = torch.from_numpy(np.ascontiguousarray(samples, dtype=np.float32))
        if self.crop and self.max_samples and len(x) > self.max_samples:
            start = int(torch.randint(0, len(x) - self.max_samples + 1, ()))
            x = x[start : start + self.max_samples]
        shift = int(torch.randint(0, int(SHIFT_FRACTION * len(x)) + 1, ()))
        if self.crop and bool(torch.rand(()) < 0.5):
            x = x[shift:]  # start a little late ...
        else:
            x = torch.cat([torch.zeros(shift), x])[: self.max_samples if self.crop else None]  # ... or a little early
        gain_db = float(torch.empty(()).uniform_(*GAIN_DB))
        x = x * 10 ** (gain_db / 20)
        if bool(torch.rand(()) < NOISE_PROBABILITY):
            snr_db = float(torch.empty(()).uniform_(*NOISE_SNR_DB))
            power = float(x.pow(2).mean())
            x = x + torch.randn(len(x)) * (power / 10 ** (snr_db / 10)) ** 0.5
        return x.numpy()


def centre_crop(samples: np.ndarray, max_samples: int | None) -> np.ndarray:
    """The middle `max_samples` of a clip longer than that; shorter clips unchanged."""
    if not max_samples or len(samples) <= max_samples:
        return samples
    start = (len(samples) - max_samples) // 2
    return samples[start : start + max_samples]


class _AudioBase(FileModality):
    """What both speech tasks share: decoding, folders, checks, augmentation, batching."""

    file_feature = datasets.Audio
    input_candidates = INPUT_CANDIDATES
    kind = "audio"
    column_key = "audio_column"
    report: DataReport | None = None  # the run's report, kept by check_inputs for encode_labels' skips

    def load_processor(
        self, name_or_path: str, revision: str | None, trust_remote_code: bool, label_names: list[str] | None = None
    ) -> Any:
        return load_feature_extractor(name_or_path, revision, trust_remote_code)

    def max_samples(self, processor: Any) -> int | None:
        seconds = self.cfg.data.max_duration_seconds
        return int(seconds * feature_extractor_of(processor).sampling_rate) if seconds else None

    # -- folders -----------------------------------------------------------------------------------
    def load_folder(self, root: Path, report: DataReport) -> datasets.Dataset | dict[str, datasets.Dataset]:
        """An audiofolder: `root/<label>/<clip>`, or clips listed in `root/metadata.csv` (column `file_name`
        plus labels or transcripts), either optionally under `root/<split>/`."""
        subdirs = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
        split_dirs = [p for p in subdirs if p.name.lower() in SPLIT_DIRS]
        if split_dirs and len(split_dirs) == len(subdirs) and not self._metadata_file(root):
            for stray in sorted(p for p in root.iterdir() if not p.is_dir() and not p.name.startswith(".")):
                report.skip("train", str(stray), "not inside a split folder (expected ROOT/<split>/<label>/<clip>)")
            return {SPLIT_DIRS[p.name.lower()]: self._scan(p, report, SPLIT_DIRS[p.name.lower()]) for p in split_dirs}
        return self._scan(root, report, "train")

    @staticmethod
    def _metadata_file(root: Path) -> Path | None:
        return next((root / name for name in METADATA_FILES if (root / name).is_file()), None)

    def _scan(self, root: Path, report: DataReport, split: str) -> datasets.Dataset:
        metadata = self._metadata_file(root)
        if metadata is not None:
            return self._from_metadata(metadata)
        if self.task == "speech-recognition":
            raise DataError(
                f"{root} holds no metadata.csv: speech-recognition folders list their clips and transcripts in "
                f"{root}/metadata.csv with columns file_name,transcription (or pass a csv/jsonl file as data.train)"
            )
        paths, labels = [], []
        for entry in sorted(root.iterdir()):
            if entry.name.startswith("."):
                continue
            if not entry.is_dir():
                report.skip(split, str(entry), "not inside a class folder (expected ROOT/<label>/<clip>)")
                continue
            for file in sorted(entry.rglob("*")):
                if file.is_dir() or any(part.startswith(".") for part in file.relative_to(root).parts):
                    continue
                if file.suffix.lower() not in EXTENSIONS:
                    report.skip(split, str(file), f"not an audio file ({file.suffix or 'no extension'})")
                    continue
                paths.append(str(file.resolve()))
                labels.append(entry.name)
        if not paths:
            raise DataError(
                f"{root} holds no audio in class folders; expected {root}/<label>/<clip> with one of {', '.join(EXTENSIONS)}"
            )
        return datasets.Dataset.from_dict({INPUT: paths, "label": labels})

    def _from_metadata(self, metadata: Path) -> datasets.Dataset:
        builder = FILE_BUILDERS[metadata.suffix.lower()]
        try:
            ds = datasets.load_dataset(builder, data_files=str(metadata), split="train")
        except Exception as e:  # noqa: BLE001 - parser errors come in many types; report them all the same way
            raise DataError(f"{metadata}: could not read it as {builder}: {str(e).strip().splitlines()[0][:200]}") from None
        if "file_name" not in ds.column_names:
            raise DataError(
                f"{metadata} has no file_name column (the clip path relative to its folder); columns: {ds.column_names}"
            )
        base = metadata.parent.resolve()
        ds = ds.map(lambda b: {INPUT: [str(base / f) if f else None for f in b["file_name"]]}, batched=True)
        return ds.remove_columns("file_name")

    # -- columns and checks ------------------------------------------------------------------------
    def example_checker(self, ds: datasets.Dataset) -> Callable[[int, Any], str | None]:
        """Task-specific reason to drop example i with audio `value` (beyond unusable audio); none here."""
        return lambda i, value: None

    def check_inputs(self, ds: datasets.Dataset, column: str, split: str, on_bad: str, report: DataReport) -> datasets.Dataset:
        """Unreadable, zero-length, silent or rate-less clips (and the task's own problems): skipped and
        reported, or refused with on_bad == "error"."""
        self.report = report  # encode_labels files its skips (characters outside the vocabulary) here too
        good, task_problem = [], self.example_checker(ds)
        for i, (row, value) in enumerate(zip(source_rows(ds), ds[column])):
            problem = audio_problem(value) or task_problem(i, value)
            if problem is None:
                good.append(i)
                continue
            if on_bad == "error":
                raise DataError(
                    f"row {row} of the {split} split: {describe(value) if value else column}: {problem}. "
                    "Fix or remove it, or set data.on_bad_file=skip to skip such examples"
                )
            report.skip(split, f"row {row}: {describe(value)}" if value else f"row {row}", problem)
        return ds.select(good) if len(good) < len(ds) else ds

    # -- examples and batches ----------------------------------------------------------------------
    def loader(self, processor: Any) -> Callable[[Any], Any]:
        rate = feature_extractor_of(processor).sampling_rate
        return lambda value: load_audio(value, rate)

    def augmenter(self, processor: Any) -> Callable[[Any], Any] | None:
        return AudioAugment(self.max_samples(processor))

    def features(self, processor: Any, examples: list[dict]) -> dict[str, torch.Tensor]:
        """The feature extractor's batch (input values, attention mask if it uses one), padded per batch."""
        fe = feature_extractor_of(processor)
        max_samples = self.max_samples(processor)
        audio = [centre_crop(e["input"], max_samples) for e in examples]
        return dict(fe(audio, sampling_rate=fe.sampling_rate, padding=True, return_tensors="pt"))

    def lengths(self, ds: datasets.Dataset, column: str, processor: Any) -> list[int] | None:
        """Clip lengths in samples (from file headers), capped at max_duration_seconds."""
        rate = feature_extractor_of(processor).sampling_rate
        cap = self.max_samples(processor) or np.inf
        return [int(min(duration_seconds(value) * rate, cap)) for value in ds[column]]

    # -- serving -----------------------------------------------------------------------------------
    def load_predict_input(self, item: str) -> Any:
        problem = audio_problem(item)
        if problem:
            raise DataError(f"{item}: {problem}")
        data, rate = read_audio(item)
        return {"raw": to_mono(data), "sampling_rate": rate}

    def pipeline_inputs(self, pipe: Any, inputs: list[Any]) -> list[dict[str, Any]]:
        """Resample here: the pipelines would need torchaudio for it."""
        rate = pipe.feature_extractor.sampling_rate
        return [{"raw": resample(x["raw"], x["sampling_rate"], rate), "sampling_rate": rate} for x in inputs]


class AudioClassification(_AudioBase):
    """Keyword spotting, speaker, emotion, language ID: one label per clip."""

    task = "audio-classification"
    pipeline_task = "audio-classification"

    def model_class(self) -> Any:
        from transformers import AutoModelForAudioClassification

        return AutoModelForAudioClassification

    def collator(self, processor: Any) -> Callable[[list[dict]], dict]:
        def collate(examples: list[dict]) -> dict[str, torch.Tensor]:
            batch = self.features(processor, examples)
            batch["labels"] = torch.tensor([e["labels"] for e in examples], dtype=torch.long)
            return batch

        return collate

    def predict(self, pipe: Any, inputs: list[Any], top_k: int) -> list[Any]:
        outputs = pipe(self.pipeline_inputs(pipe, inputs), top_k=top_k)
        return [out if isinstance(out, list) else [out] for out in outputs]


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


class CTCEvaluator(Evaluator):
    """Greedy CTC decoding (best class per frame, repeats merged, blanks dropped), then WER and CER."""

    classification = False

    def __init__(self, tokenizer: Any) -> None:
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


class SpeechRecognition(_AudioBase):
    """CTC fine-tuning (`AutoModelForCTC`) on audio + transcript pairs with a character vocabulary."""

    task = "speech-recognition"
    pipeline_task = "automatic-speech-recognition"
    label_candidates = TRANSCRIPT_CANDIDATES

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

    def model_kwargs(self, label_names: list[str], processor: Any) -> dict[str, Any]:
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
        texts = ds[column]
        limit = self.cfg.data.max_duration_seconds

        def problem(i: int, value: Any) -> str | None:
            if not isinstance(texts[i], str) or not normalize_transcript(texts[i]):
                return f"empty transcript (column {column!r})"
            if limit and (seconds := duration_seconds(value)) > limit:
                return f"{seconds:.2f} s is longer than data.max_duration_seconds={limit} (CTC clips are not cropped)"
            return None

        return problem

    def label_names(self, ds: datasets.Dataset, column: str, where: str) -> list[str]:
        """The character vocabulary of the training transcripts."""
        return build_vocab([t for t in ds[column] if isinstance(t, str)])

    def encode_labels(self, ds: datasets.Dataset, column: str, names: list[str], split: str, where: str) -> datasets.Dataset:
        """`labels` = the normalised transcript. A transcript with characters the vocabulary lacks (only
        possible outside train) is skipped and reported, or refused with data.on_bad_file=error."""
        vocab = set(names)
        texts, good = [], []
        for i, (row, text) in enumerate(zip(source_rows(ds), ds[column])):
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
        ds = ds.select(good) if len(good) < len(ds) else ds
        if "labels" in ds.column_names:
            ds = ds.remove_columns("labels")
        return ds.add_column("labels", texts)

    def augmenter(self, processor: Any) -> Callable[[Any], Any] | None:
        return AudioAugment(crop=False)

    def collator(self, processor: Any) -> Callable[[list[dict]], dict]:
        tokenizer = processor.tokenizer

        def collate(examples: list[dict]) -> dict[str, torch.Tensor]:
            batch = self.features(processor, examples)
            ids = [tokenizer(e["labels"]).input_ids for e in examples]
            width = max(len(x) for x in ids)
            # -100 marks padding: the CTC loss reads each target's length from it.
            batch["labels"] = torch.tensor([x + [IGNORE] * (width - len(x)) for x in ids], dtype=torch.long)
            return batch

        return collate

    def evaluator(self, processor: Any, label_names: list[str]) -> Evaluator:
        return CTCEvaluator(processor.tokenizer)

    def predict(self, pipe: Any, inputs: list[Any], top_k: int) -> list[Any]:
        """Transcripts, one `[{"text": ...}]` per input (greedy CTC decoding)."""
        outputs = pipe(self.pipeline_inputs(pipe, inputs))
        outputs = outputs if isinstance(outputs, list) else [outputs]
        return [[out] for out in outputs]
