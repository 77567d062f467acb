"""How evenly dialogues use the strategies of their library: entropy and its normalisation.

One definition serves the data card of an export (`batch.card`) and the evaluation report
(`evaluation.metrics`, `evaluation.dataset`), so that both print the same number for the same
dialogues. It lives at the bottom because both packages read it and neither may import the other's
side.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from dialogues.models import LibraryInfo


def entropy_rows(counts: np.ndarray) -> np.ndarray:
    """Shannon entropy in bits of each row of `counts`; NaN for a row that sums to 0."""
    counts = np.asarray(counts, dtype=float)
    total = counts.sum(axis=-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        p = counts / total[..., None]
        terms = np.where(p > 0, p * np.log2(np.where(p > 0, p, 1.0)), 0.0)
    return np.where(total > 0, -terms.sum(axis=-1) + 0.0, np.nan)


def normalised_entropy_rows(counts: np.ndarray, available: int | None = None) -> np.ndarray:
    """Entropy of each row divided by its maximum log2(min(available, draws)); NaN when that is 0.

    `available` is the number of strategies the strategist could choose from; when unknown, the
    number of distinct strategies the row uses is taken instead (Pielou's evenness). 1.0: as
    evenly spread as that many options and draws allow; 0.0: one strategy over several draws.
    """
    counts = np.asarray(counts, dtype=float)
    total = counts.sum(axis=-1)
    options = available if available is not None else (counts > 0).sum(axis=-1)
    most = np.log2(np.maximum(np.minimum(options, total), 1.0))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(most > 0, entropy_rows(counts) / np.where(most > 0, most, 1.0), np.nan)


def entropy_bits(counts: Sequence[float]) -> float | None:
    """Shannon entropy in bits of a distribution given by counts; None when all are zero."""
    value = float(entropy_rows(np.asarray(counts, dtype=float).reshape(1, -1))[0])
    return None if np.isnan(value) else value


def normalised_entropy(counts: Sequence[float], available: int | None = None) -> float | None:
    """Entropy divided by its maximum log2(min(available, draws)); None when that is 0.

    See `normalised_entropy_rows`.
    """
    row = np.asarray(counts, dtype=float).reshape(1, -1)
    value = float(normalised_entropy_rows(row, available)[0])
    return None if np.isnan(value) else value


def library_size(library: Mapping[str, Any]) -> int | None:
    """Return how many strategies a library offers the strategist (its high-level count)."""
    return LibraryInfo.model_validate(library).size()
