"""Lexical diversity of one text's word tokens: MATTR, Yule's K and HD-D.

Written here rather than taken from PyPI: `lexicalrichness` (the well-known implementation)
imports matplotlib and pandas at import time, and `taaled` needs spaCy; the three formulas are
short. The tests check them against values computed by hand and against the formulas as
`lexicalrichness` 0.5.1 writes them.

- MATTR (Covington and McFall 2010): the mean type-token ratio over every window of `window`
  consecutive tokens. A text shorter than the window has no MATTR (None), as in
  `lexicalrichness`, which refuses it.
- Yule's K (Yule 1944; Tweedie and Baayen 1998): `10^4 * (sum_i i^2 V_i / N^2 - 1/N)`, with `V_i`
  the number of types that occur `i` times among `N` tokens. Higher means *less* diverse
  (more repetition); it does not grow with text length.
- HD-D (McCarthy and Jarvis 2007): for each type, the probability that a random draw of `draws`
  tokens without replacement holds it at least once, divided by `draws`, summed over types: the
  expected type-token ratio of a `draws`-token sample. A text of fewer than `draws` tokens has no
  HD-D (None).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

from scipy.stats import hypergeom

MATTR_WINDOW = 10
"""Window of the MATTR in the realism report: user turns are short (real follow-ups: median 18
words), so the usual 50-token window would leave most real turns without a value."""

HDD_DRAWS = 10
"""Sample size of the HD-D in the realism report (the usual 42 is longer than most real turns)."""


def mattr(tokens: Sequence[str], window: int = MATTR_WINDOW) -> float | None:
    """Moving-average type-token ratio over windows of `window` tokens; None if shorter."""
    if window < 1:
        raise ValueError("window must be a positive number of tokens")
    if len(tokens) < window:
        return None
    counts = Counter(tokens[:window])
    total = len(counts)
    for start in range(1, len(tokens) - window + 1):
        gone, new = tokens[start - 1], tokens[start + window - 1]
        counts[gone] -= 1
        if counts[gone] == 0:
            del counts[gone]
        counts[new] += 1
        total += len(counts)
    return total / ((len(tokens) - window + 1) * window)


def yules_k(tokens: Sequence[str]) -> float | None:
    """Yule's K of the tokens (higher: more repetitive); None for no tokens."""
    n = len(tokens)
    if n == 0:
        return None
    frequencies = Counter(Counter(tokens).values())  # i -> V_i
    s2 = sum(i * i * v for i, v in frequencies.items())
    return 1e4 * (s2 / (n * n) - 1 / n)


def hdd(tokens: Sequence[str], draws: int = HDD_DRAWS) -> float | None:
    """HD-D: expected type-token ratio of a `draws`-token random sample; None if shorter."""
    if draws < 1:
        raise ValueError("draws must be a positive number of tokens")
    n = len(tokens)
    if n < draws:
        return None
    counts = Counter(tokens).values()
    return float(sum((1 - hypergeom.pmf(0, n, c, draws)) / draws for c in counts))
