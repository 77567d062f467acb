"""Induction step 1: extract one reusable strategy from each real (history, follow-up) pair.

For each pair an LLM reads the assistant's answer and the user's next instruction, says why the user
asked that (`analysis`) and names the move as a general imperative phrase (`strategy`). The phrase
must pass `validate_strategy`; a failing phrase is retried with the reason in the prompt, and a pair
that never passes becomes a `Rejection` with the last reason, so drops can be counted and read.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from functools import cached_property
from typing import Protocol

from langchain_core.messages import HumanMessage
from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, field_validator

from agents.chat import ChatClient, model_name
from dialogues.models import Usage
from induction.strategy_check import MAX_WORDS, validate_strategy
from prompts import TEMPLATES, render

TEMPLATE = "extractor"
ANALYSIS_WORDS = 60

_LABEL = re.compile(r"^\s*strategy\s*:\s*", re.IGNORECASE)
_QUOTES = '"“” '

Key = tuple[str, str, int]
"""(source, record_id, turn): where a follow-up instruction comes from."""


class TurnLike(Protocol):
    """One message of a real dialogue."""

    @property
    def role(self) -> str:
        """`user` or `assistant`."""
        ...

    @property
    def text(self) -> str:
        """The message text."""
        ...


class PairLike(Protocol):
    """A dialogue up to an assistant answer, and the real user instruction that followed it."""

    @property
    def key(self) -> Key:
        """(source, record_id, turn)."""
        ...

    @property
    def history(self) -> Sequence[TurnLike]:
        """The messages before the follow-up, ending with the answer."""
        ...

    @property
    def answer(self) -> str:
        """The assistant answer the user was reacting to."""
        ...

    @property
    def followup(self) -> str:
        """The user's next instruction."""
        ...


class ExtractionOutput(BaseModel):
    """Why the user wrote their next message, and the reusable strategy behind it."""

    analysis: str = Field(
        description="One or two sentences: why the user wrote this message after that answer."
    )
    strategy: str = Field(
        description=f"The user's move as one imperative phrase of at most {MAX_WORDS} words that "
        "fits many conversations, with no names, numbers, quotations or topic of this one, e.g. "
        "'Ask for a concrete example that applies the idea to a new case'."
    )

    @field_validator("analysis")
    @classmethod
    def _clip_analysis(cls, value: str) -> str:
        return " ".join(value.split()[:ANALYSIS_WORDS])

    @field_validator("strategy")
    @classmethod
    def _tidy_strategy(cls, value: str) -> str:
        text = _LABEL.sub("", " ".join(value.split()).strip(_QUOTES))
        return text.strip(_QUOTES).rstrip(".,;:").strip()


class Extraction(BaseModel):
    """A strategy learned from one follow-up instruction, by an LLM or a human annotator."""

    model_config = ConfigDict(extra="forbid", coerce_numbers_to_str=True)

    source: str = Field(min_length=1, description="The data set the dialogue comes from.")
    record_id: str = Field(min_length=1, description="The dialogue's id in its source.")
    turn: int = Field(ge=0, description="Index of the follow-up user turn in the dialogue.")
    analysis: str = Field(description=f"Why the user asked that (about {ANALYSIS_WORDS} words).")
    strategy: str = Field(min_length=1, description="The general imperative phrase.")
    annotator: str | None = Field(default=None, description="A person, or llm:<model>.")
    _usage: Usage = PrivateAttr(default_factory=Usage)

    @property
    def key(self) -> Key:
        """(source, record_id, turn)."""
        return (self.source, self.record_id, self.turn)

    @property
    def usage(self) -> Usage:
        """LLM calls spent on this extraction in this run (zero when loaded or cached)."""
        return self._usage

    def with_usage(self, usage: Usage) -> Extraction:
        """Return a copy that records `usage`; usage is run accounting, never serialised."""
        copy = self.model_copy()
        copy._usage = usage
        return copy


class Rejection(BaseModel):
    """A pair for which no valid strategy was extracted, and why."""

    key: Key
    reason: str = Field(description="The last validation failure.")
    attempts: int
    usage: Usage = Field(default_factory=Usage)
    last_strategy: str = Field(default="", description="The last phrase the model proposed.")


class LLMExtractor:
    """Extract a strategy from a pair with an LLM, retrying phrases that fail validation.

    The paper's extractor runs at temperature 0 with frequency penalty 0.6. The `extractor` role's
    settings default to temperature 0; a frequency penalty goes to the client (ChatOpenAI
    `model_kwargs={"frequency_penalty": 0.6}`) when the chat model is built.
    """

    def __init__(
        self,
        chat: ChatClient,
        attempts: int = 3,
        *,
        answer_chars: int = 1200,
        previous_chars: int = 600,
        followup_chars: int = 800,
    ) -> None:
        """Call `chat` up to `attempts` times per pair; texts are clipped to the given lengths."""
        self.chat = chat
        self.attempts = attempts
        self.answer_chars = answer_chars
        self.previous_chars = previous_chars
        self.followup_chars = followup_chars

    @cached_property
    def model_name(self) -> str:
        """The model's name as the server knows it (the class name for fakes)."""
        return model_name(self.chat.model)

    @cached_property
    def fingerprint(self) -> str:
        """What besides the pair decides the output: model, template text and output schema."""
        template = (TEMPLATES / f"{TEMPLATE}.jinja2").read_text(encoding="utf-8")
        schema = json.dumps(ExtractionOutput.model_json_schema(), sort_keys=True)
        return "\n".join([self.model_name, template, schema])

    def prompt(self, pair: PairLike, feedback: str = "") -> str:
        """Render the extractor prompt for `pair`, with feedback on a rejected attempt."""
        return render(
            TEMPLATE,
            previous=clip(previous_user_message(pair), self.previous_chars),
            answer=clip(pair.answer, self.answer_chars),
            followup=clip(pair.followup, self.followup_chars),
            feedback=feedback,
        )

    async def extract(self, pair: PairLike) -> Extraction | Rejection:
        """Return the pair's validated strategy, or a rejection after `attempts` tries."""
        usage, feedback, reason, last = Usage(), "", "no attempt made", ""
        for _ in range(self.attempts):
            messages = [HumanMessage(content=self.prompt(pair, feedback))]
            result = await self.chat.structured(ExtractionOutput, messages)
            usage += result.usage
            if result.value is None:
                reason = f"no valid output ({result.error})"
                feedback = "Your last reply was not valid: fill in both analysis and strategy."
                continue
            last = result.value.strategy
            reason = validate_strategy(last, pair.followup, answer=pair.answer)
            if reason is None:
                source, record_id, turn = pair.key
                extraction = Extraction(
                    source=source,
                    record_id=record_id,
                    turn=turn,
                    analysis=result.value.analysis,
                    strategy=last,
                    annotator=f"llm:{self.model_name}",
                )
                return extraction.with_usage(usage)
            feedback = f"Your last strategy {last!r} was rejected: {reason}."
        return Rejection(
            key=pair.key, reason=reason, attempts=self.attempts, usage=usage, last_strategy=last
        )


def previous_user_message(pair: PairLike) -> str:
    """Return the last user message before the answer, or "" for none."""
    for turn in reversed(pair.history):
        if turn.role == "user":
            return turn.text
    return ""


def clip(text: str, limit: int) -> str:
    """Shorten `text` to about `limit` characters, keeping its start and its end."""
    text = text.strip()
    if len(text) <= limit:
        return text
    head = limit * 3 // 4
    return f"{text[:head].rstrip()} [...] {text[len(text) - (limit - head) :].lstrip()}"
