"""The proxy A-distance: ~0 for one distribution, ~2 for separated ones, in between for a partial shift, the same
for the same seed, and a clear refusal of too few examples."""

from __future__ import annotations

import numpy as np
import pytest

from hftl.adapt.a_distance import MIN_PER_DOMAIN, a_distance_from_error, measure_a_distance, proxy_a_distance
from hftl.utils.errors import HftlError


def gaussians(shift: float, n: int = 400, m: int = 400, dims: int = 10, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, dims)), rng.normal(loc=shift, size=(m, dims))


def test_one_distribution_is_near_zero_and_separated_ones_near_two():
    assert proxy_a_distance(*gaussians(0.0)) < 0.3
    assert proxy_a_distance(*gaussians(5.0)) > 1.8


def test_a_partial_shift_falls_in_between():
    # Means 0.5 apart in each of 10 dimensions: 1.58 standard deviations along the line between them, so the best
    # linear boundary errs on Phi(-0.79) = 21% and the distance is about 2 * (1 - 0.43) = 1.14.
    found = measure_a_distance(*gaussians(0.5))
    assert 0.7 < found.a_distance < 1.6
    assert found.a_distance == pytest.approx(a_distance_from_error(found.error))
    assert 0.1 < found.error < 0.35 and found.uncertainty < 0.3


def test_the_same_seed_gives_the_same_distance_and_the_larger_domain_is_subsampled():
    source, target = gaussians(0.3, n=1000, m=60)
    first = measure_a_distance(source, target, seed=3)
    assert first == measure_a_distance(source, target, seed=3)
    assert first.per_domain == 60 and first.held_out == 60  # balanced to the smaller domain, half held out
    assert 0.0 <= measure_a_distance(source, target, seed=4).a_distance <= 2.0


def test_too_few_examples_or_mismatched_features_are_refused():
    source, target = gaussians(1.0, m=MIN_PER_DOMAIN - 1)
    with pytest.raises(HftlError, match=r"at least 10 examples of each domain, got 400 source and 9 target"):
        proxy_a_distance(source, target)
    with pytest.raises(HftlError, match="differ in width"):
        proxy_a_distance(source, target[:, :3])
    target = np.full((20, 10), np.nan)
    with pytest.raises(HftlError, match="NaN"):
        proxy_a_distance(source, target)
    assert proxy_a_distance(*gaussians(4.0, n=MIN_PER_DOMAIN, m=MIN_PER_DOMAIN)) >= 0.0  # the minimum itself works
