"""Audio classification for the wav2vec2 family (HuBERT, WavLM, ...), and the audio reading speech recognition shares.

Audio is decoded by hftl (soundfile + soxr, see `hftl.data.audio_io`), not by torchcodec, and batched by the
checkpoint's own feature extractor, so what the model sees in training is what `pipeline(...)` feeds it.
`data.max_duration_seconds` crops classification clips (at random on augmented train, centred
otherwise). Speech recognition (CTC) builds on this in `speech.py`.

Example:
    >>> centre_crop(np.arange(10), 4)
    array([3, 4, 5, 6])
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import datasets
import numpy as np
import torch

from hftl.data.audio_io import (
    EXTENSIONS,
    audio_header_problem,
    audio_problem,
    describe,
    duration_seconds,
    load_audio,
    read_audio,
    resample,
    to_mono,
)
from hftl.data.folders import scan_class_folders
from hftl.data.input_checks import InputCheck, check_column, column_chunks
from hftl.data.modalities.base import FileModality, check_model_path
from hftl.data.sources import FILE_BUILDERS, SPLIT_DIRS, DataReport, label_tensor, source_rows
from hftl.utils.errors import DataError, HftlError

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
AUDIO_CHECK = InputCheck("audio", full=audio_problem, header=audio_header_problem)
METADATA_FILES = tuple(f"metadata{ext}" for ext in (".csv", ".jsonl", ".json", ".parquet"))

# Train-time augmentation: a random start shift of up to this fraction of the clip, a gain in dB,
# and, on half the clips, white noise at a signal-to-noise ratio drawn from this range (dB).
SHIFT_FRACTION = 0.1
GAIN_DB = (-6.0, 6.0)
NOISE_SNR_DB = (10.0, 30.0)
NOISE_PROBABILITY = 0.5


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
        """Classification's crop: data.max_duration_seconds, within model.window_seconds (a shortened encoder window)."""
        limits = [x for x in (self.cfg.data.max_duration_seconds, self.cfg.model.window_seconds) if x]
        return int(min(limits) * feature_extractor_of(processor).sampling_rate) if limits else None

    # -- folders -----------------------------------------------------------------------------------
    def load_folder(self, root: Path, report: DataReport) -> datasets.Dataset | dict[str, datasets.Dataset]:
        """An audiofolder: `root/<label>/<clip>`, or clips listed in `root/metadata.csv` (column `file_name`
        plus labels or transcripts), either optionally under `root/<split>/`."""
        subdirs = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
        split_dirs = [p for p in subdirs if p.name.lower() in SPLIT_DIRS]
        if split_dirs and len(split_dirs) == len(subdirs) and not self._metadata_file(root):
            # Clips outside the split folders are reported; other files (a README, a speakers list) are not data.
            for stray in sorted(p for p in root.iterdir() if p.is_file() and p.suffix.lower() in EXTENSIONS):
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
        paths, labels = scan_class_folders(root, report, split, EXTENSIONS, "an audio file", "clip")
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
        verdicts = check_column(ds, column, AUDIO_CHECK, self.cfg.data.check_inputs, f"checking {split} audio")
        good, task_problem, rows = [], self.example_checker(ds), source_rows(ds)
        for i, value in ((start + j, v) for start, values in column_chunks(ds, column) for j, v in enumerate(values)):
            problem = verdicts[i] or task_problem(i, value)
            if problem is None:
                good.append(i)
                continue
            row = rows[i]
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
        # Extractors of a fixed input length (Whisper: exactly 30 s of mel frames) pad every clip to it.
        padding = "max_length" if getattr(fe, "nb_max_frames", None) else True
        # Ask for the mask where the extractor says the model takes one: some return it only when asked (LASR,
        # whose CTC loss reads its lengths); wav2vec2-base-style extractors say no and get none.
        mask = {"return_attention_mask": True} if getattr(fe, "return_attention_mask", False) else {}
        return dict(fe(audio, sampling_rate=fe.sampling_rate, padding=padding, return_tensors="pt", **mask))

    def lengths(self, ds: datasets.Dataset, column: str, processor: Any) -> list[int] | None:
        """Clip lengths in samples (from file headers), capped at max_duration_seconds."""
        rate = feature_extractor_of(processor).sampling_rate
        cap = self.max_samples(processor) or np.inf
        return [int(min(duration_seconds(v) * rate, cap)) for _, values in column_chunks(ds, column) for v in values]

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
            batch["labels"] = label_tensor([e["labels"] for e in examples])
            return batch

        return collate

    def predict(self, pipe: Any, inputs: list[Any], top_k: int) -> list[Any]:
        outputs = pipe(self.pipeline_inputs(pipe, inputs), top_k=top_k)
        return [out if isinstance(out, list) else [out] for out in outputs]
