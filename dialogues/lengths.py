"""Length cues: how long a user turn is, in four buckets, and the real users' shares of them.

A simulator trained with length cues (`train-simulator --length-cues`) read, below each request,
the length of the real follow-up it learned to write; at run time the cue is drawn at the real
users' shares (stored in its card), so its turns are as long as theirs in distribution.
"""

from __future__ import annotations

import math
import random
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

LENGTHS: tuple[tuple[float, str], ...] = (
    (7, "under 8 words"),
    (15, "8 to 15 words"),
    (31, "16 to 31 words"),
    (math.inf, "32 words or more"),
)
"""The length cues a simulator trained with them (`train-simulator --length-cues`) reads below
its request, each with the most words (whitespace-separated) a turn of that length has: sizes
doubling, set before looking at any simulator's turns. Named by words, not sentences: real
users' single questions often run past 20 words."""


def length_cue(text: str) -> str:
    """Return the length cue of a turn: the first of `LENGTHS` whose bound holds its words."""
    count = len(text.split())
    return next(cue for most, cue in LENGTHS if count <= most)


def fewest_words(cue: str) -> int:
    """Return the fewest words a turn of length `cue` (one of `LENGTHS`) has.

    Raises:
        ValueError: `cue` is not one of `LENGTHS`.
    """
    cues = [known for _, known in LENGTHS]
    if cue not in cues:
        raise ValueError(f"{cue!r} is not a length cue")
    index = cues.index(cue)
    return int(LENGTHS[index - 1][0]) + 1 if index else 0


@dataclass(frozen=True)
class LengthCues:
    """The real users' share of turns of each length (`LENGTHS`), to draw a turn's cue from.

    A simulator trained with length cues learned, for each real follow-up, its own length's cue
    in the request; at run time the cue is drawn at the real users' shares, so its turns come
    out as long as theirs in distribution, while the cue itself carries nothing else.
    """

    shares: Mapping[str, float]

    def __post_init__(self) -> None:
        known = {cue for _, cue in LENGTHS}
        if not self.shares or set(self.shares) - known:
            raise ValueError(f"length cues must be some of {sorted(known)}")
        values = list(self.shares.values())
        if any(isinstance(v, bool) or not isinstance(v, int | float) or not v >= 0 for v in values):
            raise ValueError("length cue shares must be numbers of at least 0")
        if not sum(values) > 0:
            raise ValueError("length cue shares must not all be 0")

    @classmethod
    def of(cls, turns: Iterable[str]) -> LengthCues:
        """Count the cues of `turns` (real follow-ups).

        Raises:
            ValueError: There are no turns.
        """
        counts = Counter(length_cue(turn) for turn in turns)
        total = sum(counts.values())
        if not total:
            raise ValueError("no turns to count lengths from")
        return cls({cue: counts[cue] / total for _, cue in LENGTHS})

    def draw(self, key: str) -> str:
        """Draw a cue at the shares, the same one for the same `key`."""
        cues = list(self.shares)
        return random.Random(key).choices(cues, weights=[self.shares[c] for c in cues])[0]
