"""The paired bootstrap: intervals that cover a known difference at about the nominal rate, identical arms
indistinguishable, a real gap found with the right orientation, and folds/seeds pooled as the mean of per-set values."""

from __future__ import annotations

import numpy as np

from hftl.studies.paired import RESAMPLES, Scored, arm_interval, bootstrap, compare_arms, resample_counts


def table(correct: np.ndarray, labels: np.ndarray, classes: int = 3) -> dict:
    """A single-label per-example table whose predictions are right exactly where `correct` is."""
    wrong = (labels + 1) % classes
    return {"kind": "single_label", "prediction": np.where(correct, labels, wrong).tolist(), "reference": labels.tolist()}


def two_classifiers(rng: np.random.Generator, n: int, p_a: float, p_b: float) -> tuple[dict, dict]:
    """Correlated classifiers: a shared difficulty per example, so the pairing matters (as for two strategies)."""
    labels = rng.integers(0, 3, n)
    hard = rng.random(n)
    a = hard < p_a  # P(a right) = p_a
    b = np.where(rng.random(n) < 0.7, hard < p_b, rng.random(n) < p_b)  # P(b right) = p_b, mostly the same examples
    return table(a, labels), table(b, labels)


def test_resample_counts_draw_n_with_replacement():
    counts = resample_counts(50, 400, np.random.default_rng(0))
    assert counts.shape == (400, 50) and (counts.sum(axis=1) == 50).all()
    assert abs(counts.mean() - 1) < 1e-9 and 0.8 < counts.var() < 1.2  # multinomial(n, 1/n): variance about 1


def test_interval_covers_the_true_difference_at_about_the_nominal_rate():
    rng = np.random.default_rng(1)
    truth, covered, trials = 0.80 - 0.72, 0, 200
    for i in range(trials):
        a, b = two_classifiers(rng, 300, 0.80, 0.72)
        draws = bootstrap([Scored("a", "s", a), Scored("b", "s", b)], ["accuracy"], resamples=2000, seed=i)
        c = compare_arms(draws, "a", "b", "accuracy", lower_is_better=False)
        covered += c["ci_low"] <= truth <= c["ci_high"]
    assert 0.90 <= covered / trials <= 0.99, covered / trials  # nominal 0.95


def test_identical_arms_are_indistinguishable():
    a, _ = two_classifiers(np.random.default_rng(2), 200, 0.8, 0.8)
    draws = bootstrap([Scored("x", "seed 0", a), Scored("y", "seed 0", a)], ["accuracy", "f1"])
    assert draws.resamples == RESAMPLES == 10_000
    for metric in ("accuracy", "f1"):
        c = compare_arms(draws, "x", "y", metric, lower_is_better=False)
        assert c["verdict"] == "indistinguishable" and c["difference"] == 0 and c["ci_low"] == c["ci_high"] == 0
        assert c["p_value"] == 1.0


def test_a_real_gap_is_found_and_oriented():
    a, b = two_classifiers(np.random.default_rng(3), 200, 0.95, 0.55)
    draws = bootstrap([Scored("good", "s", a), Scored("bad", "s", b)], ["accuracy"], resamples=3000)
    c = compare_arms(draws, "good", "bad", "accuracy", lower_is_better=False)
    assert c["verdict"] == "a better" and c["ci_low"] > 0.2 and c["p_value"] < 0.01
    assert compare_arms(draws, "bad", "good", "accuracy", lower_is_better=False)["verdict"] == "b better"
    # An error rate: lower is better, so the arm with the larger value loses.
    assert compare_arms(draws, "good", "bad", "accuracy", lower_is_better=True)["verdict"] == "b better"
    point, low, high = arm_interval(draws, "good", "accuracy")
    assert low <= point <= high and high - low < 0.12


def test_sets_are_pooled_as_the_mean_of_per_set_values():
    rng = np.random.default_rng(4)
    a1, b1 = two_classifiers(rng, 120, 0.9, 0.6)
    a2, b2 = two_classifiers(rng, 80, 0.7, 0.7)  # another fold: other examples, another size
    scored = [Scored("a", "fold 0", a1), Scored("b", "fold 0", b1), Scored("a", "fold 1", a2), Scored("b", "fold 1", b2)]
    draws = bootstrap(scored, ["accuracy"], resamples=1000)
    acc = lambda t: float(np.mean(np.array(t["prediction"]) == np.array(t["reference"])))  # noqa: E731
    c = compare_arms(draws, "a", "b", "accuracy", lower_is_better=False)
    assert c["sets"] == 2
    assert abs(c["difference"] - ((acc(a1) - acc(b1)) + (acc(a2) - acc(b2))) / 2) < 1e-12
    # Pooled over both sets, the interval is narrower than fold 1's alone, which holds no real gap.
    alone = bootstrap([s for s in scored if s.block == "fold 1"], ["accuracy"], resamples=1000)
    c1 = compare_arms(alone, "a", "b", "accuracy", lower_is_better=False)
    assert c["ci_high"] - c["ci_low"] < c1["ci_high"] - c1["ci_low"]


def test_a_run_on_other_examples_is_left_out_with_the_reason():
    a, b = two_classifiers(np.random.default_rng(5), 100, 0.8, 0.7)
    short = {k: v[:90] if isinstance(v, list) else v for k, v in b.items()}
    draws = bootstrap([Scored("a", "s", a), Scored("b", "s", short)], ["accuracy"], resamples=100)
    assert draws.skipped == ["b (s): 90 examples, the others 100"]
    assert compare_arms(draws, "a", "b", "accuracy", lower_is_better=False) is None


def test_same_study_same_intervals():
    a, b = two_classifiers(np.random.default_rng(6), 150, 0.8, 0.75)
    runs = [Scored("a", "seed 1", a), Scored("b", "seed 1", b)]
    first = compare_arms(bootstrap(runs, ["f1"], resamples=500), "a", "b", "f1", False)
    again = compare_arms(bootstrap(runs[::-1], ["f1"], resamples=500), "a", "b", "f1", False)
    assert first == again
