"""The strategy library behind a small interface: Chroma for real runs, in-memory for tests.

`stores.chroma` and `stores.embeddings` import chromadb (about a second), so they are not
imported here; import them where a Chroma store is opened.
"""

from stores.base import Candidate, Level, Provenance, StrategyRecord, StrategyStore
from stores.memory import HashingEmbedding, InMemoryStrategyStore
from stores.starter import LibraryNotFound, ensure_library, load_starter

__all__ = [
    "Candidate",
    "HashingEmbedding",
    "InMemoryStrategyStore",
    "Level",
    "LibraryNotFound",
    "Provenance",
    "StrategyRecord",
    "StrategyStore",
    "ensure_library",
    "load_starter",
]
