"""Induction step 2: greedy threshold ("leader") clustering of strategy embeddings.

The paper's rule (METHOD.md): walk the items in order; an unassigned item opens a cluster as its
centre and pulls in every item whose cosine similarity to it is above the threshold; an item that
already belongs to a cluster moves only when the new centre is strictly closer than its current one.
Centres never move.

Two facts make this fast without changing the result:

* Whether item i opens a cluster depends only on the centres before it, so the items can be walked
  in blocks: one matrix product gives every item of a block its similarity to all earlier centres,
  and only the block's own still-open items need a sequential pass (over a small block Gram matrix).
* "Move only when strictly closer", applied centre by centre in order, is a running argmax: an
  item's final cluster is its most similar centre among those above the threshold, the earliest on
  ties. So each (item, centre) similarity is needed once, whichever of the two comes first.

`greedy_cluster_reference` is the same rule as a plain loop, kept for tests and as documentation.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

DEFAULT_THRESHOLD = 0.5
"""The paper's cosine threshold."""
DEFAULT_BLOCK = 1024
"""Items per block; a column tile of centres is 8 blocks wide."""


class Clustering(NamedTuple):
    """Cluster labels and centres; unpack as `labels, centres = greedy_cluster(...)`."""

    labels: np.ndarray
    """int64, one per item: its cluster, numbered 0..C-1 in the order the clusters opened."""
    centres: np.ndarray
    """int64, one per cluster: the index of the item that opened it (ascending)."""

    @property
    def count(self) -> int:
        """The number of clusters."""
        return len(self.centres)

    def members(self) -> list[np.ndarray]:
        """Return each cluster's item indices (ascending), in cluster order."""
        order = np.argsort(self.labels, kind="stable")
        bounds = np.cumsum(np.bincount(self.labels, minlength=self.count))[:-1]
        return np.split(order, bounds) if self.count else []


def normalise(embeddings: np.ndarray) -> np.ndarray:
    """Return float32 rows scaled to unit length (zero rows stay zero and join no cluster)."""
    vectors = np.asarray(embeddings, dtype=np.float32)
    if vectors.ndim != 2:
        raise ValueError(f"embeddings must be a 2-D array, got shape {vectors.shape}")
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return np.ascontiguousarray(vectors / np.clip(norms, 1e-12, None), dtype=np.float32)


def greedy_cluster(
    embeddings: np.ndarray, threshold: float = DEFAULT_THRESHOLD, block: int = DEFAULT_BLOCK
) -> Clustering:
    """Cluster items by the paper's greedy leader rule on cosine similarity, vectorised.

    Args:
        embeddings: One row per item, in walking order; rows are L2-normalised here.
        threshold: An item joins a centre only when their cosine is strictly above this.
        block: Items handled per matrix product; trades memory (about 40 * block**2 bytes, on
            top of two float32 copies of the embeddings) for fewer, larger products. It does
            not change the result.

    Returns:
        The labels (clusters numbered in opening order) and each cluster's centre index.
    """
    x = normalise(embeddings)
    n, thr, block = len(x), np.float32(threshold), max(1, int(block))
    labels = np.full(n, -1, dtype=np.int64)
    # Each item's similarity to its current centre; +inf marks a centre, -inf no cluster yet.
    best = np.full(n, -np.inf, dtype=np.float32)
    # Centre vectors fill rows 0..C-1 by label, member vectors (ids in member_ids) the end.
    ordered = np.empty_like(x)
    member_ids = np.empty(n, dtype=np.int64)
    centres: list[int] = []
    members = 0
    for start in range(0, n, block):
        stop = min(start + block, n)
        rows = slice(start, stop)
        before = len(centres)
        for tile in range(0, before, 8 * block):
            end = min(tile + 8 * block, before)
            _absorb(x[rows] @ ordered[tile:end].T, best, labels, rows, tile, thr)
        _open_centres(x, rows, best, labels, thr, centres, ordered)
        opened = slice(before, len(centres))
        for tile in range(n - members, n, 8 * block):
            end = min(tile + 8 * block, n)
            sims = ordered[tile:end] @ ordered[opened].T
            _absorb(sims, best, labels, member_ids[tile:end], before, thr)
        joined = np.arange(start, stop)[best[rows] != np.inf]
        member_ids[n - members - len(joined) : n - members] = joined
        ordered[n - members - len(joined) : n - members] = x[joined]
        members += len(joined)
    return Clustering(labels, np.asarray(centres, dtype=np.int64))


def _absorb(
    sims: np.ndarray,
    best: np.ndarray,
    labels: np.ndarray,
    items: slice | np.ndarray,
    first_label: int,
    thr: np.float32,
) -> None:
    """Move items to the first of the most similar new centres when above threshold and closer.

    Rows of `sims` are `items`, columns the new centres in order, labelled from `first_label` on.
    """
    if 0 in sims.shape:
        return
    column = sims.argmax(axis=1)
    value = sims[np.arange(len(column)), column]
    current = best[items]
    moved = (value > thr) & (value > current)
    if moved.any():
        current[moved] = value[moved]
        new_labels = labels[items]
        new_labels[moved] = first_label + column[moved]
        best[items], labels[items] = current, new_labels


def _open_centres(
    x: np.ndarray,
    rows: slice,
    best: np.ndarray,
    labels: np.ndarray,
    thr: np.float32,
    centres: list[int],
    ordered: np.ndarray,
) -> None:
    """Walk one block's still-open items in order; each that is still open opens a cluster."""
    gram = x[rows] @ x[rows].T
    block_best, block_labels = best[rows], labels[rows]
    still_open = np.flatnonzero(block_labels == -1)
    off_diagonal = gram[np.ix_(still_open, still_open)] > thr
    np.fill_diagonal(off_diagonal, False)
    if off_diagonal.any():
        opening = []
        for i in still_open:
            if block_labels[i] != -1:
                continue
            opening.append(i)
            block_labels[i], block_best[i] = len(centres) + len(opening) - 1, np.inf
            _absorb(gram[:, i : i + 1], block_best, block_labels, slice(None), block_labels[i], thr)
    else:
        opening = list(still_open)
        block_labels[still_open] = len(centres) + np.arange(len(still_open))
        block_best[still_open] = np.inf
        _absorb(gram[:, still_open], block_best, block_labels, slice(None), len(centres), thr)
    opened = rows.start + np.asarray(opening, dtype=np.int64)
    ordered[len(centres) : len(centres) + len(opened)] = x[opened]
    centres.extend(opened.tolist())
    best[rows], labels[rows] = block_best, block_labels


def greedy_cluster_reference(
    embeddings: np.ndarray, threshold: float = DEFAULT_THRESHOLD
) -> Clustering:
    """Cluster by the same rule as `greedy_cluster`, as a plain loop (O(n * clusters) steps).

    Args:
        embeddings: One row per item, in walking order; rows are L2-normalised here.
        threshold: An item joins a centre only when their cosine is strictly above this.

    Returns:
        The labels and centres; equal to `greedy_cluster`'s up to float rounding at exact ties.
    """
    x = normalise(embeddings)
    thr = np.float32(threshold)
    labels = [-1] * len(x)
    closeness: list[float] = [-np.inf] * len(x)
    centres: list[int] = []
    is_centre: set[int] = set()
    for i in range(len(x)):
        if labels[i] != -1:
            continue
        label = len(centres)
        centres.append(i)
        is_centre.add(i)
        labels[i], closeness[i] = label, np.inf
        sims = x @ x[i]
        for j, sim in enumerate(sims):
            if j in is_centre:
                continue
            if sim > thr and sim > closeness[j]:
                labels[j], closeness[j] = label, sim
    return Clustering(np.asarray(labels, dtype=np.int64), np.asarray(centres, dtype=np.int64))
