"""Critic: a novelty check, then an LLM verdict on correctness, coherence, depth and insight."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal, Protocol, get_args, get_origin

from langchain_core.messages import BaseMessage, SystemMessage
from pydantic import BaseModel, Field, field_validator
from rapidfuzz import fuzz, process

from agents.chat import ChatClient, ModelError
from dialogues.messages import conversation, user_texts, with_request
from dialogues.models import Usage
from prompts import render

Score = Literal[1, 2, 3, 4, 5]


class CriticScores(BaseModel):
    """Your verdict on the user's new message."""

    correct: bool = Field(
        description="it does not contradict the answer and does not ask what was already answered."
    )
    coherent: bool = Field(
        description="it is a new request, doubt, confirmation or inquiry about the answer, a "
        "follow-up on a concept in it, an extension of earlier requests, or a related new request."
    )
    depth: Score = Field(description="how far it pushes beyond the surface of the answer.")
    insight: Score = Field(description="how thoughtful and purposeful it is.")
    feedback: str = Field(description="one short sentence on how to improve it.")

    @field_validator("feedback")
    @classmethod
    def _short(cls, value: str) -> str:
        return " ".join(value.split())[:200]


def rubric() -> list[tuple[str, str]]:
    """Return the critic's rubric, (field with its scale, description), from `CriticScores`.

    The field descriptions are the one text of the rubric: the model reads them in the schema
    of its structured reply and in its system prompt (`prompts/critic.jinja2`).
    """
    lines = []
    for name, info in CriticScores.model_fields.items():
        scale = get_args(info.annotation) if get_origin(info.annotation) is Literal else ()
        label = f"{name} ({min(scale)}-{max(scale)})" if scale else name
        lines.append((label, str(info.description)))
    return lines


@dataclass
class CriticVerdict:
    """Whether a draft is accepted, why, and the scores behind it."""

    accepted: bool
    reason: str
    similarity: float = 0.0
    scores: CriticScores | None = None
    usage: Usage = field(default_factory=Usage)

    def as_record(self) -> dict:
        """Return plain data for the state and the output file."""
        return {
            "accepted": self.accepted,
            "reason": self.reason,
            "similarity": round(self.similarity, 3),
            "scores": self.scores.model_dump() if self.scores else None,
        }

    @property
    def feedback(self) -> str:
        """What the simulator should change in its next draft."""
        if self.scores is not None and self.scores.feedback:
            return f"{self.reason}. {self.scores.feedback}"
        return self.reason


class Critic(Protocol):
    """Accepts or rejects a drafted user instruction."""

    async def critique(self, messages: Sequence[BaseMessage], draft: str) -> CriticVerdict:
        """Judge `draft` as the next user message of `messages`."""
        ...


class AcceptAllCritic:
    """No critic: accept every non-empty draft."""

    async def critique(self, messages: Sequence[BaseMessage], draft: str) -> CriticVerdict:
        """Accept unless the draft is empty."""
        if not draft.strip():
            return CriticVerdict(False, "empty draft")
        return CriticVerdict(True, "accepted (critic disabled)")


class NoveltyCritic:
    """Reject drafts too close to an earlier user instruction (Levenshtein ratio > threshold)."""

    def __init__(self, threshold: float = 0.8) -> None:
        """Reject above `threshold` (the paper: 0.8)."""
        self.threshold = threshold

    def similarity(self, messages: Sequence[BaseMessage], draft: str) -> float:
        """Return the highest Levenshtein ratio (0-1) of `draft` to an earlier user message."""
        best = process.extractOne(draft, user_texts(messages), scorer=fuzz.ratio)
        return best[1] / 100 if best else 0.0

    async def critique(self, messages: Sequence[BaseMessage], draft: str) -> CriticVerdict:
        """Accept a non-empty draft that is new enough."""
        if not draft.strip():
            return CriticVerdict(False, "empty draft")
        similarity = self.similarity(messages, draft)
        if similarity > self.threshold:
            reason = f"too similar to an earlier user message (ratio {similarity:.2f})"
            return CriticVerdict(False, reason, similarity)
        return CriticVerdict(True, "novel", similarity)


class LLMCritic:
    """Novelty check first; then an LLM judges the draft and thresholds depth and insight."""

    def __init__(
        self, chat: ChatClient, novelty: NoveltyCritic, min_depth: int = 3, min_insight: int = 3
    ) -> None:
        """Judge with `chat` after `novelty`; accept at or above both minimum scores."""
        self.chat, self.novelty = chat, novelty
        self.min_depth, self.min_insight = min_depth, min_insight

    async def critique(self, messages: Sequence[BaseMessage], draft: str) -> CriticVerdict:
        """Return the verdict; an unparseable LLM verdict counts as a rejection.

        The model sees its rubric, the conversation, then the draft, so that a redraft's request
        differs from the rejected one's only in its last lines.

        Raises:
            ModelError: If no attempt got a usable reply at all (empty, or tool arguments that
                are not JSON): the server is broken, and rejecting real drafts for it would end
                the dialogue early as if the drafts were bad.
        """
        verdict = await self.novelty.critique(messages, draft)
        if not verdict.accepted:
            return verdict
        prompt = [SystemMessage(content=render("critic", rubric=rubric()))]
        prompt += with_request(conversation(messages), render("critic_draft", draft=draft))
        result = await self.chat.structured(CriticScores, prompt)
        scores = result.value
        if scores is None and result.unusable:
            raise ModelError(f"the critic got no usable reply from the model: {result.error}")
        if scores is None:
            reason = f"critic gave no valid verdict ({result.error})"
            return CriticVerdict(False, reason, verdict.similarity, None, result.usage)
        reason = self._judge(scores)
        return CriticVerdict(
            reason is None, reason or "accepted", verdict.similarity, scores, result.usage
        )

    def _judge(self, scores: CriticScores) -> str | None:
        problems = []
        if not scores.correct:
            problems.append("not correct")
        if not scores.coherent:
            problems.append("not coherent")
        if scores.depth < self.min_depth:
            problems.append(f"depth {scores.depth} < {self.min_depth}")
        if scores.insight < self.min_insight:
            problems.append(f"insight {scores.insight} < {self.min_insight}")
        return ", ".join(problems) or None
