"""LogME: how well frozen features explain the labels, without training (You et al., ICML 2021).

For each target column y (a class's one-hot column, or a regression target) LogME fits a Bayesian
linear model y ~ N(f w, 1/beta), w ~ N(0, 1/alpha) by evidence maximisation (MacKay's fixed-point
updates of alpha and beta) and reports the log marginal likelihood per example, averaged over the
columns. Higher is better; it ranks pretrained models by how well they will transfer, in seconds,
where fine-tuning each would take hours. This follows the paper's reference implementation
(github.com/thuml/LogME, `LogME._fit_icml`), with its D x D decomposition, so it costs O(N D^2) and
never an N x N matrix.

Example:
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> labels = rng.integers(0, 2, 200)
    >>> informative = np.c_[labels + 0.1 * rng.normal(size=200), rng.normal(size=(200, 3))]
    >>> noise = rng.normal(size=(200, 4))
    >>> logme(informative, labels) > logme(noise, labels)
    True
"""

from __future__ import annotations

import numpy as np

EPSILON = 1e-5
MAX_ITERATIONS = 11  # the reference implementation's; the fixed point settles within a few


def logme(features: np.ndarray, labels: np.ndarray, regression: bool = False) -> float:
    """LogME of `features` (N x D) for `labels`: class ids (N,), or targets (N,) / (N, T) when `regression`.

    Example:
        >>> logme(np.eye(4), np.array([0, 1, 0, 1])) < 0
        True
    """
    f = np.asarray(features, dtype=np.float64)
    if f.ndim != 2 or len(f) != len(labels):
        raise ValueError(f"features must be N x D with N = {len(labels)} labels; got shape {f.shape}")
    if regression:
        targets = np.asarray(labels, dtype=np.float64).reshape(len(f), -1)
    else:
        ids = np.asarray(labels, dtype=np.int64)
        targets = (ids[:, None] == np.unique(ids)[None, :]).astype(np.float64)  # one column per class present
    n, d = f.shape
    v, s, vh = np.linalg.svd(f.T @ f, full_matrices=True)  # eigenpairs of the D x D Gram matrix
    evidences = [_evidence(f, targets[:, k], v, s, vh, n, d) for k in range(targets.shape[1])]
    return float(np.mean(evidences))


def _evidence(f: np.ndarray, y: np.ndarray, v: np.ndarray, s: np.ndarray, vh: np.ndarray, n: int, d: int) -> float:
    """Log evidence per example of one target column at the fixed point of alpha and beta."""
    alpha, beta = 1.0, 1.0
    lam = alpha / beta
    projected = vh @ (f.T @ y)
    for _ in range(MAX_ITERATIONS):
        gamma = (s / (s + lam)).sum()  # effective number of parameters
        m = v @ (projected * beta / (alpha + beta * s))  # posterior mean of the weights
        alpha_de = (m * m).sum()
        alpha = gamma / (alpha_de + EPSILON)
        beta_de = ((y - f @ m) ** 2).sum()
        beta = (n - gamma) / (beta_de + EPSILON)
        new_lam = alpha / beta
        if abs(new_lam - lam) / lam < 0.01:
            break
        lam = new_lam
    evidence = (
        d / 2.0 * np.log(alpha)
        + n / 2.0 * np.log(beta)
        - 0.5 * np.sum(np.log(alpha + beta * s))
        - beta / 2.0 * (beta_de + EPSILON)
        - alpha / 2.0 * (alpha_de + EPSILON)
        - n / 2.0 * np.log(2 * np.pi)
    )
    return float(evidence / n)
