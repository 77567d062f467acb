"""The deduction graph's state (plain data) and its run-time dependencies."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Annotated, Any, Literal, NotRequired, TypedDict

from langchain_core.messages import AnyMessage, BaseMessage
from langgraph.graph.message import add_messages

from agents.registry import Agents
from dialogues.ending import EndingMode

Status = Literal["running", "complete", "ended_early", "ended_by_user"]


class State(TypedDict):
    """Everything the loop knows; nodes return partial updates of it."""

    messages: Annotated[list[AnyMessage], add_messages]
    """The dialogue so far (an optional system message, then user/assistant turns)."""
    target_turns: int
    """How many user turns to generate."""
    turn: int
    """Generated turns completed so far."""
    status: Status
    reason: str | None
    """Why the dialogue ended early."""
    selection: dict[str, Any] | None
    """This turn's strategist decision: candidates, strategy, method, note."""
    draft: str | None
    """The latest drafted user instruction."""
    draft_author: NotRequired[Literal["simulator", "human"]]
    """Who wrote the latest draft (unset before the first draft)."""
    draft_rerank: NotRequired[dict[str, Any] | None]
    """The drafts the latest one was chosen from (`dialogues.models.Rerank`), if several."""
    draft_end_probability: NotRequired[float | None]
    """The simulator's probability of ending before the latest draft, where it decided by its
    calibrated threshold (`agents.simulator.StrategySimulator`)."""
    draft_guidance: NotRequired[float | None]
    """The guidance weight the latest draft was sampled with, where it was guided."""
    draft_floor: NotRequired[int | None]
    """The fewest words the latest draft was held open for, where a length floor held it."""
    drafts: list[dict[str, Any]]
    """This turn's drafts with the critic's verdict on each."""
    feedback: str | None
    """The critic's feedback on the last rejected draft."""
    rejections: int
    """Drafts rejected in a row (reset on acceptance)."""
    used_strategies: list[str]
    """Strategy ids already applied in this dialogue."""
    usage: dict[str, dict[str, float]]
    """This turn's usage per agent."""
    opening: dict[str, Any] | None
    """The assistant's answer to a seed that ended with a user message."""
    turns: list[dict[str, Any]]
    """One decision record per completed turn."""


@dataclass(frozen=True)
class Deps:
    """Run-time dependencies injected through LangGraph's context."""

    agents: Agents
    max_rejections: int = 6
    min_turns: int = 2
    """No ending before this many generated user turns."""
    ending: EndingMode = "learned"
    """`learned`: the simulator may end the dialogue (by the rules); `never`: fixed length."""


def initial_state(messages: Sequence[BaseMessage], target_turns: int) -> State:
    """Return the input state for a dialogue growing from `messages`."""
    return State(
        messages=list(messages),
        target_turns=target_turns,
        turn=0,
        status="running",
        reason=None,
        selection=None,
        draft=None,
        drafts=[],
        feedback=None,
        rejections=0,
        used_strategies=[],
        usage={},
        opening=None,
        turns=[],
    )
