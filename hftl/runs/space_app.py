"""The `app.py` of a Space that `hftl push --space` writes: a Gradio page over a model repo on the Hub.

This file is copied into the Space as it is and runs there without hftl (hftl is not on PyPI): it imports
only gradio, transformers and what the task's inputs need, and reads what it serves from `space.json` beside
it (the model repo id, the pipeline task, whether the run took text pairs, the card's essentials). It answers
as `hftl app` does: the same inputs and outputs per task, one endpoint named `predict`, no analytics.
`MODEL_ID` in the environment (a Space variable) overrides the model repo.

Example (in the Space folder):
    $ python app.py                          # serves on 127.0.0.1:7860
    >>> import app; app.predict("a wonderful film")   # doctest: +SKIP
    {'pos': 0.97, 'neg': 0.03}
"""

from __future__ import annotations

import inspect
import json
import os
from pathlib import Path
from typing import Any

# Set before gradio is imported (it reads them at import): no usage analytics, no Hub telemetry.
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")

SETTINGS = json.loads((Path(__file__).resolve().parent / "space.json").read_text())
MODEL_ID = os.environ.get("MODEL_ID") or SETTINGS["model"]
TASK = SETTINGS["task"]  # the transformers pipeline task
TOP_K = 10  # labels shown with their scores for single-label models, as in `hftl app`

_pipe: Any = None


def pipe() -> Any:
    """The model's pipeline, loaded on first use (so importing this file stays cheap)."""
    global _pipe
    if _pipe is None:
        from transformers import pipeline

        _pipe = pipeline(TASK, model=MODEL_ID)
    return _pipe


def _audio(path: str) -> dict[str, Any]:
    """Mono float32 samples at the model's rate (soxr resamples: the pipelines would need torchaudio)."""
    import soundfile
    import soxr

    data, rate = soundfile.read(path, dtype="float32", always_2d=True)
    samples, target = data.mean(axis=1), pipe().feature_extractor.sampling_rate
    if rate != target:
        samples = soxr.resample(samples, rate, target, quality="HQ").astype("float32")
    return {"raw": samples, "sampling_rate": target}


def _highlighted(text: str, entities: list[dict[str, Any]]) -> list[tuple[str, str | None]]:
    """The text cut into (piece, entity or None), as `gr.HighlightedText` takes it; overlaps keep the first."""
    pieces: list[tuple[str, str | None]] = []
    at = 0
    for e in sorted(entities, key=lambda e: e["start"]):
        if e["start"] < at:
            continue
        if e["start"] > at:
            pieces.append((text[at : e["start"]], None))
        pieces.append((text[e["start"] : e["end"]], e["entity_group"]))
        at = e["end"]
    if at < len(text):
        pieces.append((text[at:], None))
    return pieces


def _labels(x: Any) -> Any:
    """Labels with scores (single-label), every score and those over the threshold (multi-label), or values."""
    config, problem = pipe().model.config, SETTINGS.get("problem")
    n = len(config.id2label)
    out = pipe()(x, top_k=n if problem in ("multi_label_classification", "regression") else min(TOP_K, n))
    out = out if isinstance(out, list) else [out]
    if problem == "regression":  # one output per target, in the model's label order
        order = {name: i for i, name in config.id2label.items()}
        return {o["label"]: float(o["score"]) for o in sorted(out, key=lambda o: order[o["label"]])}
    scores = {o["label"]: float(o["score"]) for o in out}
    if problem != "multi_label_classification":
        return scores
    threshold = getattr(config, "decision_threshold", 0.5)  # the run's own, kept in config.json
    order = {name: i for i, name in config.id2label.items()}
    passing = [k for k, s in scores.items() if s >= (threshold[order[k]] if isinstance(threshold, list) else threshold)]
    return scores, ", ".join(passing) or "(none reaches the threshold)"


def predict(*values: Any) -> Any:
    """One input (two texts for a text-pair model) in, what the page shows out.

    Example:
        >>> predict("a wonderful film")   # doctest: +SKIP
        {'pos': 0.97, 'neg': 0.03}
    """
    if not values or any(v is None or (isinstance(v, str) and not v.strip()) for v in values):
        raise ValueError("give an input first")
    x = values[0]
    if TASK == "token-classification":
        return _highlighted(x, pipe()(x, aggregation_strategy="simple"))
    if TASK in ("automatic-speech-recognition", "audio-classification"):
        x = _audio(x)
        if TASK == "automatic-speech-recognition":
            return pipe()(x)["text"]
    elif SETTINGS.get("text_pair"):
        x = {"text": values[0], "text_pair": values[1]}
    return _labels(x)


def _inputs(gr: Any) -> list[Any]:
    """The task's input components, as `hftl app` shows them."""
    if TASK.startswith("image"):
        return [gr.Image(type="filepath", image_mode=None, label="image")]
    if TASK in ("automatic-speech-recognition", "audio-classification"):
        return [gr.Audio(sources=["upload", "microphone"], type="filepath", label="audio")]
    if SETTINGS.get("text_pair"):
        return [gr.Textbox(label="text", lines=3), gr.Textbox(label="second text of the pair", lines=3)]
    return [gr.Textbox(label="text", lines=3)]


def _outputs(gr: Any) -> list[Any]:
    """The task's output components, as `hftl app` shows them."""
    if TASK == "token-classification":
        return [gr.HighlightedText(label="entities")]
    if TASK == "automatic-speech-recognition":
        return [gr.Textbox(label="transcript")]
    if SETTINGS.get("problem") == "regression":
        return [gr.JSON(label="values")]
    if SETTINGS.get("problem") == "multi_label_classification":
        return [gr.Label(label="every label's score"), gr.Textbox(label="over the run's threshold")]
    return [gr.Label(num_top_classes=TOP_K, label="labels")]


def build() -> Any:
    """The page: the card's essentials, the task's inputs, one endpoint named `predict`."""
    import gradio as gr

    def answer(*values: Any) -> Any:
        try:
            return predict(*values)
        except ValueError as e:  # an empty input: say so on the page
            raise gr.Error(str(e)) from e

    # Named API parameters (`client.predict(text=..., api_name="/predict")`): gradio reads them from the signature,
    # and from `*values` it could only make `param_0`, `param_1`.
    audio = TASK in ("automatic-speech-recognition", "audio-classification")
    kind = "image" if TASK.startswith("image") else "audio" if audio else "text"
    names = ["text", "text_pair"] if SETTINGS.get("text_pair") else [kind]
    answer.__signature__ = inspect.Signature(  # type: ignore[attr-defined]
        [inspect.Parameter(name, inspect.Parameter.POSITIONAL_OR_KEYWORD) for name in names]
    )

    with gr.Blocks(title=SETTINGS.get("title", MODEL_ID), analytics_enabled=False) as demo:
        gr.Markdown(SETTINGS.get("card", f"# {MODEL_ID}"))
        with gr.Row():
            with gr.Column():
                inputs = _inputs(gr)
                button = gr.Button("Predict", variant="primary")
            with gr.Column():
                outputs = _outputs(gr)
        button.click(answer, inputs=inputs, outputs=outputs, api_name="predict")
    return demo


if __name__ == "__main__":
    build().queue().launch()
