"""What a study's paired bootstrap costs as the validation set grows: 10,000 resamples, every arm scored on the
same draws, all pairs compared (what `hftl compare` adds to a study's report).

    python benchmarks/bootstrap_cost.py --sizes 500,5000,50000 --arms 5

Prints one line per size: seconds for the bootstrap of every arm's metrics and all pairs' comparisons.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from hftl.studies.paired import Scored, all_comparisons, bootstrap


def one_size(n: int, arms: int, classes: int, metrics: list[str]) -> float:
    rng = np.random.default_rng(n)
    truth = rng.integers(0, classes, n)
    scored = []
    for a in range(arms):
        right = rng.random(n) < 0.6 + 0.05 * a
        prediction = np.where(right, truth, (truth + 1) % classes)
        scored.append(Scored(f"arm-{a}", "seed 42", {"kind": "single_label", "prediction": prediction.tolist(),
                                                       "reference": truth.tolist()}))  # fmt: skip
    start = time.perf_counter()
    draws = bootstrap(scored, metrics)
    all_comparisons(draws, [s.arm for s in scored], metrics[0], lower_is_better=False)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="500,5000,50000")
    parser.add_argument("--arms", type=int, default=5)
    parser.add_argument("--classes", type=int, default=10)
    args = parser.parse_args()
    metrics = ["f1", "accuracy", "precision", "recall"]
    for n in (int(s) for s in args.sizes.split(",")):
        seconds = one_size(n, args.arms, args.classes, metrics)
        print(f"{n:>7} validation examples x {args.arms} arms x {len(metrics)} metrics, 10,000 resamples: {seconds:.2f} s")


if __name__ == "__main__":
    main()
