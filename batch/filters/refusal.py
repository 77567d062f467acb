"""The `truncate_refusals` filter: cut a dialogue at its first empty or refused answer.

What counts as refused is `dialogues.refusal`'s rule, shared with the ending rules.
"""

from __future__ import annotations

from batch.filters.documents import Document, truncate
from batch.filters.report import FilterStats
from dialogues.refusal import REFUSAL_PATTERNS, REFUSAL_WINDOW, is_refusal

__all__ = ["REFUSAL_PATTERNS", "REFUSAL_WINDOW", "is_refusal"]


def _truncate_refusals(documents: list[Document], stats: FilterStats) -> list[Document]:
    out = []
    empty = refused = opening = 0
    for doc in documents:
        turns = doc.get("turns") or []
        answer = (doc.get("opening") or {}).get("answer")
        if doc.get("opening") and answer is not None and is_refusal(answer):
            opening += 1
            stats.dialogues_affected += 1
            stats.turns_removed += len(turns)
            out.append(truncate(doc, 0, "refusal", drop_opening=True))
            continue
        cut = next((i for i, t in enumerate(turns) if is_refusal(t.get("answer") or "")), None)
        if cut is None:
            out.append(doc)
            continue
        if (turns[cut].get("answer") or "").strip():
            refused += 1
        else:
            empty += 1
        stats.dialogues_affected += 1
        stats.turns_removed += len(turns) - cut
        out.append(truncate(doc, cut, "refusal"))
    stats.details = {"refused_answers": refused, "empty_answers": empty}
    stats.details["refused_openings"] = opening
    return out
