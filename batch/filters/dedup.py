"""The `dedup` filter: cut dialogues at near-duplicate user turns, by embedding cosine."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from batch.filters.config import TOLERANCE, FilterConfig, FilterError
from batch.filters.documents import instructions, truncate
from batch.filters.report import FilterStats
from dialogues.models import DialogueDocument
from stores.memory import Embedder

DEDUP_BLOCK = 1024
"""User turns compared with each other per block (whole dialogues; a long one may exceed it)."""

DEDUP_TILE = 8192
"""Kept turns per matrix product; a tile of similarities is DEDUP_BLOCK x DEDUP_TILE float32."""

EMBED_CHUNK = 4096
"""Texts handed to the embedder per call."""


def embed_texts(embedder: Embedder, texts: Sequence[str]) -> np.ndarray:
    """Embed `texts` in chunks; return float32 rows scaled to unit length."""
    chunks = []
    for start in range(0, len(texts), EMBED_CHUNK):
        part = np.asarray(embedder.embed(list(texts[start : start + EMBED_CHUNK])), np.float32)
        if part.ndim != 2 or len(part) != len(texts[start : start + EMBED_CHUNK]):
            raise FilterError(f"the embedder returned an array of shape {part.shape}")
        chunks.append(part)
    if not chunks:
        return np.zeros((0, 1), dtype=np.float32)
    vectors = np.concatenate(chunks)
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return vectors / np.clip(norms, 1e-12, None)


def dedup_keep_counts(
    vectors: np.ndarray,
    lengths: Sequence[int],
    threshold: float,
    *,
    min_keep: int = 0,
    block: int = DEDUP_BLOCK,
    tile: int = DEDUP_TILE,
) -> list[int]:
    """Return how many leading turns each dialogue keeps after near-duplicate removal.

    Args:
        vectors: Unit-length embeddings of every turn, dialogue after dialogue, in turn order.
        lengths: Turns per dialogue (they sum to `len(vectors)`).
        threshold: A turn whose cosine to an already kept turn is >= this is a duplicate.
        min_keep: A dialogue keeping fewer turns than this contributes none to the kept set.
        block: Turns per block (whole dialogues), compared with each other in one Gram matrix.
        tile: Kept turns per matrix product against a block.

    Returns:
        Per dialogue, the number of turns before its first duplicate (its length if none).
    """
    thr = np.float32(threshold - TOLERANCE)
    offsets = np.concatenate([[0], np.cumsum(lengths, dtype=np.int64)])
    if offsets[-1] != len(vectors):
        raise ValueError(f"lengths sum to {offsets[-1]}, but there are {len(vectors)} vectors")
    kept_rows = np.empty_like(vectors)
    n_kept = 0
    keeps = list(lengths)
    first = 0
    while first < len(lengths):
        last = first + 1
        while last < len(lengths) and offsets[last + 1] - offsets[first] <= block:
            last += 1
        lo, hi = int(offsets[first]), int(offsets[last])
        x = vectors[lo:hi]
        best = np.full(hi - lo, -np.inf, dtype=np.float32)
        for start in range(0, n_kept, tile):
            sims = x @ kept_rows[start : min(start + tile, n_kept)].T
            np.maximum(best, sims.max(axis=1), out=best)
        seen_before = best >= thr
        pairs = np.tril((x @ x.T) >= thr, -1)
        has_pair = pairs.any(axis=1)
        local: list[int] = []
        for d in range(first, last):
            begin = len(local)
            keep = lengths[d]
            for j, i in enumerate(range(int(offsets[d]) - lo, int(offsets[d + 1]) - lo)):
                if seen_before[i] or (has_pair[i] and local and pairs[i, local].any()):
                    keep = j
                    break
                local.append(i)
            if keep < min_keep:
                del local[begin:]
            keeps[d] = keep
        kept_rows[n_kept : n_kept + len(local)] = x[local]
        n_kept += len(local)
        first = last
    return keeps


def _dedup(
    documents: list[DialogueDocument],
    config: FilterConfig,
    embedder: Embedder,
    stats: FilterStats,
) -> list[DialogueDocument]:
    texts = [text for d in documents for text in instructions(d)]
    lengths = [len(d.turns) for d in documents]
    vectors = embed_texts(embedder, texts)
    keeps = dedup_keep_counts(vectors, lengths, config.dedup_threshold, min_keep=config.min_turns)
    out = []
    for doc, length, keep in zip(documents, lengths, keeps, strict=True):
        if keep < length:
            stats.dialogues_affected += 1
            stats.turns_removed += length - keep
            doc = truncate(doc, keep, "dedup")
        out.append(doc)
    stats.details = {"turns_embedded": len(texts)}
    return out
