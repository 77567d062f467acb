"""Answer contexts: the embeddings of the real answers that preceded each induced strategy.

Retrieval by context asks "which strategies did real users apply after answers like this one?"
rather than "which strategy texts look like this answer?". Only embeddings are stored, never the
answer text; beside each embedding one bit about the text, whether it holds a fenced code block
(`has_code_block`), which the learned ranker uses as a domain-fit feature.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from stores.base import Candidate, StrategyStore
from stores.memory import Embedder

CONTEXT_HITS = 64
"""How many nearest real answers are consulted per query."""

_FENCE = re.compile(r"^[ \t]*(?:```|~~~)", re.MULTILINE)


def has_code_block(text: str) -> bool:
    """Return whether `text` holds a fenced code block: a line starting with ``` or ~~~.

    This is the ranker's own provenance flag, deliberately narrower than and independent of
    `dialogues.domain` (which also counts unfenced statements): that module is the evaluation's
    misfit instrument, and a ranker that selected strategies with the rule that scores it would
    grade its own homework. Leading spaces or tabs before the fence are allowed (Markdown does).
    """
    return bool(_FENCE.search(text))


@dataclass(frozen=True)
class AnswerContext:
    """One real answer (as an embedding) and the top-tier strategy its follow-up applied."""

    id: str
    strategy_id: str
    embedding: np.ndarray
    group: str = ""
    """The dialogue the answer came from (a digest, never its text); empty when unknown."""
    code: bool | None = None
    """Whether the answer held a fenced code block (`has_code_block`); None when unknown (a
    library built before the flag existed)."""


@dataclass(frozen=True)
class ContextRows:
    """Every stored context at once: what the learned ranker reads."""

    ids: list[str]
    strategy_ids: list[str]
    groups: list[str]
    """Each context's dialogue; a context of unknown dialogue is its own group (its id)."""
    vectors: np.ndarray
    code: list[bool | None]
    """Each context's code-block flag; None where the library did not record it."""


class ContextIndex(Protocol):
    """Nearest-neighbour search over answer contexts."""

    def add(self, contexts: Sequence[AnswerContext]) -> None:
        """Insert or replace contexts (by id)."""
        ...

    def nearest(self, embedding: np.ndarray, n: int) -> list[tuple[str, float]]:
        """Return up to n (strategy_id, cosine similarity) pairs, closest first."""
        ...

    def count(self) -> int:
        """Return the number of stored contexts."""
        ...

    def rows(self) -> ContextRows:
        """Return every stored context."""
        ...


class InMemoryContextIndex:
    """Exact cosine search over normalised answer embeddings."""

    def __init__(self) -> None:
        """Start empty."""
        self._ids: list[str] = []
        self._strategies: list[str] = []
        self._groups: list[str] = []
        self._code: list[bool | None] = []
        self._matrix = np.zeros((0, 0), dtype=np.float32)

    def add(self, contexts: Sequence[AnswerContext]) -> None:
        """Append contexts (ids are not deduplicated)."""
        if not contexts:
            return
        rows = np.stack([c.embedding for c in contexts]).astype(np.float32)
        self._matrix = rows if not self._ids else np.vstack([self._matrix, rows])
        self._ids += [c.id for c in contexts]
        self._strategies += [c.strategy_id for c in contexts]
        self._groups += [c.group or c.id for c in contexts]
        self._code += [c.code for c in contexts]

    def nearest(self, embedding: np.ndarray, n: int) -> list[tuple[str, float]]:
        """Return the n most similar contexts' strategy ids and similarities."""
        if not self._ids:
            return []
        scores = self._matrix @ embedding.astype(np.float32)
        order = np.argsort(-scores)[:n]
        return [(self._strategies[i], float(scores[i])) for i in order]

    def count(self) -> int:
        """Return the number of stored contexts."""
        return len(self._ids)

    def rows(self) -> ContextRows:
        """Return every stored context."""
        return ContextRows(
            ids=list(self._ids),
            strategy_ids=list(self._strategies),
            groups=list(self._groups),
            vectors=self._matrix,
            code=list(self._code),
        )


class ContextRetriever:
    """Rank strategies by how close their real preceding answers are to the current answer.

    The score of a strategy is the highest similarity among its contexts; strategies without a
    close context are filled in by strategy-text similarity, so the result always has k entries
    when the library has them.
    """

    def __init__(self, store: StrategyStore, index: ContextIndex, embedding: Embedder) -> None:
        """Rank `store`'s top-tier strategies using `index`."""
        self.store, self.index, self.embedding = store, index, embedding

    def search(self, text: str, k: int, *, exclude: Collection[str] = ()) -> list[Candidate]:
        """Return up to k candidates for the answer `text`."""
        query = self.embedding.embed([text])[0]
        best: dict[str, float] = {}
        for strategy_id, score in self.index.nearest(query, CONTEXT_HITS + len(exclude)):
            if strategy_id not in exclude and strategy_id not in best:
                best[strategy_id] = score
        ranked = sorted(best.items(), key=lambda item: -item[1])[:k]
        candidates = []
        for strategy_id, score in ranked:
            record = self.store.get(strategy_id)
            if record is not None:
                candidates.append((strategy_id, record.text, score))
        if len(candidates) < k:
            seen = set(exclude) | {c[0] for c in candidates}
            for c in self.store.search(text, k - len(candidates), exclude=seen):
                candidates.append((c.id, c.text, c.score))
        return [
            Candidate(id=i, text=t, score=s, rank=rank) for rank, (i, t, s) in enumerate(candidates)
        ]
