"""An in-memory strategy store and a dependency-free hashing embedding, for tests and small runs."""

from __future__ import annotations

import copy
import re
import zlib
from collections.abc import Collection, Sequence
from typing import Any, Protocol, runtime_checkable

import numpy as np

from stores.base import Candidate, Level, StrategyRecord


@runtime_checkable
class Embedder(Protocol):
    """Anything that turns texts into unit-length vectors (one row per text)."""

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        """Return a float32 array of shape (len(texts), dim) with L2-normalised rows."""
        ...


def embedder_name(embedding: object) -> str:
    """Return a stable name for an embedding, used to refuse mixing vectors of two models."""
    name = getattr(embedding, "name", None)
    return str(name()) if callable(name) else type(embedding).__name__


class HashingEmbedding:
    """A deterministic bag-of-words embedding: each word is counted in one bucket chosen by crc32.

    It knows nothing of meaning, only shared words (texts sharing a word never score below texts
    sharing none), but it is instant and needs no model, which is what offline tests want.

    Args:
        dim: Number of buckets (vector length).
    """

    def __init__(self, dim: int = 256) -> None:
        self.dim = dim

    def name(self) -> str:
        """Return the embedding's name."""
        return f"ideas-hashing-{self.dim}"

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        """Embed texts as normalised hashed word counts (an empty text gives a zero row)."""
        vectors = np.zeros((len(texts), self.dim), dtype=np.float32)
        for row, text in enumerate(texts):
            for word in re.findall(r"[a-z0-9]+", text.lower()):
                vectors[row, zlib.crc32(word.encode("utf-8")) % self.dim] += 1.0
        norms = np.linalg.norm(vectors, axis=1, keepdims=True)
        return vectors / np.clip(norms, 1e-12, None)


class InMemoryStrategyStore:
    """A strategy library held in a dict, searched by exact cosine similarity with numpy.

    Args:
        library: The library's name.
        embedding: Turns strategy texts and queries into unit-length vectors.
    """

    def __init__(self, library: str, embedding: Embedder) -> None:
        self.library = library
        self.embedding = embedding
        self.location = "memory"
        self._records: dict[str, StrategyRecord] = {}
        self._vectors: dict[str, np.ndarray] = {}
        self._metadata: dict[str, Any] = {}
        self._contexts: Any = None

    def contexts(self) -> Any:
        """Return the library's answer-context index (`stores.contexts.InMemoryContextIndex`)."""
        if self._contexts is None:
            from stores.contexts import InMemoryContextIndex

            self._contexts = InMemoryContextIndex()
        return self._contexts

    def clear(self) -> None:
        """Delete every record, the metadata and the answer contexts."""
        self._records, self._vectors, self._metadata = {}, {}, {}
        self._contexts = None

    def add(self, records: Sequence[StrategyRecord]) -> None:
        """Insert or update records (by id)."""
        if not records:
            return
        vectors = self.embedding.embed([r.text for r in records])
        for record, vector in zip(records, vectors, strict=True):
            self._records[record.id] = record.model_copy(deep=True)
            self._vectors[record.id] = np.asarray(vector, dtype=np.float32)

    def get(self, strategy_id: str) -> StrategyRecord | None:
        """Return one record, or None when the id is unknown."""
        record = self._records.get(strategy_id)
        return record.model_copy(deep=True) if record else None

    def records(self, level: Level | None = None) -> list[StrategyRecord]:
        """Return all records, optionally of one level, sorted by id."""
        return [
            self._records[i].model_copy(deep=True)
            for i in sorted(self._records)
            if level is None or self._records[i].level == level
        ]

    def count(self, level: Level | None = None) -> int:
        """Count records, optionally of one level."""
        return sum(1 for r in self._records.values() if level is None or r.level == level)

    def search(
        self, text: str, k: int, *, level: Level = "high", exclude: Collection[str] = ()
    ) -> list[Candidate]:
        """Return up to k records of `level` most similar to `text`, skipping `exclude` ids."""
        excluded = set(exclude)
        ids = [i for i, r in self._records.items() if r.level == level and i not in excluded]
        if k <= 0 or not ids:
            return []
        query = self.embedding.embed([text])[0]
        scores = np.stack([self._vectors[i] for i in ids]) @ query
        best = np.argsort(-scores, kind="stable")[:k]
        return [
            Candidate(id=ids[j], text=self._records[ids[j]].text, score=float(scores[j]), rank=r)
            for r, j in enumerate(best)
        ]

    def metadata(self) -> dict[str, Any]:
        """Return the library's metadata."""
        return copy.deepcopy(self._metadata)

    def set_metadata(self, metadata: dict[str, Any]) -> None:
        """Replace the library's metadata."""
        self._metadata = copy.deepcopy(metadata)
