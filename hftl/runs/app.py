"""`hftl app RUN`: a Gradio page over a finished run, written per task (not `gr.Interface.from_pipeline`).

The page runs the run's `model/` through the same `Predictor` as `hftl predict`, so the page and the command
line answer alike. It serves on 127.0.0.1 by default, never opens a share link unless asked, and sends no
analytics: the environment switches are set before gradio is imported.

Example:
    >>> demo = build_app("runs/vit-lora")          # doctest: +SKIP
    >>> launch("runs/vit-lora", port=7860)          # doctest: +SKIP
"""

from __future__ import annotations

import inspect
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from hftl.run_folder.layout import load_run, read_metrics
from hftl.utils.errors import HftlError

INSTALL = 'pip install "hftl[app]"'
TOP_K = 10  # labels shown with their scores for single-label runs (gr.Label lists them best first)
# Set before gradio is imported (gradio reads them at import): no usage analytics, no version check, no Hub telemetry.
OFFLINE_ENV = {"GRADIO_ANALYTICS_ENABLED": "False", "HF_HUB_DISABLE_TELEMETRY": "1"}


def import_gradio() -> Any:
    """gradio, with analytics and telemetry off; a clear error naming the extra when it is not installed."""
    os.environ.update(OFFLINE_ENV)
    try:
        import gradio
    except ImportError as e:
        raise HftlError(f"hftl app needs gradio, which is not installed: {INSTALL}") from e
    return gradio


def load_predictor(run_dir: str | Path, onnx: str | Path | None = None) -> Any:
    """The run's `Predictor`: PyTorch, or with `onnx` the exported graph on onnxruntime (`""`: `RUN/onnx/`).

    Example:
        >>> load_predictor("runs/bert-full", onnx="")(["a wonderful film"])   # doctest: +SKIP
    """
    from hftl.runs.inference import Predictor

    if onnx is None:
        return Predictor(run_dir)
    if "onnx" not in inspect.signature(Predictor).parameters:  # the ONNX predictor comes with `hftl export`
        raise HftlError("this hftl cannot run ONNX graphs yet (no `hftl export --format onnx`); leave out --onnx")
    return Predictor(run_dir, onnx=onnx or run_dir)


def card_markdown(run_dir: str | Path, onnx: bool = False) -> str:
    """The card's essentials as Markdown: task, base model, strategy, validation (and test) metrics.

    Example:
        >>> card_markdown("runs/bert-full").splitlines()[0]   # doctest: +SKIP
        '# bert-full'
    """
    metrics = read_metrics(run_dir)
    strategy = metrics.get("strategy") or {}
    name = strategy.get("name", "?") if isinstance(strategy, dict) else str(strategy)
    lines = [
        f"# {Path(run_dir).resolve().name}",
        f"**Task:** {metrics.get('task', '?')} · **Base model:** `{metrics.get('base_model', '?')}` · **Strategy:** {name}",
    ]
    if onnx:
        lines[-1] += " · **Served from:** the ONNX graph on onnxruntime"
    if isinstance(strategy, dict) and strategy.get("frozen_description"):
        lines.append(f"*{strategy['frozen_description']}*")
    names = [k for k, v in (metrics.get("validation") or {}).items() if isinstance(v, (int, float))]
    if names:
        lines += ["", "| split | " + " | ".join(names) + " |", "|---" * (len(names) + 1) + "|"]
    for split in ("validation", "test") if names else ():
        scores = metrics.get(split) or {}
        if scores:
            lines.append(f"| {split} | " + " | ".join(_number(scores.get(k)) for k in names) + " |")
    return "\n".join(lines)


def _number(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, (int, float)) else "-"


# -- outputs: one Predictor answer as the value a Gradio component shows ------------------------------
def label_value(preds: list[dict[str, Any]]) -> dict[str, float]:
    """Labels with scores, as `gr.Label` takes them.

    Example:
        >>> label_value([{"label": "pos", "score": 0.9}, {"label": "neg", "score": 0.1}])
        {'pos': 0.9, 'neg': 0.1}
    """
    return {p["label"]: float(p["score"]) for p in preds}


def passing_labels(preds: list[dict[str, Any]]) -> str:
    """Multi-label: the labels whose score reaches the run's threshold (`predicted`).

    Example:
        >>> passing_labels([{"label": "a", "score": 0.8, "predicted": True}, {"label": "b", "score": 0.2, "predicted": False}])
        'a'
    """
    return ", ".join(p["label"] for p in preds if p.get("predicted")) or "(none reaches the threshold)"


def regression_value(preds: list[dict[str, Any]]) -> dict[str, float]:
    """Regression: each target's value in the data's units.

    Example:
        >>> regression_value([{"label": "valence", "value": 0.25}])
        {'valence': 0.25}
    """
    return {p["label"]: float(p["value"]) for p in preds}


def highlighted(text: str, entities: list[dict[str, Any]]) -> list[tuple[str, str | None]]:
    """NER: the text cut into (piece, entity or None), as `gr.HighlightedText` takes it.

    Example:
        >>> ents = [{"entity_group": "PER", "start": 0, "end": 3}, {"entity_group": "PER", "start": 8, "end": 11}]
        >>> highlighted("Ada met Bob", ents)
        [('Ada', 'PER'), (' met ', None), ('Bob', 'PER')]
    """
    pieces: list[tuple[str, str | None]] = []
    at = 0
    for e in sorted(entities, key=lambda e: e["start"]):
        if e["start"] < at:  # overlapping spans cannot be shown twice: keep the first
            continue
        if e["start"] > at:
            pieces.append((text[at : e["start"]], None))
        pieces.append((text[e["start"] : e["end"]], e["entity_group"]))
        at = e["end"]
    if at < len(text):
        pieces.append((text[at:], None))
    return pieces


# -- the page ----------------------------------------------------------------------------------------
def _inputs(gr: Any, predictor: Any, pair: bool) -> list[Any]:
    """The input components that fit the task: an image, one or two text boxes, or audio (file or microphone)."""
    kind = getattr(predictor.modality, "kind", None)
    if kind == "image":
        return [gr.Image(type="filepath", image_mode=None, label="image")]
    if kind == "audio":
        return [gr.Audio(sources=["upload", "microphone"], type="filepath", label="audio")]
    if pair:
        return [gr.Textbox(label="text", lines=3), gr.Textbox(label="second text of the pair", lines=3)]
    return [gr.Textbox(label="text", lines=3)]


def _outputs(gr: Any, predictor: Any) -> tuple[list[Any], Callable[[Any, list[dict[str, Any]]], Any]]:
    """The output components and how one Predictor answer (for input `x`) fills them."""
    task, problem = predictor.modality.task, predictor.problem
    if task == "token-classification":
        return [gr.HighlightedText(label="entities")], lambda x, preds: highlighted(x, preds)
    if task == "speech-recognition":
        return [gr.Textbox(label="transcript")], lambda x, preds: preds[0]["text"]
    if problem == "regression":
        return [gr.JSON(label="values")], lambda x, preds: regression_value(preds)
    if problem == "multi_label_classification":
        n = len(predictor.order)
        outs = [gr.Label(num_top_classes=n, label="every label's score"), gr.Textbox(label="over the run's threshold")]
        return outs, lambda x, preds: (label_value(preds), passing_labels(preds))
    return [gr.Label(num_top_classes=TOP_K, label="labels")], lambda x, preds: label_value(preds)


def _top_k(predictor: Any) -> int | None:
    """What to ask the Predictor for: the best TOP_K labels of a single-label run, else its own default."""
    if predictor.modality.label_shapes and predictor.problem not in ("multi_label_classification", "regression"):
        return min(TOP_K, len(predictor.order))
    return None


def build_app(run_dir: str | Path, onnx: str | Path | None = None, predictor: Any = None) -> Any:
    """The page as a `gr.Blocks`, not launched: the card's essentials, the task's inputs, and one endpoint
    named `predict` (what gradio_client calls).

    Example:
        >>> build_app("runs/bert-full").launch(server_name="127.0.0.1")   # doctest: +SKIP
    """
    gr = import_gradio()
    cfg, _ = load_run(run_dir)
    predictor = predictor or load_predictor(run_dir, onnx)
    pair = bool(getattr(cfg.data, "text_pair_column", None))
    top_k = _top_k(predictor)

    def predict(*values: Any) -> Any:
        if any(v is None or (isinstance(v, str) and not v.strip()) for v in values):
            raise gr.Error("give an input first")
        try:
            item = {"text": values[0], "text_pair": values[1]} if pair else predictor.modality.load_predict_input(values[0])
            preds = predictor([item], top_k)[0]
        except HftlError as e:  # an unreadable file: say why on the page, as hftl predict would
            raise gr.Error(str(e)) from e
        return fill(values[0], preds)

    # Named parameters for the API (gradio_client's `predict(text=..., text_pair=...)`, the page's "Use via API"):
    # gradio reads them from the signature, and from `*values` it could only make `param_0`, `param_1`.
    names = ["text", "text_pair"] if pair else [getattr(predictor.modality, "kind", None) or "text"]
    predict.__signature__ = inspect.Signature(  # type: ignore[attr-defined]
        [inspect.Parameter(name, inspect.Parameter.POSITIONAL_OR_KEYWORD) for name in names]
    )

    with gr.Blocks(title=f"hftl: {Path(run_dir).resolve().name}", analytics_enabled=False) as demo:
        gr.Markdown(card_markdown(run_dir, onnx is not None))
        with gr.Row():
            with gr.Column():
                inputs = _inputs(gr, predictor, pair)
                button = gr.Button("Predict", variant="primary")
            with gr.Column():
                outputs, fill = _outputs(gr, predictor)
        button.click(predict, inputs=inputs, outputs=outputs, api_name="predict")
    return demo


def launch(
    run_dir: str | Path,
    host: str = "127.0.0.1",
    port: int | None = None,
    share: bool = False,
    onnx: str | Path | None = None,
) -> None:
    """Serve the page until Ctrl-C, on `host:port` (127.0.0.1 and gradio's first free port from 7860 by
    default); a public share link only with `share=True`; `onnx` as in `load_predictor`.

    Example:
        >>> launch("runs/vit-lora", port=7861)   # doctest: +SKIP
    """
    demo = build_app(run_dir, onnx)
    demo.queue().launch(server_name=host, server_port=port, share=share, inbrowser=False, quiet=False)
