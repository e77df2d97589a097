"""`hftl app` for every task beyond single-label classification: the page answers as `hftl predict` does.

Each test trains a tiny run, builds the page in this process (`build_app`, what `hftl app` launches), serves it on
a free loopback port from a thread and calls its `predict` endpoint with gradio_client. The answer must be
`hftl predict`'s (the `Predictor`) for the same input, in the page's format: two text boxes for text pairs;
every label's score and those over the threshold for multi-label; the values for regression; the text cut into
highlighted entities for token classification; the transcript for speech recognition (CTC and Whisper).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from hftl.runs.app import build_app
from hftl.runs.inference import Predictor
from tests.audio_fixtures import one_thread as one_thread  # noqa: F401 - autouse: one torch thread
from tests.audio_fixtures import tiny_w2v as tiny_w2v  # noqa: F401 - pytest fixtures
from tests.audio_fixtures import tone_sequences as tone_sequences  # noqa: F401
from tests.conftest import require, run_cli
from tests.runs.run_fixtures import serving, text_case, train, whisper_case

APP_EXTRA = 'pip install -e ".[app]"'
require("gradio", APP_EXTRA)
client_module = require("gradio_client", APP_EXTRA)


@pytest.fixture(scope="module")
def runs(tiny_bert, tiny_w2v, tone_sequences, tmp_path_factory):  # noqa: F811
    """Builders of a tiny trained run and one input per kind (trained on first use)."""
    made: dict = {}

    def speech(kind: str) -> tuple[Path, str]:
        root = tmp_path_factory.mktemp(f"app-{kind}")
        if kind == "ctc":
            clip = sorted((tone_sequences.parent / "clips").glob("*.wav"))[0]
            # Long enough to hear letters (test_audio_training's recipe): a 1-epoch CTC head emits blanks only.
            learn = (
                "strategy=full",
                "train.epochs=6",
                "train.batch_size=4",
                "train.scheduler=constant",
                "train.learning_rate=2e-3",
                "train.head_learning_rate=1e-2",
                "train.load_best_at_end=false",
            )
            return train(root, "speech-recognition", tiny_w2v, tone_sequences, *learn), str(clip)
        return whisper_case(root)

    def get(kind: str) -> tuple[Path, str | tuple[str, str]]:
        if kind not in made:
            if kind in ("ctc", "whisper"):
                made[kind] = speech(kind)
            else:
                run, _, inputs = text_case(tmp_path_factory.mktemp(f"app-{kind}"), tiny_bert, kind)
                made[kind] = run, (tuple(inputs) if kind == "pairs" else inputs[1 if kind == "tokens" else 0])
        return made[kind]

    return get


def served_answer(run: Path, *values: str, **named: str) -> object:
    """What the page's `predict` endpoint answers for `values` (or `named` values), built and served in this process."""
    with serving(build_app(run)) as url:
        client = client_module.Client(url, verbose=False)
        values = tuple(client_module.handle_file(v) if v.endswith(".wav") else v for v in values)
        try:
            return client.predict(*values, **named, api_name="/predict")
        finally:
            client.close()  # its heartbeat stream would keep a connection to the closing server open


def cli_predictions(run: Path, item: str) -> list[dict]:
    """`hftl predict RUN ITEM --json`: the predictions for the one input."""
    return json.loads(run_cli("predict", str(run), item, "--json", in_process=True).stdout)[0]["predictions"]


def label_scores(got: dict) -> dict[str, float]:
    """gr.Label's value as gradio_client returns it, as {label: score}."""
    return {c["label"]: c["confidence"] for c in got["confidences"]}


def test_text_pairs_take_two_boxes_and_answer_as_the_predictor(runs):
    run, (text, pair) = runs("pairs")
    predictor = Predictor(run)
    expected = predictor([{"text": text, "text_pair": pair}], top_k=len(predictor.order))[0]
    got = served_answer(run, text_pair=pair, text=text)  # the API names its two inputs
    assert served_answer(run, text, pair) == got  # and takes them in the page's order
    assert [c["label"] for c in got["confidences"]] == [p["label"] for p in expected]
    assert list(label_scores(got).values()) == pytest.approx([p["score"] for p in expected], abs=1e-6)
    assert got["label"] == expected[0]["label"]
    alone = predictor([text], top_k=len(predictor.order))[0]  # the second box is read: without it, other scores
    assert [p["score"] for p in alone] != pytest.approx([p["score"] for p in expected], abs=1e-6)


def test_multi_label_shows_every_score_and_those_over_the_threshold(runs):
    run, item = runs("multi-label")
    expected = cli_predictions(run, item)  # every label, best first, with `predicted`
    scores, passing = served_answer(run, item)
    assert [c["label"] for c in scores["confidences"]] == [p["label"] for p in expected]
    assert list(label_scores(scores).values()) == pytest.approx([p["score"] for p in expected], abs=1e-6)
    over = [p["label"] for p in expected if p["predicted"]]
    assert passing == (", ".join(over) if over else "(none reaches the threshold)")


def test_regression_shows_each_target_value(runs):
    run, item = runs("regression")
    expected = cli_predictions(run, item)
    got = served_answer(run, item)
    assert list(got) == [p["label"] for p in expected]
    assert list(got.values()) == pytest.approx([p["value"] for p in expected], abs=1e-6)


def test_token_classification_highlights_the_entities_in_the_text(runs):
    run, item = runs("tokens")
    entities = cli_predictions(run, item)
    got = served_answer(run, item)
    assert "".join(piece["token"] for piece in got) == item  # the whole text, cut into pieces
    marked = [(piece["token"], piece["class_or_confidence"]) for piece in got if piece["class_or_confidence"] is not None]
    assert entities and marked == [(item[e["start"] : e["end"]], e["entity_group"]) for e in entities]


def test_ctc_speech_recognition_shows_the_transcript(runs):
    run, clip = runs("ctc")
    expected = cli_predictions(run, clip)
    assert expected[0]["text"].strip()  # a transcript, not the blank-only output of an untrained head
    assert served_answer(run, clip) == expected[0]["text"]


def test_whisper_speech_recognition_shows_the_transcript(runs):
    run, clip = runs("whisper")
    expected = cli_predictions(run, clip)  # 1 epoch: bytes rather than words, but generated alike on both sides
    assert expected[0]["text"]
    assert served_answer(run, clip) == expected[0]["text"]
