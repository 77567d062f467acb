"""Time the greedy leader clustering on random and on clustered 384-d unit vectors.

    python benchmarks/cluster.py [--sizes 10000 100000] [--threshold 0.5] [--block 1024]

Random vectors are the worst case: no two are closer than the threshold, so every item opens its
own cluster and all n**2 / 2 similarities are computed. Clustered vectors (points scattered around
2,000 directions, as real strategy phrases fall around common moves) are the realistic case.
Prints one line per run: kind, n, seconds, clusters.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from induction.cluster import greedy_cluster  # noqa: E402

DIM = 384


def random_vectors(n: int, rng: np.random.Generator) -> np.ndarray:
    """Return n unit vectors drawn uniformly on the sphere."""
    x = rng.standard_normal((n, DIM), dtype=np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def clustered_vectors(n: int, rng: np.random.Generator, directions: int = 2000) -> np.ndarray:
    """Return n unit vectors scattered around `directions` random directions (cosine ~0.9)."""
    centres = random_vectors(directions, rng)
    x = centres[rng.integers(0, directions, n)] + 0.5 * random_vectors(n, rng)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def main() -> None:
    """Cluster each size of each kind once and print the timings."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000])
    parser.add_argument("--threshold", type=float, default=0.5)
    parser.add_argument("--block", type=int, default=1024)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    for kind, make in (("random", random_vectors), ("clustered", clustered_vectors)):
        for n in args.sizes:
            vectors = make(n, rng)
            started = time.perf_counter()
            clustering = greedy_cluster(vectors, args.threshold, args.block)
            seconds = time.perf_counter() - started
            print(f"{kind:9} n={n:>7}  {seconds:7.2f} s  clusters={clustering.count}")


if __name__ == "__main__":
    main()
