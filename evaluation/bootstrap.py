"""Confidence intervals over dialogues: of statistics and of differences between variants.

A statistic is a function of *dialogue weights*: row r of a weight matrix `W` (shape
`(rows, dialogues)`) says how often each dialogue counts, so a row of ones is the data itself.
A mean of per-dialogue values is `W @ x / W @ 1`; a dataset-level statistic (distinct-n, an
entropy, a distribution distance) weights each dialogue's contribution by `W`. Whole dialogues
are the unit of sampling, so the turns of a dialogue stay together.

- `bootstrap` statistics (means of per-dialogue values, ratios of sums) get a percentile
  bootstrap CI: `W` holds how often each dialogue was drawn, with replacement, in each resample.
- `jackknife` statistics (the dataset-level ones) get a delete-one jackknife normal CI, estimate
  +- z * SE: row i of `W` leaves dialogue i out. Resampling with replacement would duplicate
  dialogues, which biases count-based statistics such as distinct-n or an entropy downward.

A difference between a variant and the baseline is *paired* when both were grown from the same
seeds (the same set of pairing keys): one draw (or one left-out seed) weights both variants'
dialogues alike. Otherwise it is *unpaired*: each variant is resampled independently (jackknife:
the two standard errors add in quadrature). Either way the difference is significant when its CI
excludes zero.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from statistics import NormalDist
from typing import Literal

import numpy as np

RESAMPLES = 2000
"""Default number of bootstrap resamples."""

SEED = 0
"""Default seed of the resampling generator: the same data always gives the same CI."""

LEVEL = 0.95
"""Default confidence level."""

CHUNK = 256
"""Weight rows computed at a time, which bounds memory on large sets."""


@dataclass(frozen=True)
class Statistic:
    """A statistic of a set of dialogues that can be recomputed under any dialogue weights."""

    compute: Callable[[np.ndarray], np.ndarray]
    """Maps weights `(R, units)` to values `(R,)`; NaN where a resample leaves it undefined."""
    units: int
    """Number of dialogues (resampling units)."""
    count: int
    """Number of values behind the estimate (reported as n)."""
    method: Literal["bootstrap", "jackknife"] = "bootstrap"
    """How its CI is computed."""

    def estimate(self) -> float | None:
        """The statistic of the data itself (None when undefined)."""
        return _number(self.compute(np.ones((1, self.units)))[0]) if self.units else None


@dataclass(frozen=True)
class Interval:
    """A point estimate with its bootstrap CI (all None when the statistic is undefined)."""

    mean: float | None
    lo: float | None
    hi: float | None
    n: int


@dataclass(frozen=True)
class Difference:
    """A variant's statistic minus the baseline's, with its bootstrap CI."""

    diff: float | None
    lo: float | None
    hi: float | None
    paired: bool

    @property
    def significant(self) -> bool:
        """Whether the CI excludes zero."""
        return self.lo is not None and self.hi is not None and (self.lo > 0 or self.hi < 0)


def weights(units: int, resamples: int, rng: np.random.Generator) -> np.ndarray:
    """Draw `resamples` bootstrap samples of `units` items; return how often each was drawn."""
    if units == 0:
        return np.zeros((resamples, 0))
    draws = rng.integers(0, units, size=(resamples, units))
    flat = (draws + units * np.arange(resamples)[:, None]).ravel()
    return np.bincount(flat, minlength=resamples * units).reshape(resamples, units).astype(float)


def mean_statistic(values: Sequence[float | None]) -> Statistic:
    """Mean of per-dialogue values, None values (n/a) left out."""
    mask = np.array([v is not None and np.isfinite(v) for v in values], dtype=float)
    x = np.array([v if m else 0.0 for v, m in zip(values, mask, strict=True)], dtype=float)
    return ratio_statistic(x, mask, count=int(mask.sum()))


def ratio_statistic(
    numerators: Sequence[float], denominators: Sequence[float], count: int | None = None
) -> Statistic:
    """Ratio of sums, e.g. LLM calls over accepted turns; NaN when the denominator is zero."""
    num, den = np.asarray(numerators, dtype=float), np.asarray(denominators, dtype=float)

    def compute(w: np.ndarray) -> np.ndarray:
        top, bottom = w @ num, w @ den
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(bottom > 0, top / np.where(bottom > 0, bottom, 1.0), np.nan)

    return Statistic(compute, len(num), int((den > 0).sum()) if count is None else count)


def interval(
    statistic: Statistic, *, resamples: int = RESAMPLES, seed: int = SEED, level: float = LEVEL
) -> Interval:
    """Return the statistic with its CI over dialogues (percentile bootstrap or jackknife)."""
    estimate = statistic.estimate()
    if estimate is None:
        return Interval(None, None, None, statistic.count)
    rows = _rows(statistic.units, statistic.method, resamples, np.random.default_rng(seed))
    lo, hi = _bounds(_replicates(statistic, rows), estimate, statistic.method, level)
    return Interval(estimate, lo, hi, statistic.count)


def difference(
    variant: Statistic,
    baseline: Statistic,
    *,
    pairing: tuple[Sequence[int], Sequence[int]] | None = None,
    resamples: int = RESAMPLES,
    seed: int = SEED,
    level: float = LEVEL,
) -> Difference:
    """Return `variant - baseline` with its CI (the method of `variant`).

    Args:
        variant: The statistic of the variant.
        baseline: The same statistic of the baseline.
        pairing: For a paired CI, the positions of each shared seed in the variant's and in the
            baseline's dialogues (equal lengths, covering both); None for unpaired.
        resamples: Bootstrap resamples.
        seed: Seed of the resampling generator.
        level: Confidence level.
    """
    paired, method = pairing is not None, variant.method
    a, b = variant.estimate(), baseline.estimate()
    if a is None or b is None:
        return Difference(None, None, None, paired)
    rng = np.random.default_rng(seed)
    if pairing is not None:
        rows = _rows(len(pairing[0]), method, resamples, rng)
        replicates = np.concatenate(
            [_difference(variant, baseline, pairing, shared) for shared in rows]
        )
        lo, hi = _bounds(replicates, a - b, method, level)
    elif method == "jackknife":
        ses = [_jackknife_se(_replicates(s, _leave_one_out(s.units))) for s in (variant, baseline)]
        se = None if None in ses else float(np.hypot(*ses))
        lo, hi = _normal(a - b, se, level)
    else:
        first = _replicates(variant, _rows(variant.units, method, resamples, rng))
        second = _replicates(baseline, _rows(baseline.units, method, resamples, rng))
        lo, hi = _percentiles(first - second, level)
    return Difference(a - b, lo, hi, paired)


def mean_ci(values: Sequence[float | None], **options: float) -> Interval:
    """Return the mean of `values` (None left out) with its percentile bootstrap CI."""
    return interval(mean_statistic(values), **options)


def mean_difference_ci(
    values: Sequence[float | None],
    baseline: Sequence[float | None],
    *,
    paired: bool = False,
    **options: float,
) -> Difference:
    """Return mean(values) - mean(baseline) with its CI; paired pairs them by position."""
    pairing = None
    if paired:
        if len(values) != len(baseline):
            raise ValueError("paired samples must have the same length")
        pairing = (range(len(values)), range(len(baseline)))
    return difference(mean_statistic(values), mean_statistic(baseline), pairing=pairing, **options)


def _rows(
    units: int, method: str, resamples: int, rng: np.random.Generator
) -> Iterator[np.ndarray]:
    """Yield the weight rows of a bootstrap or a jackknife in chunks (bounded memory)."""
    if method == "jackknife":
        yield from _leave_one_out(units)
        return
    for start in range(0, resamples, CHUNK):
        yield weights(units, min(CHUNK, resamples - start), rng)


def _leave_one_out(units: int) -> Iterator[np.ndarray]:
    for start in range(0, units, CHUNK):
        size = min(CHUNK, units - start)
        rows = np.ones((size, units))
        rows[np.arange(size), start + np.arange(size)] = 0
        yield rows


def _replicates(statistic: Statistic, rows: Iterator[np.ndarray]) -> np.ndarray:
    computed = [statistic.compute(w) for w in rows]
    return np.concatenate(computed) if computed else np.zeros(0)


def _difference(
    variant: Statistic,
    baseline: Statistic,
    pairing: tuple[Sequence[int], Sequence[int]],
    shared: np.ndarray,
) -> np.ndarray:
    """Spread weights over shared seeds onto each variant's dialogues; return the differences."""
    in_a, in_b = (np.asarray(p, dtype=int) for p in pairing)
    wa, wb = np.zeros((len(shared), variant.units)), np.zeros((len(shared), baseline.units))
    wa[:, in_a], wb[:, in_b] = shared, shared
    return variant.compute(wa) - baseline.compute(wb)


def _bounds(
    replicates: np.ndarray, estimate: float, method: str, level: float
) -> tuple[float | None, float | None]:
    if method == "jackknife":
        return _normal(estimate, _jackknife_se(replicates), level)
    return _percentiles(replicates, level)


def _normal(estimate: float, se: float | None, level: float) -> tuple[float | None, float | None]:
    if se is None:
        return None, None
    return estimate - _z(level) * se, estimate + _z(level) * se


def _jackknife_se(replicates: np.ndarray) -> float | None:
    """Delete-one jackknife standard error; None when fewer than 2 replicates are defined."""
    finite = replicates[np.isfinite(replicates)]
    if finite.size < 2:
        return None
    count = finite.size
    return float(np.sqrt((count - 1) / count * ((finite - finite.mean()) ** 2).sum()))


def _z(level: float) -> float:
    return NormalDist().inv_cdf(0.5 + level / 2)


def _percentiles(samples: np.ndarray, level: float) -> tuple[float | None, float | None]:
    finite = samples[np.isfinite(samples)]
    if finite.size == 0:
        return None, None
    tail = (1 - level) / 2 * 100
    lo, hi = np.percentile(finite, [tail, 100 - tail])
    return float(lo), float(hi)


def _number(value: float) -> float | None:
    return float(value) if np.isfinite(value) else None
