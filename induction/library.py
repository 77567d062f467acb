"""Induction steps 2-4: cluster extracted strategies, abstract them tier by tier, keep provenance.

`build_library` embeds the extracted strategies, clusters them with the greedy leader rule and
abstracts each cluster into one strategy (tier 1), then clusters and abstracts those again, up to
`tiers` times. The top tier is level `high` (what deduction retrieves), lower tiers `intermediate`,
the extractions `extracted`. Every record points to its parent, so any high-level strategy leads
down to the (source, record_id, turn) keys it was learned from. Each extracted record also gets the
embedding of the real answer its follow-up reacted to, in `Library.answer_embeddings` (not in the
store: the store embeds strategy texts only), and whether that answer held a fenced code block, in
`Library.answer_code` (`stores.contexts.has_code_block`).
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from dialogues.models import Usage
from induction.abstract import Abstractor, abstract_all
from induction.cluster import DEFAULT_BLOCK, DEFAULT_THRESHOLD, greedy_cluster
from stores.base import Level, Provenance, StrategyRecord, StrategyStore
from stores.contexts import AnswerContext, has_code_block
from stores.memory import Embedder, embedder_name

Key = tuple[str, str, int]
"""(source, record_id, turn) of a real follow-up."""


class ExtractionLike(Protocol):
    """One extracted strategy (see `induction.extract.Extraction`)."""

    source: str
    record_id: str
    turn: int
    strategy: str


class PairLike(Protocol):
    """The real (answer, follow-up) pair an extraction came from (see `induction.records.Pair`)."""

    @property
    def answer(self) -> str:
        """The assistant answer the follow-up reacted to."""
        ...


@dataclass
class TierStats:
    """What one tier of clustering and abstraction did."""

    tier: int
    level: Level
    clusters: int
    singletons: int
    methods: dict[str, int]
    """Abstractions by method (`singleton`, `centroid`, `llm`, `fallback`)."""
    seconds: float


@dataclass
class Library:
    """An induced strategy library, ready for `save_library`."""

    records: list[StrategyRecord]
    metadata: dict[str, Any]
    answer_embeddings: dict[str, np.ndarray]
    """Extracted record id -> unit vector of the real answer before its follow-up."""
    tiers: list[TierStats]
    answer_groups: dict[str, str] = field(default_factory=dict)
    """Extracted record id -> digest of the dialogue its answer came from (for the ranker)."""
    usage: Usage = field(default_factory=Usage)
    answer_code: dict[str, bool] = field(default_factory=dict)
    """Extracted record id -> whether its real answer held a fenced code block (for the ranker)."""
    fallbacks: dict[str, str] = field(default_factory=dict)
    """Abstraction record id -> why the LLM's phrase was not used."""

    def by_level(self, level: Level) -> list[StrategyRecord]:
        """Return the records of one level, in build order."""
        return [r for r in self.records if r.level == level]

    def answer_contexts(self) -> list[AnswerContext]:
        """Return each answer embedding tied to the top-tier strategy above its extraction."""
        parents = {r.id: r.parent_id for r in self.records}
        contexts = []
        for record_id, vector in self.answer_embeddings.items():
            top = record_id
            while parents.get(top):
                top = parents[top]
            group = self.answer_groups.get(record_id, "")
            code = self.answer_code.get(record_id)
            contexts.append(AnswerContext(record_id, top, vector, group, code))
        return contexts


def dialogue_digest(pair: Any) -> str:
    """Name the dialogue a pair came from without its text: a digest of its first message."""
    first = pair.history[0]
    return _digest(pair.source, first.id or first.text)


def source_digests(paths: Iterable[str | Path]) -> dict[str, str]:
    """Return {file base name: sha256 hex} for source files (`Pair.source` is the base name)."""
    digests = {}
    for path in map(Path, paths):
        with path.open("rb") as handle:
            digests[path.name] = hashlib.file_digest(handle, "sha256").hexdigest()
    return digests


async def build_library(
    extractions: Iterable[ExtractionLike],
    pairs_by_key: Mapping[Key, PairLike],
    embedding: Embedder,
    abstractor: Abstractor,
    *,
    threshold: float = DEFAULT_THRESHOLD,
    tiers: int = 2,
    name: str = "induced",
    version: str = "1",
    extraction: str | None = None,
    sources: Mapping[str, str | None] | None = None,
    concurrency: int = 4,
) -> Library:
    """Induce a tiered strategy library from extracted strategies (async; see `build_library_sync`).

    Args:
        extractions: One strategy per real follow-up; keys must be unique. They are walked in key
            order, so the library does not depend on the order extraction finished in.
        pairs_by_key: The pairs the extractions came from; their answers are embedded.
        embedding: Embeds strategies and answers (unit-length rows).
        abstractor: Turns each cluster into one strategy.
        threshold: Cosine threshold of the greedy clustering, at every tier.
        tiers: Rounds of clustering and abstraction (at least 1); the last is level `high`.
        name: The library's name, for the metadata.
        version: The library's version, for the metadata.
        extraction: How the strategies were extracted, e.g. `team-written annotations` or
            `llm:<model>`; default: the extractions' distinct `annotator` values.
        sources: {source file name: sha256} (see `source_digests`); default: each source named
            by the extractions, with no digest.
        concurrency: Clusters abstracted at once.

    Returns:
        The records (extracted, then each tier), answer embeddings, statistics and metadata.

    Raises:
        ValueError: When `tiers` < 1 or two extractions share a key.
    """
    if tiers < 1:
        raise ValueError(f"tiers must be at least 1, got {tiers}")
    started = time.perf_counter()
    items = sorted(extractions, key=lambda e: (e.source, e.record_id, e.turn))
    layer = [_extracted_record(e) for e in items]
    if not layer:
        raise ValueError("no extracted strategies to build a library from")
    if len({r.id for r in layer}) != len(layer):
        raise ValueError("two extractions share a (source, record_id, turn) key")
    build = _Build(abstractor, _Vectors(embedding), threshold, concurrency)
    answers = _embed_answers(build.vectors, items, layer, pairs_by_key)
    groups = {
        record.id: dialogue_digest(pair)
        for item, record in zip(items, layer, strict=True)
        if (pair := pairs_by_key.get((item.source, item.record_id, item.turn))) is not None
        and getattr(pair, "history", None)
    }
    code = {
        record.id: has_code_block(pair.answer)
        for item, record in zip(items, layer, strict=True)
        if (pair := pairs_by_key.get((item.source, item.record_id, item.turn))) is not None
    }
    library = Library(list(layer), {}, answers, [], answer_groups=groups, answer_code=code)
    build.under = {r.id: Counter({r.provenance[0].source: 1}) for r in layer}
    for tier in range(1, tiers + 1):
        layer = await build.tier(library, tier, "high" if tier == tiers else "intermediate", layer)
    library.metadata = {
        "name": name,
        "version": version,
        "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "induced": True,
        "extraction": extraction or _annotators(items),
        "abstraction": abstractor.name,
        "threshold": threshold,
        "tiers": tiers,
        "embedding": embedder_name(embedding),
        "sources": dict(sources or dict.fromkeys(sorted({e.source for e in items}))),
        "counts": _counts(library),
        "timing": {
            "total_s": round(time.perf_counter() - started, 3),
            "embed_s": round(build.vectors.seconds, 3),
            "tiers_s": [round(t.seconds, 3) for t in library.tiers],
        },
        "usage": library.usage.as_dict(),
    }
    return library


def build_library_sync(*args: Any, **kwargs: Any) -> Library:
    """Run `build_library` in a fresh event loop (for callers outside async code)."""
    return asyncio.run(build_library(*args, **kwargs))


def save_library(library: Library, store: StrategyStore, *, batch: int = 1000) -> None:
    """Write the library's records and metadata into an empty store.

    Answer embeddings are not written: pass `library.answer_contexts()` to a context index.

    Raises:
        ValueError: When the store already holds records (a rebuild would leave stale ones).
    """
    if (held := store.count()) > 0:
        raise ValueError(f"library {store.library!r} already holds {held} records")
    for start in range(0, len(library.records), batch):
        store.add(library.records[start : start + batch])
    store.set_metadata(library.metadata)


class _Vectors:
    """Embeds texts once each: singleton abstractions repeat their member's text."""

    def __init__(self, embedding: Embedder) -> None:
        self.embedding, self.cache = embedding, {}
        self.seconds = 0.0

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        started = time.perf_counter()
        new = list(dict.fromkeys(t for t in texts if t not in self.cache))
        if new:
            self.cache.update(zip(new, self.embedding.embed(new), strict=True))
        self.seconds += time.perf_counter() - started
        return np.stack([self.cache[t] for t in texts]) if texts else np.zeros((0, 1), np.float32)


def _digest(*parts: object) -> str:
    return hashlib.sha256("\x1f".join(map(str, parts)).encode("utf-8")).hexdigest()[:16]


def extracted_record_id(source: str, record_id: str, turn: int) -> str:
    """Return the library id of the strategy extracted from the follow-up with this key."""
    return f"x-{_digest(source, record_id, turn)}"


def _extracted_record(extraction: ExtractionLike) -> StrategyRecord:
    e = extraction
    return StrategyRecord(
        id=extracted_record_id(e.source, e.record_id, e.turn),
        text=e.strategy,
        level="extracted",
        provenance=[Provenance(source=e.source, record_id=e.record_id, turn=e.turn)],
    )


@dataclass
class _Build:
    """The settings and running state of one library build."""

    abstractor: Abstractor
    vectors: _Vectors
    threshold: float
    concurrency: int
    under: dict[str, Counter[str]] = field(default_factory=dict)
    """Record id -> number of extracted strategies under it, per source."""

    async def tier(
        self, library: Library, tier: int, level: Level, layer: list[StrategyRecord]
    ) -> list[StrategyRecord]:
        """Cluster `layer`, abstract each cluster into a parent record; return the parents."""
        started = time.perf_counter()
        texts = [r.text for r in layer]
        matrix = self.vectors.embed(texts)
        groups = greedy_cluster(matrix, self.threshold, DEFAULT_BLOCK).members()
        abstractions = await abstract_all(self.abstractor, groups, texts, matrix, self.concurrency)
        parents = []
        for group, abstraction in zip(groups, abstractions, strict=True):
            children = [layer[i] for i in group]
            parent = self.parent(tier, level, abstraction.text, children)
            for child in children:
                child.parent_id = parent.id
            library.usage += abstraction.usage
            if abstraction.method == "fallback":
                library.fallbacks[parent.id] = abstraction.note or "unknown"
            parents.append(parent)
        methods = dict(Counter(a.method for a in abstractions))
        singletons = sum(len(g) == 1 for g in groups)
        seconds = time.perf_counter() - started
        library.tiers.append(TierStats(tier, level, len(groups), singletons, methods, seconds))
        library.records += parents
        return parents

    def parent(
        self, tier: int, level: Level, text: str, children: list[StrategyRecord]
    ) -> StrategyRecord:
        """Build a cluster's record; its provenance counts the extracted strategies per source."""
        child_ids = sorted(c.id for c in children)
        record_id = f"t{tier}-{_digest(text, *child_ids)}"
        counts = sum((self.under[c] for c in child_ids), Counter())
        self.under[record_id] = counts
        provenance = [
            Provenance(source=source, note=f"{n} extracted strategies")
            for source, n in sorted(counts.items())
        ]
        support = sum(c.support for c in children)
        return StrategyRecord(
            id=record_id, text=text, level=level, provenance=provenance, support=support
        )


def _annotators(items: list[ExtractionLike]) -> str:
    """Name who extracted the strategies, from the extractions' `annotator` fields."""
    names = sorted({str(a) for e in items if (a := getattr(e, "annotator", None))})
    return ", ".join(names) or "unknown"


def _counts(library: Library) -> dict[str, Any]:
    levels = Counter(r.level for r in library.records)
    return {
        "extracted": levels["extracted"],
        "intermediate": levels["intermediate"],
        "high": levels["high"],
        "answers": len(library.answer_embeddings),
        "clusters": [t.clusters for t in library.tiers],
        "singletons": [t.singletons for t in library.tiers],
        "methods": [t.methods for t in library.tiers],
        "fallbacks": len(library.fallbacks),
    }


def _embed_answers(
    vectors: _Vectors,
    items: list[ExtractionLike],
    records: list[StrategyRecord],
    pairs_by_key: Mapping[Key, PairLike],
) -> dict[str, np.ndarray]:
    found = [
        (record.id, pair.answer)
        for item, record in zip(items, records, strict=True)
        if (pair := pairs_by_key.get((item.source, item.record_id, item.turn))) is not None
    ]
    if not found:
        return {}
    started = time.perf_counter()
    matrix = vectors.embedding.embed([answer for _, answer in found])
    vectors.seconds += time.perf_counter() - started
    return {record_id: row for (record_id, _), row in zip(found, matrix, strict=True)}
