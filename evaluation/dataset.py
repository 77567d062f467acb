"""Dataset-level statistics as functions of dialogue weights (see `evaluation.bootstrap`).

Each builder returns a jackknife `Statistic` whose value on all-ones weights is the plain
dataset-level number: distinct-n over every instruction, mean pairwise embedding distance across
the dataset, strategy entropy, and the realism distances to real follow-ups.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

import numpy as np

from dialogues.strategy_use import entropy_rows, normalised_entropy_rows
from evaluation.bootstrap import Statistic
from evaluation.inputs import EvalDialogue
from evaluation.metrics import strategy_ids
from evaluation.realism import MMD, wasserstein_1d
from evaluation.text import ngrams, words


def distinct_statistic(dialogues: Sequence[EvalDialogue], n: int) -> Statistic:
    """Distinct-n over all instructions of the weighted dialogues (see `metrics.distinct_n`).

    A dialogue counted twice doubles its n-grams in the total but adds no new unique ones.
    """
    vocabulary: dict[tuple[str, ...], int] = {}
    owner, gram, totals = [], [], []
    for index, dialogue in enumerate(dialogues):
        grams = [g for text in dialogue.instructions for g in ngrams(words(text), n)]
        ids = {vocabulary.setdefault(g, len(vocabulary)) for g in grams}
        owner += [index] * len(ids)
        gram += sorted(ids)
        totals.append(len(grams))
    owners, grams_of = np.asarray(owner, dtype=int), np.asarray(gram, dtype=int)
    total_grams = np.asarray(totals, dtype=float)

    def compute(w: np.ndarray) -> np.ndarray:
        out = np.full(len(w), np.nan)
        for row, (weights, total) in enumerate(zip(w, w @ total_grams, strict=True)):
            if total > 0:
                mass = np.bincount(grams_of, weights=weights[owners], minlength=len(vocabulary))
                out[row] = np.count_nonzero(mass) / total
        return out

    instructions = sum(len(d.turns) for d in dialogues)
    return Statistic(compute, len(dialogues), instructions, "jackknife")


def pairwise_statistic(vectors: np.ndarray, owners: Sequence[int], units: int) -> Statistic:
    """Mean cosine distance over all pairs of instructions across the dataset.

    With weights, an instruction of a dialogue counted c times appears c times; pairs are ordered
    pairs of distinct positions, so the plain value is the mean over all pairs i != j.
    """
    v = np.asarray(vectors, dtype=float)
    owner = np.asarray(owners, dtype=int)
    norms = (v * v).sum(axis=1)

    def compute(w: np.ndarray) -> np.ndarray:
        counts = w[:, owner]
        summed = counts @ v
        size = counts.sum(axis=1)
        pairs = size * (size - 1)
        with np.errstate(invalid="ignore", divide="ignore"):
            similarity = ((summed * summed).sum(axis=1) - counts @ norms) / pairs
        return np.where(pairs > 0, 1 - similarity, np.nan)

    return Statistic(compute, units, len(owner), "jackknife")


def strategy_counts(dialogues: Sequence[EvalDialogue]) -> tuple[list[str], np.ndarray]:
    """Return the strategy ids used and a `(dialogues, ids)` matrix of how often each used them."""
    per_dialogue = [Counter(strategy_ids(d)) for d in dialogues]
    ids = sorted({s for c in per_dialogue for s in c})
    matrix = np.array([[c[s] for s in ids] for c in per_dialogue], dtype=float)
    return ids, matrix.reshape(len(dialogues), len(ids))


def entropy_statistic(
    dialogues: Sequence[EvalDialogue], available: int | None = None, *, normalised: bool = False
) -> Statistic:
    """Shannon entropy (bits) of strategy use over all turns, optionally normalised.

    Normalised: divided by log2(min(available, strategy turns)), with the number of distinct
    strategies used standing in for `available` when it is unknown (see
    `dialogues.strategy_use.normalised_entropy_rows`, which the data card uses too).
    """
    _, matrix = strategy_counts(dialogues)

    def compute(w: np.ndarray) -> np.ndarray:
        counts = w @ matrix
        return normalised_entropy_rows(counts, available) if normalised else entropy_rows(counts)

    return Statistic(compute, len(dialogues), int(matrix.sum()), "jackknife")


def length_statistic(
    lengths: Sequence[float], owners: Sequence[int], units: int, reference: Sequence[float]
) -> Statistic:
    """W1 distance between instruction lengths (words) and real follow-ups' lengths."""
    owner = np.asarray(owners, dtype=int)

    def compute(w: np.ndarray) -> np.ndarray:
        return wasserstein_1d(lengths, reference, w[:, owner])

    return Statistic(compute, units, len(owner), "jackknife")


def zscore_statistic(
    values: Sequence[float | None],
    owners: Sequence[int],
    units: int,
    reference: Sequence[float | None],
) -> Statistic:
    """Mean of per-turn `values` as a z-score against the real turns: `(mean - mu) / sd`.

    `mu` and `sd` (sample standard deviation) are the real turns' (`reference`), fixed; turns
    without a value (None) are left out on both sides. NaN with fewer than 2 real values or no
    spread.
    """
    real = np.array([v for v in reference if v is not None], dtype=float)
    mu, sd = (real.mean(), real.std(ddof=1)) if len(real) > 1 else (np.nan, np.nan)
    valid = np.array([v is not None for v in values], dtype=bool)
    owner = np.asarray(owners, dtype=int)
    x = np.array([v if v is not None else 0.0 for v in values], dtype=float)
    sums = np.bincount(owner[valid], weights=x[valid], minlength=units) if valid.any() else None
    counts = np.bincount(owner[valid], minlength=units).astype(float) if valid.any() else None

    def compute(w: np.ndarray) -> np.ndarray:
        if sums is None or not sd > 0:
            return np.full(len(w), np.nan)
        with np.errstate(invalid="ignore", divide="ignore"):
            return ((w @ sums) / (w @ counts) - mu) / sd

    return Statistic(compute, units, int(valid.sum()), "jackknife")


def dialogue_length_statistic(lengths: Sequence[int], reference: Sequence[int]) -> Statistic:
    """W1 distance between user turns per dialogue, generated vs real dialogues."""
    return Statistic(
        lambda w: wasserstein_1d(lengths, reference, w), len(lengths), len(lengths), "jackknife"
    )


def mmd_statistic(mmd: MMD, owners: Sequence[int], units: int) -> Statistic:
    """RBF-kernel MMD between instruction embeddings and real follow-ups' embeddings."""
    owner = np.asarray(owners, dtype=int)
    return Statistic(lambda w: mmd(w[:, owner]), units, len(owner), "jackknife")
