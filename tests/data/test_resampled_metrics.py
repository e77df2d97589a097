"""Every evaluator's example table, and its metrics under resampling weights: a row of ones gives what the
evaluator's `compute` gives, and the counts of a resample give `compute` on the resampled lists."""

from __future__ import annotations

import json

import numpy as np
import pytest

from hftl.data import resampled_metrics
from hftl.data.label_metrics import MultiLabelEvaluator, RegressionEvaluator, evaluator_for
from hftl.data.labels import LabelSpace
from hftl.data.metrics import IGNORE, Evaluator, TokenClassificationEvaluator
from hftl.data.modalities.speech import CTCEvaluator, build_tokenizer, build_vocab, error_counts, error_rates
from hftl.data.modalities.speech_seq2seq import Seq2SeqEvaluator
from hftl.data.resampled_metrics import examples, metric_names, metrics_under_weights
from tests.whisper_fixtures import whisper_tokenizer

WORDS = ["a", "cat", "sat", "on", "the", "mat", "bat", "cab"]


def resamples(n: int, draws: int, seed: int) -> list[np.ndarray]:
    """The data itself, then `draws` bootstrap resamples (indices drawn with replacement)."""
    rng = np.random.default_rng(seed)
    return [np.arange(n), *(rng.integers(0, n, n) for _ in range(draws))]


def check(evaluator: Evaluator, preds: list, refs: list, draws: int = 5, seed: int = 0, tol: float = 1e-9) -> dict:
    """Table -> JSON -> metrics under the resamples' count weights == compute on the resampled lists."""
    table = json.loads(json.dumps(evaluator.example_table(preds, refs)))
    n = examples(table)
    assert n == len(refs)
    picks = resamples(n, draws, seed)
    got = metrics_under_weights(table, np.stack([np.bincount(i, minlength=n) for i in picks]))
    for b, pick in enumerate(picks):
        want = evaluator.compute([preds[i] for i in pick], [refs[i] for i in pick])
        assert metric_names(table) == [k for k in want if k != "loss"]
        for name in metric_names(table):
            assert got[name][b] == pytest.approx(want[name], rel=tol, abs=tol), (name, b)
    return table


def test_single_label_with_a_rare_class_and_one_only_predicted():
    rng = np.random.default_rng(1)
    refs = rng.choice([0, 1, 2, 3], size=150, p=[0.4, 0.3, 0.2, 0.1]).tolist() + [4]  # class 4: one example
    preds = [r if rng.random() < 0.6 else int(rng.integers(0, 4)) for r in refs]
    preds[7] = 6  # a class only ever predicted
    table = check(evaluator_for(LabelSpace("single_label", list("abcdefg"))), preds, refs, draws=6)
    assert table.keys() == {"kind", "prediction", "reference"} and table["kind"] == "single_label"


@pytest.mark.parametrize("mode", ["auto", "per_label", 0.35])
def test_multi_label_with_tied_scores_and_a_rare_label(mode):
    rng = np.random.default_rng(2)
    truth = (rng.random((90, 4)) < [0.5, 0.3, 0.1, 0.0]).astype(int)
    truth[5, 3] = 1  # label 3: one positive, absent from many resamples
    # float32 sigmoids with two decimals: many tied scores, across positives and negatives alike
    scores = np.clip(0.5 * truth + rng.random(truth.shape) * 0.6, 0, 1).round(2).astype(np.float32)
    preds, refs = scores.tolist(), truth.tolist()
    evaluator = evaluator_for(LabelSpace("multi_label", list("wxyz")), mode)
    evaluator.calibrate(preds, refs)
    table = check(evaluator, preds, refs, draws=6)
    assert table.keys() == {"kind", "threshold", "decided", "truth", "scores"}
    assert table["scores"][0] == [float(str(np.float32(s))) for s in scores[0]]  # the short decimals


def test_multi_label_with_one_label_is_scored_as_sklearn_scores_binary():
    rng = np.random.default_rng(3)
    truth = (rng.random((40, 1)) < 0.2).astype(int)
    scores = (0.4 * truth + rng.random(truth.shape) * 0.7).round(1)
    check(MultiLabelEvaluator(["only"], 0.5), scores.tolist(), truth.tolist(), draws=8)


def test_average_precision_reads_tied_scores_as_one_threshold():
    from sklearn.metrics import average_precision_score

    scores, truth = [0.9, 0.8, 0.8, 0.8, 0.3, 0.3], [1, 0, 1, 1, 0, 1]
    table = {
        "kind": "multi_label",
        "threshold": 0.5,
        "decided": [[1]] * 6,
        "truth": [[t] for t in truth],
        "scores": [[s] for s in scores],
    }
    weights = np.array([[1, 1, 1, 1, 1, 1], [2, 0, 1, 3, 1, 1], [0, 2, 1, 0, 1, 0]])
    got = metrics_under_weights(table, weights)["mean_average_precision"]
    for row, value in zip(weights, got):
        rows = np.repeat(np.arange(6), row)
        assert value == pytest.approx(average_precision_score(np.asarray(truth)[rows], np.asarray(scores)[rows]), abs=1e-12)


def test_regression_in_units_with_ties_over_two_targets():
    rng = np.random.default_rng(4)
    true = np.column_stack([rng.normal(50, 10, 80).round(0), rng.normal(-3, 0.5, 80).round(1)])  # tied targets
    z = (true - [48, -3.1]) / [11, 0.6] + rng.normal(0, 0.4, true.shape)
    z[:10] = z[0]  # tied predictions
    space = LabelSpace("regression", ["t1", "t2"], mean=[48.0, -3.1], std=[11.0, 0.6])
    table = check(evaluator_for(space), z.astype(np.float32).tolist(), true.tolist(), draws=6)
    assert table.keys() == {"kind", "prediction", "truth"} and np.shape(table["prediction"]) == (80, 2)


def test_regression_edge_cases_say_what_the_evaluator_says():
    """One example, a constant truth (r2 0.0, or 1.0 when exact), a constant prediction: as compute has them."""
    evaluator = RegressionEvaluator(["y"], None, None)
    preds, refs = [[1.0], [2.0], [2.0], [4.0]], [[2.0], [2.0], [2.0], [5.0]]
    table = evaluator.example_table(preds, refs)
    weights = np.array([[1, 0, 0, 0], [3, 0, 0, 0], [0, 2, 1, 0], [1, 1, 0, 0], [0, 1, 1, 1], [0, 0, 0, 2]])
    got = metrics_under_weights(table, weights)
    for b, row in enumerate(weights):
        rows = np.repeat(np.arange(4), row)
        want = evaluator.compute([preds[i] for i in rows], [refs[i] for i in rows])
        assert {k: got[k][b] for k in want} == pytest.approx(want, abs=1e-12), b


@pytest.mark.parametrize("names", [["O", "B-PER", "I-PER", "B-LOC", "I-LOC"], ["O", "PER", "LOC"]])
def test_token_classification_entities_and_tokens(names):
    rng = np.random.default_rng(5)
    evaluator = TokenClassificationEvaluator(names)
    preds, refs = [], []
    for _ in range(60):
        length = int(rng.integers(0, 12))
        ref = rng.choice(len(names), size=length, p=[0.5, *[0.5 / (len(names) - 1)] * (len(names) - 1)])
        pred = np.where(rng.random(length) < 0.75, ref, rng.integers(0, len(names) + 1, length))  # + an id past the tags
        ignored = rng.random(length) < 0.2  # later sub-words and special tokens
        refs.append(np.where(ignored, IGNORE, ref).tolist() + [IGNORE] * 2)
        preds.append(pred.tolist() + [0, 0])
    table = check(evaluator, preds, refs, draws=5)
    assert table.keys() == {"kind", "true_positives", "predicted", "actual", "correct", "tokens"}


def _sentence(rng: np.random.Generator) -> str:
    return " ".join(rng.choice(WORDS, size=int(rng.integers(1, 6))))


def _misheard(rng: np.random.Generator, text: str) -> str:
    words = [w for w in text.split() if rng.random() > 0.15]  # deletions
    words = [str(rng.choice(WORDS)) if rng.random() < 0.2 else w for w in words]  # substitutions
    return " ".join(words + ([str(rng.choice(WORDS))] if rng.random() < 0.2 else []))  # insertions


def test_ctc_word_and_character_errors():
    rng = np.random.default_rng(6)
    tokenizer = build_tokenizer(build_vocab(WORDS))
    blank = tokenizer.pad_token_id
    refs, preds = [], []
    for _ in range(50):
        text = _sentence(rng)
        refs.append(tokenizer(text).input_ids + [IGNORE] * int(rng.integers(0, 3)))
        frames = []
        for token in tokenizer(_misheard(rng, text)).input_ids:  # CTC frames: repeats, and blanks between
            frames += [token] * int(rng.integers(1, 3)) + [blank] * int(rng.integers(0, 2))
        preds.append(frames + [IGNORE] * 3)
    preds[0] = [blank, blank, IGNORE]  # nothing heard
    table = check(CTCEvaluator(tokenizer), preds, refs, draws=5)
    assert table.keys() == {"kind", "word_errors", "words", "char_errors", "chars"}


def test_seq2seq_word_and_character_errors():
    rng = np.random.default_rng(7)
    tokenizer = whisper_tokenizer()
    refs, preds = [], []
    for _ in range(40):
        text = _sentence(rng)
        refs.append(tokenizer(text.capitalize()).input_ids[1:] + [IGNORE] * 2)  # normalised before scoring
        preds.append(tokenizer(_misheard(rng, text)).input_ids[1:] + [IGNORE])
    check(Seq2SeqEvaluator(tokenizer, {}), preds, refs, draws=5)


def test_error_rates_of_empty_references_are_jiwers_counts():
    preds, refs = ["a cat", "x", "the mat"], ["", "", "a mat"]
    table = {"kind": "speech", **error_counts(preds, refs)}
    weights = np.array([[1, 1, 1], [2, 1, 0], [0, 0, 2], [0, 0, 0]])
    got = metrics_under_weights(table, weights)
    for b, row in enumerate(weights):
        rows = np.repeat(np.arange(3), row)
        want = error_rates([preds[i] for i in rows], [refs[i] for i in rows])
        assert {k: got[k][b] for k in want} == pytest.approx(want), b


def test_chunks_over_resamples_change_nothing(monkeypatch):
    rng = np.random.default_rng(8)
    truth = (rng.random((30, 3)) < 0.4).astype(int)
    evaluator = MultiLabelEvaluator(list("abc"), 0.5)
    table = evaluator.example_table(rng.random((30, 3)).round(1).tolist(), truth.tolist())
    weights = rng.multinomial(30, [1 / 30] * 30, size=25)
    whole = metrics_under_weights(table, weights)
    monkeypatch.setattr(resampled_metrics, "BLOCK", 70)  # two resamples a chunk
    chunked = metrics_under_weights(table, weights)
    assert all(np.array_equal(whole[k], chunked[k]) and whole[k].shape == (25,) for k in whole)


def test_weights_of_the_wrong_shape_or_sign_are_refused():
    table = {"kind": "single_label", "prediction": [0, 1], "reference": [1, 1]}
    with pytest.raises(ValueError, match="one column per example"):
        metrics_under_weights(table, np.ones((3, 5)))
    with pytest.raises(ValueError, match="negative"):
        metrics_under_weights(table, np.array([[1, -1]]))
    with pytest.raises(ValueError, match="unknown example table kind"):
        metric_names({"kind": "ranking"})
    assert metrics_under_weights(table, np.zeros((0, 2), dtype=int))["f1"].shape == (0,)
