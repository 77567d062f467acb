"""Distances between the distribution of generated instructions and real users' follow-ups.

Both take optional weights per generated item, one row per bootstrap resample, so the distance
can be bootstrapped over dialogues without recomputing kernels. The real sample stays fixed.

- Length: the 1-D Wasserstein distance W1 between the two empirical distributions of word
  counts, the area between their CDFs (in words).
- Embeddings: the maximum mean discrepancy (MMD) with a Gaussian RBF kernel, the biased
  (V-statistic) estimate between the two weighted empirical distributions, reported as
  `sqrt(max(MMD^2, 0))`. It is 0 for identical samples. We picked MMD over the Frechet distance:
  it needs no covariance matrix, which is singular with fewer samples than dimensions.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def wasserstein_1d(
    values: Sequence[float], reference: Sequence[float], weights: np.ndarray | None = None
) -> np.ndarray:
    """W1 distance between weighted `values` and unweighted `reference`, per weight row.

    Args:
        values: The generated sample (N values).
        reference: The real sample.
        weights: `(R, N)` weights of `values`; None means one row of ones.

    Returns:
        `(R,)` distances; NaN where a row's weights sum to zero or a sample is empty.
    """
    x, y = np.asarray(values, dtype=float), np.sort(np.asarray(reference, dtype=float))
    w = np.ones((1, len(x))) if weights is None else np.asarray(weights, dtype=float)
    if len(x) == 0 or len(y) == 0:
        return np.full(len(w), np.nan)
    order = np.argsort(x, kind="stable")
    x, w = x[order], w[:, order]
    grid = np.unique(np.concatenate([x, y]))
    total = w.sum(axis=1)
    cumulative = np.concatenate([np.zeros((len(w), 1)), np.cumsum(w, axis=1)], axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        cdf_x = cumulative[:, np.searchsorted(x, grid, side="right")] / total[:, None]
    cdf_y = np.searchsorted(y, grid, side="right") / len(y)
    gaps = np.diff(grid)
    return np.abs(cdf_x[:, :-1] - cdf_y[:-1]) @ gaps


def rbf_kernel(a: np.ndarray, b: np.ndarray, bandwidth: float) -> np.ndarray:
    """Return exp(-||a_i - b_j||^2 / (2 bandwidth^2)) for every pair of rows."""
    return np.exp(-squared_distances(a, b) / (2 * bandwidth**2))


def squared_distances(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Return ||a_i - b_j||^2 for every pair of rows (clipped at 0 against rounding)."""
    squared = (a * a).sum(1)[:, None] + (b * b).sum(1)[None, :] - 2 * a @ b.T
    return np.clip(squared, 0, None)


def median_bandwidth(vectors: np.ndarray, most: int = 1000) -> float:
    """The median heuristic: median Euclidean distance between rows (1.0 if undefined).

    Above `most` rows, a fixed random subset of `most` rows is used (seed 0).
    """
    if len(vectors) < 2:
        return 1.0
    if len(vectors) > most:
        vectors = vectors[np.random.default_rng(0).choice(len(vectors), most, replace=False)]
    distances = np.sqrt(squared_distances(vectors, vectors))
    upper = distances[np.triu_indices(len(vectors), k=1)]
    median = float(np.median(upper))
    return median if median > 0 else 1.0


class MMD:
    """MMD between weighted generated embeddings and fixed real ones, kernels computed once.

    Args:
        generated: `(N, d)` embeddings of generated instructions.
        reference: `(M, d)` embeddings of real follow-ups.
        bandwidth: RBF bandwidth; the median heuristic on `reference` when None.
    """

    def __init__(
        self, generated: np.ndarray, reference: np.ndarray, bandwidth: float | None = None
    ) -> None:
        self.bandwidth = median_bandwidth(reference) if bandwidth is None else bandwidth
        gen, ref = np.asarray(generated, dtype=float), np.asarray(reference, dtype=float)
        self.empty = len(gen) == 0 or len(ref) == 0
        if self.empty:
            return
        self.k_gg = rbf_kernel(gen, gen, self.bandwidth)
        self.k_gr = rbf_kernel(gen, ref, self.bandwidth).mean(axis=1)
        blocks = (
            rbf_kernel(ref[i : i + 1024], ref, self.bandwidth) for i in range(0, len(ref), 1024)
        )
        self.k_rr = float(sum(block.sum() for block in blocks) / len(ref) ** 2)

    def __call__(self, weights: np.ndarray | None = None) -> np.ndarray:
        """Return `(R,)` MMDs for `(R, N)` weights of the generated rows (None: all ones)."""
        if self.empty:
            return np.full(1 if weights is None else len(weights), np.nan)
        w = np.ones((1, len(self.k_gr))) if weights is None else np.asarray(weights, dtype=float)
        total = w.sum(axis=1)
        with np.errstate(invalid="ignore", divide="ignore"):
            within = ((w @ self.k_gg) * w).sum(axis=1) / total**2
            across = (w @ self.k_gr) / total
        return np.sqrt(np.clip(within + self.k_rr - 2 * across, 0, None))
