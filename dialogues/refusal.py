"""Refused answers: the one rule the export's refusal filter and the ending rules share.

An answer is refused when it is empty or opens (within `REFUSAL_WINDOW` characters, at a sentence
start) with one of the common refusal openers. The export cuts a dialogue there
(`batch.filters.refusal`), and a user may not end a dialogue right after one (`dialogues.ending`).
"""

from __future__ import annotations

import re

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
