"""The proxy A-distance (Ben-David et al. 2010): how well a linear classifier tells two domains' features apart.

A classifier is trained to say which domain an example comes from, and its error `err` on held-out examples
turns into `2 * (1 - 2 * err)`: 0 when it can do no better than a coin (the domains look alike), 2 when it is
never wrong (a linear boundary separates them). The two domains are first balanced (the larger subsampled to
the smaller's count), so a coin is the baseline whatever the sizes, then split into two stratified halves:
the classifier learns on one and is scored on the other.

The classifier is scikit-learn's L2 logistic regression rather than the paper's linear SVM: both draw a linear
boundary, which is all the distance is defined over, and they give nearly the same error; lbfgs converges
reliably on nearly separable high-dimensional features (liblinear's SVM warns and stops early there), and it is
what `hftl probe` fits too. Its regularisation C is picked by 3-fold cross-validation on the training half only:
choosing C on the held-out half, as is sometimes done, would bias the error low and the distance high.
Features are standardised on the training half, so the L2 penalty weighs every dimension alike.

Example:
    >>> rng = np.random.default_rng(0)
    >>> round(proxy_a_distance(rng.normal(size=(200, 4)), rng.normal(loc=4.0, size=(200, 4))), 1)
    2.0
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np

from hftl.utils.errors import HftlError

MIN_PER_DOMAIN = 10  # below this the held-out half is a handful of examples: the error is noise
C_GRID = (0.01, 0.1, 1.0, 10.0)  # inverse L2 strengths tried by cross-validation on the training half
FOLDS = 3


@dataclass(frozen=True)
class ADistance:
    """One measurement: the distance, the domain classifier's held-out error, how many examples it rests on,
    and the C cross-validation picked."""

    a_distance: float  # in [0, 2]
    error: float  # held-out error of the domain classifier, in [0, 1]
    per_domain: int  # examples of each domain after balancing
    held_out: int  # examples (both domains) the error was measured on
    c: float

    @property
    def uncertainty(self) -> float:
        """About one standard error of the distance: 4x the binomial standard error of `error` on `held_out`, the
        error taken as (mistakes + 1) / (held_out + 2) so that no mistakes on 40 examples is not read as certainty.

        Example:
            >>> round(ADistance(1.0, 0.25, 100, 100, 1.0).uncertainty, 3), round(ADistance(2.0, 0.0, 40, 40, 1.0).uncertainty, 3)
            (0.174, 0.096)
        """
        n = max(self.held_out, 1)
        p = (self.error * n + 1) / (n + 2)
        return 4.0 * float(np.sqrt(p * (1 - p) / n))


def proxy_a_distance(source: np.ndarray, target: np.ndarray, seed: int = 0) -> float:
    """The proxy A-distance between two domains' features (N x D and M x D), in [0, 2]; see the module doc.

    Example:
        >>> x = np.random.default_rng(1).normal(size=(300, 3))
        >>> proxy_a_distance(x[:150], x[150:]) < 0.5
        True
    """
    return measure_a_distance(source, target, seed).a_distance


def a_distance_from_error(error: float) -> float:
    """`2 * (1 - 2 * error)` clipped to [0, 2]: a classifier worse than a coin means no measured distance.

    Example:
        >>> a_distance_from_error(0.1), a_distance_from_error(0.6)
        (1.6, 0.0)
    """
    return float(np.clip(2.0 * (1.0 - 2.0 * error), 0.0, 2.0))


def measure_a_distance(source: np.ndarray, target: np.ndarray, seed: int = 0) -> ADistance:
    """The proxy A-distance with what it rests on (the held-out error, the counts, the chosen C). The same
    arrays and seed give the same result.

    Example:
        >>> rng = np.random.default_rng(0)
        >>> found = measure_a_distance(rng.normal(size=(500, 2)), rng.normal(size=(40, 2)))
        >>> found.per_domain, found.held_out
        (40, 40)
    """
    from sklearn.model_selection import train_test_split
    from sklearn.preprocessing import StandardScaler

    source, target = _checked(source, "source"), _checked(target, "target")
    if source.shape[1] != target.shape[1]:
        raise HftlError(
            f"the two domains' features differ in width ({source.shape[1]} and {target.shape[1]}): "
            "measure both with the same model and block"
        )
    if min(len(source), len(target)) < MIN_PER_DOMAIN:
        raise HftlError(
            f"the proxy A-distance needs at least {MIN_PER_DOMAIN} examples of each domain, got {len(source)} source "
            f"and {len(target)} target examples: give the smaller domain more (data.train, data.target)"
        )
    rng = np.random.default_rng(seed)
    count = min(len(source), len(target))
    source, target = (x[np.sort(rng.choice(len(x), count, replace=False))] for x in (source, target))
    x = np.concatenate([source, target]).astype(np.float64)
    y = np.r_[np.zeros(count, dtype=int), np.ones(count, dtype=int)]
    x_fit, x_test, y_fit, y_test = train_test_split(x, y, test_size=0.5, stratify=y, random_state=seed)
    scaler = StandardScaler().fit(x_fit)
    x_fit, x_test = scaler.transform(x_fit), scaler.transform(x_test)
    c = _pick_c(x_fit, y_fit, seed)
    error = float(np.mean(_fit(x_fit, y_fit, c).predict(x_test) != y_test))
    return ADistance(a_distance_from_error(error), error, count, len(y_test), c)


def _checked(x: np.ndarray, name: str) -> np.ndarray:
    x = np.asarray(x)
    x = x.reshape(len(x), -1) if x.ndim != 2 else x
    if not np.all(np.isfinite(x)):
        raise HftlError(
            f"the {name} features hold NaN or infinite values: the model's blocks overflow on these inputs "
            "(check the inputs, or run the model in float32)"
        )
    return x


def _fit(x: np.ndarray, y: np.ndarray, c: float):
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression

    with warnings.catch_warnings():
        # On separable domains the weights grow until max_iter; the boundary, and so the error, is settled long before.
        warnings.simplefilter("ignore", ConvergenceWarning)
        return LogisticRegression(C=c, max_iter=1000).fit(x, y)


def _pick_c(x: np.ndarray, y: np.ndarray, seed: int) -> float:
    """The C of `C_GRID` with the best cross-validated accuracy on the training half (ties: the stronger penalty)."""
    from sklearn.model_selection import StratifiedKFold

    folds = list(StratifiedKFold(n_splits=FOLDS, shuffle=True, random_state=seed).split(x, y))
    best, best_score = C_GRID[0], -1.0
    for c in C_GRID:
        score = float(np.mean([np.mean(_fit(x[a], y[a], c).predict(x[b]) == y[b]) for a, b in folds]))
        if score > best_score + 1e-12:
            best, best_score = c, score
    return best
