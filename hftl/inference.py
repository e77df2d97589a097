"""A finished run on new inputs: metrics on other labelled data (`hftl evaluate`), predictions (`hftl predict`).

Both read the run's `model/` as a user would; labelled data is read and checked by the same data path
training uses (`hftl.data.load_labelled`), and evaluated by the same loop (`evaluate_loop`).

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

from hftl.data import DataReport, ExampleDataset, load_labelled
from hftl.evaluation import evaluate_loop
from hftl.modalities import get_modality
from hftl.run_dir import load_run, read_metrics


def evaluate_run(run_dir: str | Path, data: str, batch_size: int | None = None) -> dict[str, float]:
    """Metrics of a finished run's `model/` on other labelled data (labels must be the model's)."""
    cfg, model_dir = load_run(run_dir)
    modality = get_modality(cfg.task, cfg)
    model = modality.model_class().from_pretrained(str(model_dir))
    processor = modality.load_processor(str(model_dir), None, False)
    label_names = read_metrics(run_dir)["data"]["labels"]
    report = DataReport()
    ds, column = load_labelled(data, modality, cfg.data, label_names, report)
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
    metrics, _, _ = evaluate_loop(accelerator, model, loader, modality.evaluator(processor, label_names), desc="evaluate")
    metrics["examples"] = len(ds)
    return metrics


def predict(run_dir: str | Path, inputs: list[str], top_k: int = 1) -> list[list[dict[str, Any]]]:
    """Label names and scores for each input (file path or text), through `transformers.pipeline`."""
    from transformers import pipeline

    cfg, model_dir = load_run(run_dir)
    modality = get_modality(cfg.task, cfg)
    loaded = [modality.load_predict_input(item) for item in inputs]
    return modality.predict(pipeline(modality.pipeline_task, model=str(model_dir)), loaded, top_k)
