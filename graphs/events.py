"""What the deduction graph reports while it runs: one typed trace event per decision.

The nodes write them with `runtime.stream_writer`; `graph.astream(..., stream_mode="custom")`
yields them as they happen. The terminal tracer (`cli.tracer`) and the batch runner
(`batch.runner`) `match` on their classes. Each carries an `event` tag, so `TraceEvent` is a
discriminated union and `TRACE_EVENTS` loads one from its JSON data (`model_dump()` writes it).
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter

from dialogues.models import Candidate, Scores, StrategyRef


class Event(BaseModel):
    """A trace event: plain facts, never changed once written."""

    model_config = ConfigDict(frozen=True, extra="forbid")


class TurnEvent(Event):
    """A turn starts (`select_strategy`)."""

    event: Literal["turn"] = "turn"
    turn: int
    """Its number, from 1."""
    of: int
    """How many turns the dialogue should have."""


class Draw(BaseModel):
    """How the learned strategist drew its strategy."""

    model_config = ConfigDict(frozen=True)

    temperature: float
    probability: float
    """The drawn strategy's probability at that temperature."""
    rank: int
    """Its rank among the unused strategies, from 0."""
    pool: int
    """How many unused strategies it was drawn from."""


class SelectionEvent(Event):
    """The strategist chose this turn's strategy (`select_strategy`)."""

    event: Literal["selection"] = "selection"
    candidates: list[Candidate] = Field(default_factory=list)
    strategy: StrategyRef | None = None
    """The chosen strategy (None: the turn applies none)."""
    method: str
    """How it was chosen (`llm`, `fallback`, `random`, `learned`, `none`)."""
    note: str | None = None
    """Why a fallback or no strategy was used."""
    draw: Draw | None = None
    """Set by the learned strategist only."""


class DraftEvent(Event):
    """The user simulator drafted an instruction (`draft_instruction`)."""

    event: Literal["draft"] = "draft"
    attempt: int
    """The draft's number in this turn, from 1."""
    text: str
    author: Literal["simulator", "human"] = "simulator"
    """Who wrote it: the simulator model, or a person (`--simulator human`)."""


class VerdictEvent(Event):
    """The critic judged the latest draft (`critique`)."""

    event: Literal["verdict"] = "verdict"
    accepted: bool
    reason: str
    similarity: float
    """The draft's highest similarity to an earlier user message."""
    scores: Scores | None = None
    """The LLM critic's scores (None when only the novelty check judged)."""
    ending: bool = False
    """The draft ended the conversation, and the ending rules (not the critic) judged it."""
    end_probability: float | None = None
    """The simulator's probability of ending here, where its threshold decided (else None)."""
    guidance: float | None = None
    """The guidance weight the draft was sampled with, where it was guided (else None)."""
    floor: int | None = None
    """The fewest words the draft was held open for, where a length floor held it (else None)."""


class AnswerEvent(Event):
    """The assistant answered (`respond`, or `answer_opening` with turn 0)."""

    event: Literal["answer"] = "answer"
    turn: int
    """The turn answered; 0 is the answer to a seed that ended with a user message."""
    text: str


class EndedEvent(Event):
    """The dialogue ended before its target number of turns."""

    event: Literal["ended"] = "ended"
    reason: str


class UserEndedEvent(Event):
    """The user simulator ended the conversation, and the ending rules let it (`judge_ending`)."""

    event: Literal["user_ended"] = "user_ended"
    turn: int
    """The turn that was not taken."""
    reason: str


TraceEvent = Annotated[
    TurnEvent
    | SelectionEvent
    | DraftEvent
    | VerdictEvent
    | AnswerEvent
    | EndedEvent
    | UserEndedEvent,
    Field(discriminator="event"),
]
"""Any trace event, told apart by its `event` tag."""

TRACE_EVENTS: TypeAdapter[TraceEvent] = TypeAdapter(TraceEvent)
"""Loads a trace event from its JSON data (`TRACE_EVENTS.validate_python(data)`)."""
