"""The `truncate_refusals` filter: cut a dialogue at its first empty or refused answer.

What counts as refused is `dialogues.refusal`'s rule, shared with the ending rules.
"""

from __future__ import annotations

from batch.filters.documents import truncate
from batch.filters.report import FilterStats
from dialogues.models import DialogueDocument
from dialogues.refusal import REFUSAL_PATTERNS, REFUSAL_WINDOW, is_refusal

__all__ = ["REFUSAL_PATTERNS", "REFUSAL_WINDOW", "is_refusal"]


def _truncate_refusals(
    documents: list[DialogueDocument], stats: FilterStats
) -> list[DialogueDocument]:
    out = []
    empty = refused = opening = 0
    for doc in documents:
        turns = doc.turns
        if doc.opening is not None and is_refusal(doc.opening.answer):
            opening += 1
            stats.dialogues_affected += 1
            stats.turns_removed += len(turns)
            out.append(truncate(doc, 0, "refusal", drop_opening=True))
            continue
        cut = next((i for i, t in enumerate(turns) if is_refusal(t.answer)), None)
        if cut is None:
            out.append(doc)
            continue
        if turns[cut].answer.strip():
            refused += 1
        else:
            empty += 1
        stats.dialogues_affected += 1
        stats.turns_removed += len(turns) - cut
        out.append(truncate(doc, cut, "refusal"))
    stats.details = {"refused_answers": refused, "empty_answers": empty}
    stats.details["refused_openings"] = opening
    return out
