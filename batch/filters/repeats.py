"""The `self_repeat` filter: drop a dialogue whose generated user turns repeat each other."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from rapidfuzz import process
from rapidfuzz.distance import Levenshtein

from batch.filters.config import TOLERANCE
from batch.filters.documents import instructions, normalise_text
from batch.filters.report import FilterStats
from dialogues.models import DialogueDocument


def repeats_itself(instructions: Sequence[str], threshold: float) -> bool:
    """Whether any two of `instructions` have a normalised Levenshtein similarity >= threshold."""
    if len(instructions) < 2:
        return False
    texts = [normalise_text(t) for t in instructions]
    cutoff = threshold - TOLERANCE
    scores = process.cdist(
        texts, texts, scorer=Levenshtein.normalized_similarity, score_cutoff=cutoff
    )
    return bool((np.triu(scores, 1) >= cutoff).any())


def _self_repeat(
    documents: list[DialogueDocument], threshold: float, stats: FilterStats
) -> list[DialogueDocument]:
    out = []
    for doc in documents:
        if repeats_itself(instructions(doc), threshold):
            stats.dialogues_affected += 1
            stats.dialogues_dropped += 1
            stats.turns_removed += len(doc.turns)
        else:
            out.append(doc)
    return out
