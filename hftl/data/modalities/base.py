"""The `Modality` interface every task implements, with the single-label classification defaults that
image, text and audio classification share; `FileModality` for inputs that are files (images, audio).

Example:
    >>> Modality().model_kwargs(["cat", "dog"], None)["id2label"]
    {0: 'cat', 1: 'dog'}
    >>> Modality().model_kwargs(LabelSpace("multi_label", ["cat", "dog"]), None)["problem_type"]
    'multi_label_classification'
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import datasets

from hftl.data.label_metrics import evaluator_for
from hftl.data.labels import PROBLEM_TYPES, LabelSpace, as_space, build_space, encode
from hftl.data.metrics import Evaluator
from hftl.data.sources import DataReport
from hftl.utils.errors import DataError, HftlError

if TYPE_CHECKING:
    from hftl.config import Config

LABEL_CANDIDATES = ("label", "labels", "class", "category", "target")


def check_model_path(name_or_path: str, example_hub_id: str) -> Path:
    """A path-looking model.name_or_path must be a save_pretrained folder; Hub ids pass through.

    Example:
        >>> check_model_path("google/vit-base-patch16-224", "google/vit-base-patch16-224")
        PosixPath('google/vit-base-patch16-224')
    """
    local = Path(name_or_path).expanduser()
    if not local.exists() and (name_or_path.startswith((".", "/", "~")) or name_or_path.count("/") > 1):
        raise HftlError(
            f"model.name_or_path={name_or_path}: no such directory. "
            f"Pass a folder written by save_pretrained, or a Hub id such as {example_hub_id}"
        )
    if local.is_dir() and not (local / "config.json").is_file():
        raise HftlError(
            f"model.name_or_path={name_or_path} is a folder but holds no model (no config.json); "
            "pass a folder written by save_pretrained"
        )
    return local


class Modality:
    """What a task provides to plug into the shared trainer (defaults: single-label classification)."""

    task: str = ""
    pipeline_task: str = ""
    label_candidates: tuple[str, ...] = LABEL_CANDIDATES
    label_shapes = True  # single-label, multi-label or regression (data.problem); sequence tasks have their own

    def __init__(self, cfg: Config | None = None) -> None:
        from hftl.config import Config

        self.cfg = cfg or Config(task=self.task)

    # -- model and processor ---------------------------------------------------------------------
    def model_class(self) -> Any:
        """The `AutoModelFor...` class of the task."""
        raise NotImplementedError

    def load_processor(
        self, name_or_path: str, revision: str | None, trust_remote_code: bool, label_names: list[str] | None = None
    ) -> Any:
        """The checkpoint's processor (saved with the model so pipelines load it)."""
        raise NotImplementedError

    def model_kwargs(self, labels: LabelSpace | list[str], processor: Any) -> dict[str, Any]:
        """Config overrides that size the model's head to the labels (class names, or regression targets)
        and set its problem_type, which picks the loss of transformers' heads and the pipelines' scores."""
        space = as_space(labels)
        kwargs = {
            "num_labels": len(space.names),
            "id2label": dict(enumerate(space.names)),
            "label2id": {name: i for i, name in enumerate(space.names)},
        }
        # Single-label: no problem_type, as before; a checkpoint fine-tuned for another shape has its own reset.
        kwargs["problem_type"] = PROBLEM_TYPES[space.problem] if space.problem != "single_label" else None
        return kwargs

    def adapt_model(self, model: Any, processor: Any) -> None:
        """Settings the loaded model needs for the task beyond its config (Whisper: its generation config)."""

    def fit_inputs(self, model: Any) -> None:
        """Size the inputs to what the model takes (text: no longer than its position table); also at inference."""

    # -- data --------------------------------------------------------------------------------------
    def load_folder(self, root: Path, report: DataReport) -> datasets.Dataset | dict[str, datasets.Dataset]:
        """A folder of class sub-folders (optionally under train/validation/test)."""
        raise DataError(f"{root} is a folder; {self.task} data comes as a csv/jsonl/parquet file or a Hub dataset id")

    def detect_input_column(self, ds: datasets.Dataset, where: str) -> str:
        """The column holding the inputs when data.input_column is not set."""
        raise NotImplementedError

    def detect_label_column(self, ds: datasets.Dataset, where: str) -> str:
        """The column holding the labels when data.label_column is not set."""
        for name in self.label_candidates:
            if name in ds.column_names:
                return name
        raise DataError(
            f"{where}: no label column found among {ds.column_names}; name it {self.label_candidates[0]!r} "
            "or set data.label_column=<name>"
        )

    def prepare_inputs(self, ds: datasets.Dataset, column: str, where: str) -> datasets.Dataset:
        """Normalise the input column (e.g. resolve relative paths against the data file)."""
        return ds

    def check_inputs(self, ds: datasets.Dataset, column: str, split: str, on_bad: str, report: DataReport) -> datasets.Dataset:
        """Drop (and report) or refuse unusable inputs."""
        return ds

    def label_space(self, ds: datasets.Dataset, column: str | list[str], where: str) -> LabelSpace:
        """The labels' shape and vocabulary, from the training split."""
        return build_space(self.cfg.data, ds, column, where)

    def encode_labels(
        self, ds: datasets.Dataset, column: str | list[str], labels: LabelSpace, split: str, where: str
    ) -> datasets.Dataset:
        """Add the `labels` column the collator reads."""
        return encode(self.cfg.data, ds, column, labels, split, where)

    def encode(self, ds: datasets.Dataset, column: str, processor: Any) -> tuple[datasets.Dataset, str]:
        """Work the collator would otherwise redo every epoch, done once per split (text: tokenizing).

        Returns the split and the column the examples are now read from.
        """
        return ds, column

    def loader(self, processor: Any) -> Callable[[Any], Any]:
        """Turns one stored input value into what `augment` and `collate` take."""
        return lambda value: value

    def augmenter(self, processor: Any) -> Callable[[Any], Any] | None:
        """Random train-time augmentation of one loaded input, or None."""
        return None

    def collator(self, processor: Any) -> Callable[[list[dict]], dict]:
        """Batches examples `{"input", "labels"}` into model keyword arguments."""
        raise NotImplementedError

    def lengths(self, ds: datasets.Dataset, column: str, processor: Any) -> list[int] | None:
        """A length per example for data.group_by_length, or None when lengths do not vary."""
        return None

    # -- evaluation and serving --------------------------------------------------------------------
    def evaluator(self, processor: Any, labels: LabelSpace | list[str]) -> Evaluator:
        """Predictions and metrics of the task and label shape."""
        return evaluator_for(as_space(labels), self.cfg.train.decision_threshold)

    def load_predict_input(self, item: str) -> Any:
        """One `hftl predict` argument as a pipeline input."""
        return item

    def predict(self, pipe: Any, inputs: list[Any], top_k: int) -> list[Any]:
        """Pipeline outputs, one list of `{"label", "score"}` (or task-shaped dicts) per input."""
        outputs = pipe(inputs, top_k=top_k)
        return [out if isinstance(out, list) else [out] for out in outputs]


class FileModality(Modality):
    """Inputs are files (images, audio): a path column, or a datasets Image/Audio feature.

    Subclasses name their `file_feature` (datasets.Image, datasets.Audio), the column names to look
    for, and the word for one input ("image", "audio").
    """

    file_feature: Any = None
    input_candidates: tuple[str, ...] = ()
    kind: str = "file"
    column_key: str = "input_column"

    def detect_input_column(self, ds: datasets.Dataset, where: str) -> str:
        for name, feature in ds.features.items():
            if isinstance(feature, self.file_feature):
                return name
        for name in self.input_candidates:
            if name in ds.column_names:
                return name
        raise DataError(
            f"{where}: no {self.kind} column found among {ds.column_names}; "
            f"name it {self.kind!r} or set data.{self.column_key}=<name>"
        )

    def prepare_inputs(self, ds: datasets.Dataset, column: str, where: str) -> datasets.Dataset:
        """A feature column is cast to undecoded (hftl decodes per example); paths in a table resolve
        against the table's own folder, empty cells stay None for check_inputs to report."""
        feature = ds.features[column]
        if isinstance(feature, self.file_feature):
            return ds.cast_column(column, self.file_feature(decode=False))
        if not (isinstance(feature, datasets.Value) and feature.dtype in ("string", "large_string")):
            raise DataError(
                f"{where}: column {column!r} must hold {self.kind} file paths (strings) or {self.kind} data, not {feature}"
            )
        if _all_absolute(ds, column):  # an imagefolder's paths: nothing to resolve (a map took 1.5 s per 100k)
            return ds
        base = Path(where).expanduser().resolve().parent if Path(where).is_file() else Path.cwd()

        def resolve(batch: dict[str, list]) -> dict[str, list]:
            out = []
            for value in batch[column]:
                path = Path(value).expanduser() if value else None
                out.append(None if path is None else str(path if path.is_absolute() else base / path))
            return {column: out}

        return ds.map(resolve, batched=True, desc=f"resolving {self.kind} paths")


def _all_absolute(ds: datasets.Dataset, column: str) -> bool:
    """Whether every non-empty cell of the string `column` is an absolute path, checked in Arrow."""
    import pyarrow.compute as pc

    values = ds.data.column(column)  # the whole table, also rows a selection hides: a superset is fine here
    return bool(pc.all(pc.or_(pc.is_null(values), pc.starts_with(values, os.sep))).as_py() is not False)
