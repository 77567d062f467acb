"""The `truncate_refusals` filter: cut a dialogue at its first empty or refused answer."""

from __future__ import annotations

import re

from batch.filters.documents import truncate
from batch.filters.report import FilterStats
from dialogues.models import DialogueDocument

REFUSAL_PATTERNS: tuple[str, ...] = (
    r"I(?:'m| am) sorry,? but (?:I\b|as an AI)",
    r"(?:I(?:'m| am) )?sorry,? (?:but )?I (?:can't|cannot|can not|won't|will not|am unable"
    r"|'m unable)",
    r"I apologi[sz]e,? but (?:I\b|as an AI)",
    r"I (?:cannot|can't|can not) (?:help|assist|provide|comply|fulfil|fulfill|answer|support"
    r"|do that|continue|engage|create|generate|write|share|give)",
    r"As an AI(?: language model| assistant| model)?,? I (?:cannot|can't|can not|am unable"
    r"|'m unable|am not able|do not|don't|won't|will not)",
    r"I(?: am|'m) unable to",
    r"I(?: am|'m) not able to (?:help|assist|provide|comply|answer|fulfil|fulfill)",
    r"I won't be able to",
    r"I (?:will not|won't) (?:help|assist|provide|comply|answer)",
    r"I must (?:decline|refuse)",
)
"""Common refusal openers (case-insensitive), matched at a sentence start near the answer start."""

REFUSAL_WINDOW = 200
"""Characters at the start of an answer searched for a refusal opener."""

_REFUSAL = re.compile(
    r"(?:^|(?<=[.!?\n]))[\s\"'*_>(\[]*(?:" + "|".join(REFUSAL_PATTERNS) + ")", re.IGNORECASE
)


def is_refusal(answer: str) -> bool:
    """Whether an answer is empty or opens with a refusal (`REFUSAL_PATTERNS`)."""
    text = answer.strip().replace("\u2019", "'")
    return not text or _REFUSAL.search(text[:REFUSAL_WINDOW]) is not None


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
