"""An optional judge model: MT-Bench-style 1-10 ratings of each generated instruction.

The judge sees the dialogue up to the instruction (the last few messages, each cut to a length)
and rates the *user's* new message for depth, insight and coherence. The scores are attached to
copies of the dialogues (`EvalTurn.judge`), where the judge metrics and curves read them.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Literal

from jinja2 import Environment, StrictUndefined
from langchain_core.messages import HumanMessage
from pydantic import BaseModel, Field, field_validator

from agents.chat import ChatClient
from dialogues.models import Usage
from evaluation.inputs import EvalDialogue, Message
from runtime.pool import run_pool

Rating = Literal[1, 2, 3, 4, 5, 6, 7, 8, 9, 10]

PROMPT = """\
Please act as an impartial judge and rate the quality of the USER's new message in the \
conversation between a user and an AI assistant shown below. You rate the user's message, not \
the assistant's answers. Be as objective as possible; do not let the message's length \
influence you.

Rate each aspect from 1 to 10:
- depth: 1-2 generic or a restatement ("tell me more"); 3-4 a surface-level follow-up; 5-6 asks \
about a specific point of the answer; 7-8 probes mechanisms, trade-offs, evidence or edge cases; \
9-10 an expert-level question that pushes well beyond the answer.
- insight: 1-2 no visible purpose; 3-4 a vague purpose; 5-6 a clear but obvious purpose; 7-8 a \
thoughtful purpose that shows critical thinking; 9-10 a sharp, original angle that would make \
the next answer much more valuable.
- coherence: 1-2 unrelated to the conversation or contradicts it; 3-4 loosely related; 5-6 on \
topic but ignores the last answer; 7-8 follows from the last answer or earlier requests; 9-10 \
builds precisely on a concept or entity of the last answer.
- reason: one short sentence justifying the ratings.

The conversation so far{% if omitted %} ({{ omitted }} earlier messages omitted){% endif %}:
{% for message in history %}
[{{ message.role }}]
{{ message.content }}

{% endfor %}
The user's new message:
\"\"\"
{{ instruction }}
\"\"\"
"""
"""The judge's prompt (Jinja, rendered strictly)."""

_TEMPLATE = Environment(
    undefined=StrictUndefined, autoescape=False, trim_blocks=True, lstrip_blocks=True
).from_string(PROMPT)


class JudgeScores(BaseModel):
    """Your ratings of the user's new message."""

    depth: Rating = Field(description="1-10: how far it goes beyond the surface of the answer.")
    insight: Rating = Field(description="1-10: how thoughtful and purposeful it is.")
    coherence: Rating = Field(description="1-10: how well it follows from the conversation.")
    reason: str = Field(description="One short sentence justifying the ratings.")

    @field_validator("reason")
    @classmethod
    def _short(cls, value: str) -> str:
        return " ".join(value.split())[:200]


class Judge:
    """Rates generated instructions with a chat model (validated, retried by `ChatClient`).

    Args:
        chat: The judge model's client.
        concurrency: Instructions rated at the same time.
        history_messages: Most recent messages of the history shown to the judge.
        message_chars: Characters kept of each shown message (its end is cut).
    """

    def __init__(
        self,
        chat: ChatClient,
        *,
        concurrency: int = 4,
        history_messages: int = 6,
        message_chars: int = 1500,
    ) -> None:
        self.chat = chat
        self.history_messages = history_messages
        self.message_chars = message_chars
        self.usage = Usage()
        """What the judge spent so far."""
        self.failures: list[str] = []
        """Why ratings failed (no valid output after the client's retries)."""
        self.concurrency = concurrency

    def prompt(self, history: Sequence[Message], instruction: str) -> str:
        """Render the judge's prompt for `instruction` after `history`."""
        shown = [m for m in history if m.role != "system"]
        recent = shown[-self.history_messages :] if self.history_messages > 0 else []
        cut = [{"role": m.role, "content": _cut(m.content, self.message_chars)} for m in recent]
        return _TEMPLATE.render(
            history=cut, omitted=len(shown) - len(recent), instruction=instruction
        ).strip()

    async def score(self, history: Sequence[Message], instruction: str) -> JudgeScores | None:
        """Rate one instruction; None when the model gave no valid ratings."""
        message = HumanMessage(content=self.prompt(history, instruction))
        result = await self.chat.structured(JudgeScores, [message])
        self.usage += result.usage
        if result.value is None:
            self.failures.append(result.error or "invalid output")
        return result.value

    async def judge_dialogue(self, dialogue: EvalDialogue) -> EvalDialogue:
        """Return a copy of `dialogue` whose turns carry the judge's ratings (None on failure)."""
        (judged,) = await self.judge_dialogues([dialogue])
        return judged

    async def judge_dialogues(self, dialogues: Sequence[EvalDialogue]) -> list[EvalDialogue]:
        """Rate every instruction of every dialogue (at most `concurrency` at a time).

        The ratings are asked for in dialogue and turn order; on the first error the ratings in
        flight are cancelled and the error propagates.
        """
        scores: dict[tuple[int, int], JudgeScores | None] = {}

        async def rate(at: tuple[int, int]) -> None:
            turn = dialogues[at[0]].turns[at[1]]
            scores[at] = await self.score(dialogues[at[0]].history(turn), turn.instruction)

        items = [(i, j) for i, dialogue in enumerate(dialogues) for j in range(len(dialogue.turns))]
        await run_pool(items, self.concurrency, rate)
        return [
            dataclasses.replace(
                dialogue,
                turns=tuple(
                    dataclasses.replace(turn, judge=scores[i, j])
                    for j, turn in enumerate(dialogue.turns)
                ),
            )
            for i, dialogue in enumerate(dialogues)
        ]


def _cut(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[:limit].rstrip() + " [...]"
