"""The strategy library on Chroma: one collection per library, embedded or on a Chroma server."""

from __future__ import annotations

import json
import re
from collections.abc import Collection, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import chromadb
import numpy as np
from chromadb.api import ClientAPI
from chromadb.api.types import EmbeddingFunction
from chromadb.config import Settings
from platformdirs import user_data_dir

from runtime.urls import redact_url
from stores.base import (
    Candidate,
    Level,
    Provenance,
    StoreError,
    StoreUnavailable,
    StrategyRecord,
)
from stores.contexts import AnswerContext, ContextRows
from stores.embeddings import MiniLMEmbedding
from stores.memory import Embedder, embedder_name

PREFIX = "ideas-"
"""Collection name = PREFIX + library name."""
CONTEXTS_SUFFIX = "--answers"
"""Collection name of a library's answer contexts = its collection name + this suffix."""
_META_KEY = "ideas:metadata"
_EMBEDDING_KEY = "ideas:embedding"
_NAME = re.compile(r"[a-zA-Z0-9](?:[a-zA-Z0-9._-]{0,500}[a-zA-Z0-9])?")


def default_path() -> Path:
    """Return the default directory of the embedded store (the same as the settings' default)."""
    return Path(user_data_dir("ideas")) / "store"


def connect(path: Path | None = None, chroma_url: str | None = None) -> ClientAPI:
    """Open a Chroma client, with telemetry off.

    Args:
        path: Directory of the embedded (persistent) store; created when missing.
        chroma_url: URL of a Chroma server, e.g. `http://host:8000`; wins over `path`.

    Returns:
        An `HttpClient` when `chroma_url` is set, else a `PersistentClient`.

    Raises:
        StoreUnavailable: The Chroma server did not answer, or is not a Chroma server.
        StoreError: The URL is unusable, or the store directory cannot be created or opened.
    """
    settings = Settings(anonymized_telemetry=False)
    if chroma_url:
        shown = redact_url(chroma_url)
        try:
            url = urlparse(chroma_url if "://" in chroma_url else f"http://{chroma_url}")
            https = url.scheme == "https"
            host, port = url.hostname or "localhost", url.port or (443 if https else 8000)
        except ValueError as exc:
            raise StoreError(f"--chroma-url {shown}: {exc}") from None
        try:
            return chromadb.HttpClient(host=host, port=port, ssl=https, settings=settings)
        except Exception as exc:  # noqa: BLE001 - chromadb raises anything from a wrong server
            reason = " ".join(str(exc).split())[:200] or type(exc).__name__
            raise StoreUnavailable(f"Chroma server {shown} did not answer: {reason}") from None
    directory = Path(path) if path else default_path()
    if directory.exists() and not directory.is_dir():
        raise StoreError(f"{directory}: the store must be a directory, and this is a file")
    try:
        directory.mkdir(parents=True, exist_ok=True)
        return chromadb.PersistentClient(path=str(directory), settings=settings)
    except OSError as exc:
        raise StoreError(f"{directory}: cannot open the store: {_why(exc)}") from None
    except Exception as exc:  # noqa: BLE001 - chromadb wraps sqlite and Rust errors its own way
        reason = " ".join(str(exc).split())[:200] or type(exc).__name__
        raise StoreError(f"{directory}: cannot open the store: {reason}") from None


def _why(exc: OSError) -> str:
    return (exc.strerror or str(exc)).lower()


def list_libraries(client: ClientAPI) -> list[str]:
    """Return the names of the strategy libraries held by a Chroma client, sorted."""
    names = (c if isinstance(c, str) else c.name for c in client.list_collections())
    return sorted(
        n.removeprefix(PREFIX)
        for n in names
        if n.startswith(PREFIX) and not n.endswith(CONTEXTS_SUFFIX)
    )


class ChromaStrategyStore:
    """A strategy library stored in one Chroma collection (cosine space).

    Documents are the strategy texts; each record's level, parent id, support and provenance
    (as JSON) are its metadata. The library's metadata is JSON under one key of the collection's
    metadata. Vectors are always computed by `embedding` and passed explicitly, so Chroma's own
    default embedding function (which downloads a model) is never used.

    Args:
        client: A Chroma client (see `connect`).
        library: The library's name; the collection is `ideas-<library>`.
        embedding: Computes the vectors; vectors of two embeddings are never mixed.
        location: Where the store lives (a path or URL), for messages.

    Raises:
        StoreError: If the library name is not a valid collection name, or the collection holds
            vectors of another embedding.
    """

    def __init__(
        self, client: ClientAPI, library: str, embedding: Embedder, location: str = "Chroma"
    ) -> None:
        name = PREFIX + library
        if not _NAME.fullmatch(name):
            raise StoreError(
                f"invalid library name {library!r}: use letters, digits, '.', '_', '-'"
            )
        self.library = library
        self.embedding = embedding
        self.location = location
        self._client = client
        self._name = name
        self._collection = self._open_collection()
        wanted = embedder_name(embedding)
        stored = (self._collection.metadata or {}).get(_EMBEDDING_KEY)
        if stored and stored != wanted and self._collection.count():
            raise StoreError(f"library {library!r} was embedded with {stored!r}, not {wanted!r}")

    def _open_collection(self) -> Any:
        chroma_function = self.embedding if isinstance(self.embedding, EmbeddingFunction) else None
        return self._client.get_or_create_collection(
            self._name,
            embedding_function=chroma_function,
            configuration={"hnsw": {"space": "cosine"}},
        )

    def clear(self) -> None:
        """Delete every record, the metadata and the answer contexts of this library."""
        for name in (self._name, self._name + CONTEXTS_SUFFIX):
            if name in {c.name for c in self._client.list_collections()}:
                self._client.delete_collection(name)
        self._collection = self._open_collection()

    def contexts(self) -> ChromaContextIndex:
        """Return the library's answer-context index (embeddings only, no answer text)."""
        collection = self._client.get_or_create_collection(
            self._name + CONTEXTS_SUFFIX,
            embedding_function=None,
            configuration={"hnsw": {"space": "cosine"}},
        )
        return ChromaContextIndex(collection)

    def add(self, records: Sequence[StrategyRecord]) -> None:
        """Insert or update records (by id)."""
        if not records:
            return
        self._collection.upsert(
            ids=[r.id for r in records],
            documents=[r.text for r in records],
            embeddings=self.embedding.embed([r.text for r in records]),
            metadatas=[_to_metadata(r) for r in records],
        )
        if _EMBEDDING_KEY not in (self._collection.metadata or {}):
            self.set_metadata(self.metadata())

    def get(self, strategy_id: str) -> StrategyRecord | None:
        """Return one record, or None when the id is unknown."""
        found = self._collection.get(ids=[strategy_id], include=["documents", "metadatas"])
        records = _from_result(found)
        return records[0] if records else None

    def records(self, level: Level | None = None) -> list[StrategyRecord]:
        """Return all records, optionally of one level, sorted by id."""
        where = {"level": level} if level else None
        found = self._collection.get(where=where, include=["documents", "metadatas"])
        return sorted(_from_result(found), key=lambda r: r.id)

    def count(self, level: Level | None = None) -> int:
        """Count records, optionally of one level."""
        if level is None:
            return self._collection.count()
        return len(self._collection.get(where={"level": level}, include=[])["ids"])

    def search(
        self, text: str, k: int, *, level: Level = "high", exclude: Collection[str] = ()
    ) -> list[Candidate]:
        """Return up to k records of `level` most similar to `text`, skipping `exclude` ids."""
        total = self._collection.count()
        if k <= 0 or total == 0:
            return []
        found = self._collection.query(
            query_embeddings=self.embedding.embed([text]),
            n_results=min(k + len(exclude), total),
            where={"level": level},
            include=["documents", "distances"],
        )
        excluded = set(exclude)
        hits = zip(found["ids"][0], found["documents"][0], found["distances"][0], strict=True)
        kept = [(i, doc, 1.0 - dist) for i, doc, dist in hits if i not in excluded][:k]
        return [
            Candidate(id=i, text=doc, score=score, rank=rank)
            for rank, (i, doc, score) in enumerate(kept)
        ]

    def metadata(self) -> dict[str, Any]:
        """Return the library's metadata."""
        return json.loads((self._collection.metadata or {}).get(_META_KEY, "{}"))

    def set_metadata(self, metadata: dict[str, Any]) -> None:
        """Replace the library's metadata (it must be JSON-serialisable)."""
        self._collection.modify(
            metadata={
                _META_KEY: json.dumps(metadata, sort_keys=True),
                _EMBEDDING_KEY: embedder_name(self.embedding),
            }
        )


class ChromaContextIndex:
    """Answer contexts in their own Chroma collection: an embedding and a strategy id each.

    The metadata also holds the answer's dialogue digest (`group`) and, for libraries built since
    the ranker's domain-fit feature, its code-block flag (`code`).
    """

    def __init__(self, collection: Any) -> None:
        """Wrap `collection`."""
        self._collection = collection

    def add(self, contexts: Sequence[AnswerContext]) -> None:
        """Insert or replace contexts (by id)."""
        for start in range(0, len(contexts), 1000):
            batch = contexts[start : start + 1000]
            self._collection.upsert(
                ids=[c.id for c in batch],
                embeddings=[c.embedding.tolist() for c in batch],
                metadatas=[_context_metadata(c) for c in batch],
            )

    def nearest(self, embedding: Any, n: int) -> list[tuple[str, float]]:
        """Return up to n (strategy_id, cosine similarity) pairs, closest first."""
        total = self._collection.count()
        if total == 0 or n <= 0:
            return []
        found = self._collection.query(
            query_embeddings=[embedding.tolist()],
            n_results=min(n, total),
            include=["metadatas", "distances"],
        )
        pairs = zip(found["metadatas"][0], found["distances"][0], strict=True)
        return [(meta["strategy_id"], 1.0 - dist) for meta, dist in pairs]

    def count(self) -> int:
        """Return the number of stored contexts."""
        return self._collection.count()

    def rows(self) -> ContextRows:
        """Return every stored context (ordered by id, so the result does not depend on Chroma)."""
        found = self._collection.get(include=["embeddings", "metadatas"])
        order = sorted(range(len(found["ids"])), key=lambda i: found["ids"][i])
        metas = found["metadatas"]
        vectors = np.asarray(found["embeddings"], dtype=np.float32).reshape(len(order), -1)
        return ContextRows(
            ids=[found["ids"][i] for i in order],
            strategy_ids=[metas[i]["strategy_id"] for i in order],
            groups=[metas[i].get("group") or found["ids"][i] for i in order],
            vectors=vectors[order] if order else vectors,
            code=[_code_flag(metas[i].get("code")) for i in order],
        )


def _context_metadata(context: AnswerContext) -> dict[str, str | bool]:
    """A context's Chroma metadata; the code flag only when known (Chroma stores no None)."""
    meta: dict[str, str | bool] = {
        "strategy_id": context.strategy_id,
        "group": context.group or context.id,
    }
    if context.code is not None:
        meta["code"] = context.code
    return meta


def _code_flag(value: object) -> bool | None:
    """Read a stored code flag: None for a context written before the flag existed."""
    return None if value is None else bool(value)


def open_store(
    library: str,
    path: Path | None = None,
    chroma_url: str | None = None,
    embedding: Embedder | None = None,
) -> ChromaStrategyStore:
    """Open (or create) a strategy library on Chroma.

    Args:
        library: The library's name, e.g. `starter`.
        path: Directory of the embedded store (default: the user data dir); created when missing.
        chroma_url: URL of a Chroma server (`http://host:8000`); used instead of `path` when set.
        embedding: The embedding; default the offline all-MiniLM-L6-v2 (`MiniLMEmbedding`).

    Returns:
        The store; it may be empty (see `stores.starter.ensure_library`).
    """
    client = connect(path, chroma_url)
    location = redact_url(chroma_url) if chroma_url else str(path or default_path())
    return ChromaStrategyStore(client, library, embedding or MiniLMEmbedding(), location)


def _to_metadata(record: StrategyRecord) -> dict[str, str | int]:
    """Flatten a record into scalar Chroma metadata."""
    return {
        "level": record.level,
        "parent_id": record.parent_id or "",
        "support": record.support,
        "provenance": json.dumps([p.model_dump(exclude_none=True) for p in record.provenance]),
    }


def _from_result(found: Any) -> list[StrategyRecord]:
    """Rebuild records from a Chroma `get` result."""
    return [
        StrategyRecord(
            id=i,
            text=doc,
            level=meta["level"],
            parent_id=meta.get("parent_id") or None,
            support=int(meta.get("support", 1)),
            provenance=[Provenance(**p) for p in json.loads(meta.get("provenance", "[]"))],
        )
        for i, doc, meta in zip(found["ids"], found["documents"], found["metadatas"], strict=True)
    ]
