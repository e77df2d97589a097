"""A finished run on new inputs: metrics on other labelled data (`hftl evaluate`), predictions (`hftl predict`).

Both read the run's `model/` as a user would; labelled data is read and checked by the same data path
training uses (`hftl.data.sources.load_labelled`), and evaluated by the same loop (`evaluate_loop`).

Example:
    >>> evaluate_run("runs/vit-lora", "more-digits/")["accuracy"]        # doctest: +SKIP
    >>> predict("runs/bert-full", ["a wonderful film"])                  # doctest: +SKIP
    [[{'label': 'pos', 'score': 0.97}]]
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from accelerate import Accelerator
from torch.utils.data import DataLoader

from hftl.builtin import resolve_builtin
from hftl.config import Config
from hftl.data.dataset_repos import RepoOptions
from hftl.data.label_metrics import evaluator_for
from hftl.data.labels import LabelSpace
from hftl.data.modalities import get_modality
from hftl.data.sources import DataReport, ExampleDataset, load_labelled
from hftl.run_folder.layout import load_run, read_metrics
from hftl.training.evaluation import evaluate_loop
from hftl.utils.errors import HftlError


def evaluate_run(
    run_dir: str | Path,
    data: str,
    batch_size: int | None = None,
    dataset_config: str | None = None,
    revision: str | None = None,
    split: str | None = None,
    onnx: str | Path | None = None,
) -> dict[str, float]:
    """Metrics of a finished run's `model/` on other labelled data (labels must be the model's); for a Hub
    dataset (or dataset-repo folder), its config, revision and split (name or slice). `onnx`: the exported
    graph (an export folder, or the run folder for `RUN/onnx/`) on onnxruntime instead of the PyTorch model."""
    cfg, model_dir = load_run(run_dir)
    modality = get_modality(cfg.task, cfg, str(model_dir))
    if onnx is not None:
        from hftl.runs.onnx_runtime import OnnxModel

        model = OnnxModel.from_folder(onnx)
    else:
        model = modality.model_class().from_pretrained(str(model_dir))
        modality.fit_inputs(model)
    # The run's own decision threshold (multi-label), as its model/config.json keeps it: never re-tuned on new data.
    threshold = getattr(model.config, "decision_threshold", None)
    processor = modality.load_processor(str(model_dir), None, False)
    space = run_labels(run_dir)
    evaluator = evaluator_for(space, threshold) if modality.label_shapes and threshold is not None else None
    repo = RepoOptions(dataset_config, revision)
    return _score(model, processor, modality, space, data, cfg, batch_size, repo, split, evaluator)


def evaluate_checkpoint(cfg: Config, data: str, batch_size: int | None = None, split: str | None = None) -> dict[str, float]:
    """Metrics of `cfg.model` before any training (zero-shot), loaded as training would load it (its prompt,
    `model.window_seconds`). Only where the checkpoint's own head answers the task: a speech encoder-decoder.

    Example:
        >>> evaluate_checkpoint(load_config(base), "builtin:spoken-accents/target/test")["wer"]  # doctest: +SKIP
    """
    from hftl.data.modalities.speech_seq2seq import SpeechSeq2Seq
    from hftl.models.loading import load_model
    from hftl.runs.finetune import resolve_builtins

    resolve_builtins(cfg)
    data = resolve_builtin(data) or data
    modality = get_modality(cfg.task, cfg)
    if not isinstance(modality, SpeechSeq2Seq):
        raise HftlError(
            f"a {cfg.task} checkpoint gets a new head when it is fine-tuned, so it has no zero-shot score; "
            "only speech encoder-decoders (Whisper) are scored before training"
        )
    space = modality.label_space(None, "", data)
    model, processor = load_model(cfg, modality, space)
    return _score(model.eval(), processor, modality, space, data, cfg, batch_size, RepoOptions(None, None), split, None)


def _score(
    model: Any, processor: Any, modality: Any, space: LabelSpace, data: str, cfg: Config,
    batch_size: int | None, repo: RepoOptions, split: str | None, evaluator: Any,
) -> dict[str, float]:  # fmt: skip
    report = DataReport()
    ds, column = load_labelled(data, modality, cfg.data, space, report, repo, split)
    if report.total():
        print(report.summary())
    accelerator = Accelerator(cpu=not torch.cuda.is_available())  # several processes on CPUs too (gloo)
    ds, column = modality.encode(ds, column, processor)
    loader = DataLoader(
        ExampleDataset(ds, column, modality.loader(processor)),
        batch_size=batch_size or cfg.train.eval_batch_size or cfg.train.batch_size,
        collate_fn=modality.collator(processor),
    )
    model, loader = accelerator.prepare(model, loader)
    evaluator = evaluator or modality.evaluator(processor, space)
    metrics, _, _ = evaluate_loop(accelerator, model, loader, evaluator, desc="evaluate")
    metrics["examples"] = len(ds)
    return metrics


def run_labels(run_dir: str | Path) -> LabelSpace:
    """The label space a finished run recorded, as its exported model sees it (regression: data units)."""
    data = read_metrics(run_dir)["data"]
    return LabelSpace.from_dict(data.get("label_space"), data["labels"]).in_data_units()


def predict(
    run_dir: str | Path, inputs: list[str], top_k: int | None = None, onnx: str | Path | None = None
) -> list[list[dict[str, Any]]]:
    """Label names and scores for each input (file path or text), through `transformers.pipeline`.

    Multi-label: every label with its sigmoid score, best first, and `predicted` (the score reaches the
    run's decision threshold); `top_k` keeps the best k. Regression: one `{"label": target, "value": value}`
    per target, in the data's units. `top_k` (default: 1 for single-label, every label for multi-label) is
    refused for regression, where it means nothing. `onnx`: the exported graph's folder (see `Predictor`).
    """
    predictor = Predictor(run_dir, onnx=onnx)
    return predictor([predictor.modality.load_predict_input(item) for item in inputs], top_k)


class Predictor:
    """A finished run's `model/` in its pipeline, with the run's label shape applied to the outputs.

    Example:
        >>> Predictor("runs/bert-full")(["a wonderful film"], top_k=None)   # doctest: +SKIP
        [[{'label': 'pos', 'score': 0.97}]]
    """

    def __init__(
        self, run_dir: str | Path, batch_size: int | None = None, device: Any = None, onnx: str | Path | None = None
    ) -> None:
        from transformers import pipeline

        cfg, model_dir = load_run(run_dir)
        self.modality = get_modality(cfg.task, cfg, str(model_dir))
        if onnx is not None:  # the same pipeline, its forward pass on onnxruntime (`hftl predict --onnx`)
            from hftl.runs.onnx_runtime import OnnxModel, graph_path, onnx_pipeline

            graph = OnnxModel.from_folder(onnx)
            self.pipe = onnx_pipeline(self.modality.pipeline_task, graph_path(onnx).parent, graph, batch_size)
        else:
            self.pipe = pipeline(self.modality.pipeline_task, model=str(model_dir), batch_size=batch_size, device=device)
        config = self.pipe.model.config
        self.problem = getattr(config, "problem_type", None) if self.modality.label_shapes else None
        self.order = {name: i for i, name in config.id2label.items()}
        self.threshold = getattr(config, "decision_threshold", 0.5)

    def check_top_k(self, top_k: int | None) -> None:
        """--top-k ranks classes: refused where the outputs are not a ranking of classes."""
        if top_k is None:
            return
        if self.problem == "regression":
            raise HftlError("--top-k ranks classes; a regression model predicts one value per target. Leave it out")
        if not self.modality.label_shapes:
            what = "transcripts" if self.modality.task == "speech-recognition" else "entities"
            raise HftlError(f"--top-k ranks classes; a {self.modality.task} model predicts {what}. Leave it out")

    def __call__(self, inputs: list[Any], top_k: int | None = None) -> list[list[dict[str, Any]]]:
        self.check_top_k(top_k)
        if self.problem not in ("multi_label_classification", "regression"):
            return self.modality.predict(self.pipe, inputs, top_k or 1)
        outputs = self.modality.predict(self.pipe, inputs, len(self.order))  # every label (target), best first
        if self.problem == "regression":
            ordered = [sorted(out, key=lambda o: self.order[o["label"]]) for out in outputs]
            return [[{"label": o["label"], "value": o["score"]} for o in out] for out in ordered]
        for out in outputs:
            for o in out:
                t = self.threshold[self.order[o["label"]]] if isinstance(self.threshold, list) else self.threshold
                o["predicted"] = o["score"] >= t
        return [out[:top_k] if top_k else out for out in outputs]
