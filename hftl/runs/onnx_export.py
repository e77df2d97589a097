"""`hftl export RUN --format onnx`: a run's `model/` as an ONNX graph, proven equal on the run's validation set.

The graph is `torch.onnx.export(dynamo=True, opset 18)` of a wrapper returning the logits, with dynamic batch
and sequence axes (optimum's exporter does not run with transformers 5). Before anything is kept, onnxruntime
runs the graph over the run's validation split beside the PyTorch model: the largest logit difference, how
often the predicted labels agree and the metric both ways go to `export.json`. Past `TOLERANCE` the export is
refused and its files removed. `--quantize int8` (onnxruntime's dynamic quantization) is checked the same way,
but int8 changes logits by design: its metric change is reported, with a warning past `INT8_WARN`.

Example:
    >>> export_onnx("runs/bert-full")["fp32"]["max_abs_logit_diff"] < TOLERANCE   # doctest: +SKIP
    True
"""

from __future__ import annotations

import json
import logging
import shutil
import uuid
import warnings
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader

from hftl.config import LOWER_IS_BETTER, best_metric_name
from hftl.data.label_metrics import evaluator_for
from hftl.data.modalities import get_modality
from hftl.data.sources import ExampleDataset, load_splits
from hftl.run_folder.layout import load_run
from hftl.runs.inference import run_labels
from hftl.runs.onnx_runtime import GRAPH_FILE, REPORT_FILE, OnnxModel, meta_twin, require_onnx
from hftl.utils.errors import HftlError
from hftl.utils.files import replace_dir

# fp32 logits may differ only by float rounding: onnxruntime fuses and reorders sums (attention, GEMM, LayerNorm),
# each off by a few ulps (~1e-7 relative); measured 1e-8..1e-6 on tiny models and MiniLM, 1.3e-5 on Lite0 (logits
# ~5). A graph computing something else (a wrong weight, a dropped op, a mis-fed input) moves logits by 1e-2 or more.
# So: 1e-4 times the logits' scale (at least 1), 100x above rounding and 100x below a real fault.
TOLERANCE = 1e-4
INT8_WARN = 0.01  # int8 may cost accuracy; warn when the run's metric gets worse by more than 1 point
OPSET = 18


def export_onnx(
    run_dir: str | Path, output: str | Path | None = None, quantize: str | None = None, batch_size: int | None = None
) -> dict[str, Any]:
    """Write `model.onnx` (int8 if `quantize="int8"`), the processor, the config and `export.json` to `output`
    (default `RUN/onnx/`) once the graph is proven equal on the validation set; returns the report."""
    require_onnx()
    cfg, model_dir = load_run(run_dir)
    modality = get_modality(cfg.task, cfg, str(model_dir))
    model = modality.model_class().from_pretrained(str(model_dir)).eval()
    if getattr(model.config, "is_encoder_decoder", False):
        raise HftlError(
            f"{cfg.task} with an encoder-decoder ({model.config.model_type}) generates token by token, which one "
            "logits graph cannot do; serve its model/ with transformers (hftl predict), or CTranslate2 for Whisper"
        )
    processor = modality.load_processor(str(model_dir), None, False)
    loader, evaluator = validation_data(cfg, modality, processor, run_dir, batch_size)
    out = Path(output) if output else Path(run_dir) / "onnx"
    tmp = out.parent / f".{out.name}.tmp-{uuid.uuid4().hex}"
    tmp.mkdir(parents=True)
    try:
        example = {k: v for k, v in next(iter(loader)).items() if k != "labels"}
        export_graph(model, example, tmp / GRAPH_FILE)
        twin = meta_twin(model.config, cfg.task)
        fp32 = compare(model, OnnxModel(tmp / GRAPH_FILE, model.config, cfg.task, twin), loader, evaluator)
        report = {"task": cfg.task, "format": "onnx", "opset": OPSET, "quantize": quantize, "tolerance": TOLERANCE}
        report |= {"metric": best_metric_name(cfg), "validation_examples": fp32.pop("examples"), "fp32": fp32}
        if fp32["max_abs_logit_diff"] > fp32["allowed_diff"]:
            raise HftlError(
                f"the ONNX graph disagrees with the PyTorch model: logits differ by up to {fp32['max_abs_logit_diff']:.3g} "
                f"(allowed {fp32['allowed_diff']:.3g}), labels agree on {fp32['label_agreement']:.1%}; nothing was kept"
            )
        if quantize == "int8":
            report["int8"] = quantize_int8(tmp, model, cfg.task, twin, loader, evaluator, report["metric"])
        elif quantize is not None:
            raise HftlError(f"--quantize {quantize}: only int8 is supported")
        processor.save_pretrained(str(tmp))
        model.config.save_pretrained(str(tmp))  # labels, decision threshold: the pipeline reads them beside the graph
        (tmp / REPORT_FILE).write_text(json.dumps(report, indent=2))
        replace_dir(tmp, out)
        report["output"] = str(out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return report


def validation_data(
    cfg: Any, modality: Any, processor: Any, run_dir: str | Path, batch_size: int | None
) -> tuple[DataLoader, Any]:
    """The run's validation split, rebuilt from its config as training split it, and the evaluator of `hftl evaluate`."""
    splits = load_splits(cfg.data, modality, cfg.train.seed)
    ds, column = modality.encode(splits.validation, splits.input_column, processor)
    loader = DataLoader(
        ExampleDataset(ds, column, modality.loader(processor)),
        batch_size=batch_size or cfg.train.eval_batch_size or cfg.train.batch_size,
        collate_fn=modality.collator(processor),
    )
    space = run_labels(run_dir)  # regression: data units, as the exported head (scaling folded in) predicts
    model_config = Path(load_run(run_dir)[1]) / "config.json"
    threshold = json.loads(model_config.read_text()).get("decision_threshold")
    if modality.label_shapes and threshold is not None:
        return loader, evaluator_for(space, threshold)
    return loader, modality.evaluator(processor, space)


class _Logits(torch.nn.Module):
    """The model with named positional inputs and the logits as its one output: what the graph computes."""

    def __init__(self, model: torch.nn.Module, names: list[str]) -> None:
        super().__init__()
        self.model, self.names = model, names

    def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
        return self.model(**dict(zip(self.names, inputs))).logits


def export_graph(model: torch.nn.Module, example: dict[str, torch.Tensor], path: Path) -> None:
    """`model` as an ONNX graph at `path`: inputs named as the processor names them, batch axis dynamic, and the
    second axis of 2-D inputs too (tokens, audio samples); images and spectrograms keep their fixed size."""
    names = list(example)
    shapes = tuple({0: torch.export.Dim.AUTO, **({1: torch.export.Dim.AUTO} if example[n].dim() == 2 else {})} for n in names)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the exporter's deprecation and tracing chatter, not the user's concern
        program = torch.onnx.export(
            _Logits(model, names), tuple(example[n] for n in names), dynamo=True, opset_version=OPSET,
            input_names=names, output_names=["logits"], dynamic_shapes=(shapes,), verbose=False,
        )  # fmt: skip
    program.save(str(path))


def compare(model: torch.nn.Module, graph: OnnxModel, loader: DataLoader, evaluator: Any) -> dict[str, Any]:
    """PyTorch against the graph over `loader`: largest logit difference, label agreement, metrics both ways."""
    diff, scale, agree, count = 0.0, 1.0, 0, 0
    preds: dict[str, list] = {"torch": [], "onnx": []}
    refs: list = []
    with torch.no_grad():
        for batch in loader:
            inputs = {k: v for k, v in batch.items() if k != "labels"}
            ref, got = model(**inputs).logits.float(), graph(**inputs).logits.float()
            diff, scale = max(diff, (ref - got).abs().max().item()), max(scale, ref.abs().max().item())
            p_ref, p_got = evaluator.predictions(ref, batch, model), evaluator.predictions(got, batch, model)
            same = decisions(p_ref, evaluator) == decisions(p_got, evaluator)
            agree += int(same.reshape(len(same), -1).all(-1).sum())
            count += len(same)
            preds["torch"] += p_ref.tolist()
            preds["onnx"] += p_got.tolist()
            refs += batch["labels"].tolist()
    return {
        "max_abs_logit_diff": diff, "allowed_diff": TOLERANCE * scale, "label_agreement": agree / max(count, 1),
        "metrics_torch": evaluator.compute(preds["torch"], refs), "metrics_onnx": evaluator.compute(preds["onnx"], refs),
        "examples": count,
    }  # fmt: skip


def decisions(predictions: torch.Tensor, evaluator: Any) -> torch.Tensor:
    """What a user reads from predictions: class ids and tags as they are, multi-label scores at the threshold,
    regression values rounded to 3 significant digits (a value has no label to agree on)."""
    if not predictions.is_floating_point():  # ids; IGNORE marks padding in both alike
        return predictions
    threshold = getattr(evaluator, "threshold", None)
    if threshold is not None:
        return predictions >= torch.as_tensor(threshold)
    return torch.tensor([[float(f"{v:.3g}") for v in row] for row in predictions.reshape(len(predictions), -1).tolist()])


class _NoPreprocessHint(logging.Filter):
    """Drops onnxruntime's "Please consider (to run) pre-processing before quantization" line.

    `quantize_dynamic` logs it on every call (with `logging.warning`, so on the root logger) unless the graph went
    through its optional `quant_pre_process` (shape inference, graph fusions). hftl does not run that step; it
    measures what int8 costs instead (export.json's `int8`, a warning past INT8_WARN), so the hint, with its link to
    an image-classification example, would read as a problem the user has to act on on every export.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        return "pre-processing before quantization" not in record.getMessage()


def quantize_int8(folder: Path, model: Any, task: str, twin: Any, loader: DataLoader, evaluator: Any, metric: str) -> dict:
    """Replace `folder/model.onnx` by its int8 dynamic quantization (weights int8, activations quantized at run
    time: no calibration data) and report how the metric moves; warn past INT8_WARN."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    fp32 = folder / "model.fp32.onnx"
    (folder / GRAPH_FILE).rename(fp32)
    root, hint = logging.getLogger(), _NoPreprocessHint()
    root.addFilter(hint)  # only around this call: other root-logger warnings pass as before
    try:
        quantize_dynamic(str(fp32), str(folder / GRAPH_FILE), weight_type=QuantType.QInt8)
    finally:
        root.removeFilter(hint)
    fp32.unlink()
    result = compare(model, OnnxModel(folder / GRAPH_FILE, model.config, task, twin), loader, evaluator)
    result.pop("examples"), result.pop("allowed_diff")
    before, after = result["metrics_torch"][metric], result["metrics_onnx"][metric]
    result["metric_change"] = after - before
    worse = before - after if metric not in LOWER_IS_BETTER else after - before
    if worse > INT8_WARN:
        warnings.warn(f"int8 costs {worse:.3f} {metric} on the validation set ({before:.4f} -> {after:.4f})", stacklevel=2)
        result["warning"] = f"{metric} worse by {worse:.3f}"
    return result
