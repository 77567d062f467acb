"""The deduction graph: select_strategy -> draft_instruction -> critique -> respond, per turn.

A draft that is the end marker (`dialogues.ending`) goes to `judge_ending` instead of the critic:
the rules alone decide (never the LLM critic, which would score it or call it "too similar").
Allowed, the dialogue ends with status `ended_by_user`; refused, the draft is rejected with the
rule as its reason and the simulator drafts again, like any rejection.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, Literal

from langchain_core.messages import AIMessage, HumanMessage
from langgraph.graph import END, START, StateGraph
from langgraph.graph.state import CompiledStateGraph
from langgraph.runtime import Runtime

from dialogues.ending import ENDED_REASON, ended_reason, ending_refused, is_end_marker
from dialogues.models import Opening, StrategySelection, TurnRecord, Usage, Verdict
from graphs.events import (
    AnswerEvent,
    DraftEvent,
    EndedEvent,
    SelectionEvent,
    TurnEvent,
    UserEndedEvent,
    VerdictEvent,
)
from graphs.state import Deps, State


def _spend(state: State, agent: str, usage: Usage) -> dict[str, dict[str, float]]:
    """Return this turn's usage with `usage` added to `agent`'s share."""
    spent = dict(state["usage"])
    spent[agent] = (Usage.from_dict(spent.get(agent)) + usage).as_dict()
    return spent


async def answer_opening(state: State, runtime: Runtime[Deps]) -> dict[str, Any]:
    """Answer a seed that ends with a user message, before any turn is generated."""
    reply = await runtime.context.agents.assistant.respond(state["messages"])
    if not reply.text:
        reason = "the assistant gave an empty answer to the seed"
        runtime.stream_writer(EndedEvent(reason=reason))
        return {"status": "ended_early", "reason": reason}
    runtime.stream_writer(AnswerEvent(turn=0, text=reply.text))
    opening = Opening(answer=reply.text, usage={"assistant": reply.usage})
    return {"messages": [AIMessage(content=reply.text)], "opening": opening.dump()}


async def select_strategy(state: State, runtime: Runtime[Deps]) -> dict[str, Any]:
    """Retrieve candidate strategies for the last answer and choose one."""
    runtime.stream_writer(TurnEvent(turn=state["turn"] + 1, of=state["target_turns"]))
    strategist = runtime.context.agents.strategist
    selection = await strategist.select(state["messages"], state["used_strategies"])
    record = selection.as_record()
    runtime.stream_writer(SelectionEvent.model_validate(record))
    return {
        "selection": record,
        "drafts": [],
        "draft": None,
        "feedback": None,
        "usage": _spend({**state, "usage": {}}, "strategist", selection.usage),
    }


async def draft_instruction(state: State, runtime: Runtime[Deps]) -> dict[str, Any]:
    """Have the user simulator draft the next instruction with the chosen strategy."""
    selection = StrategySelection.model_validate(state["selection"] or {})
    strategy = selection.strategy
    draft = await runtime.context.agents.simulator.draft(
        state["messages"],
        strategy.text if strategy else None,
        state["feedback"],
        candidates=[c.text for c in selection.candidates],
    )
    attempt = len(state["drafts"]) + 1
    runtime.stream_writer(DraftEvent(attempt=attempt, text=draft.text, author=draft.author))
    return {
        "draft": draft.text,
        "draft_author": draft.author,
        "draft_rerank": draft.rerank.dump() if draft.rerank else None,
        "draft_end_probability": draft.end_probability,
        "draft_guidance": draft.guidance,
        "draft_floor": draft.floor,
        "usage": _spend(state, "simulator", draft.usage),
    }


async def critique(state: State, runtime: Runtime[Deps]) -> dict[str, Any]:
    """Judge the draft; count rejections in a row and end after too many."""
    draft = state["draft"] or ""
    verdict = await runtime.context.agents.critic.critique(state["messages"], draft)
    record = verdict.as_record() | _drafted(state)
    runtime.stream_writer(VerdictEvent.model_validate(record))
    entry = {"text": draft, **record}
    if state.get("draft_author") == "human":
        entry["author"] = "human"
    if state.get("draft_rerank"):
        entry["rerank"] = state["draft_rerank"]
    update: dict[str, Any] = {
        "drafts": [*state["drafts"], entry],
        "usage": _spend(state, "critic", verdict.usage),
    }
    if verdict.accepted:
        return update | {"rejections": 0, "feedback": None}
    return update | _rejected(state, runtime, verdict.feedback)


def _rejected(state: State, runtime: Runtime[Deps], feedback: str | None) -> dict[str, Any]:
    """Count a rejected draft; end the dialogue after too many in a row."""
    rejections = state["rejections"] + 1
    update: dict[str, Any] = {"rejections": rejections, "feedback": feedback}
    if rejections >= runtime.context.max_rejections:
        reason = f"{rejections} drafts rejected in a row at turn {state['turn'] + 1}"
        runtime.stream_writer(EndedEvent(reason=reason))
        update |= {"status": "ended_early", "reason": reason}
    return update


def _drafted(state: State) -> dict[str, float]:
    """Return how the simulator drafted, for the draft's verdict record.

    Its `end_probability`, where it scored one, its `guidance` weight, where it was guided, and
    its `floor`, where a length floor held it open.
    """
    facts = {
        "end_probability": state.get("draft_end_probability"),
        "guidance": state.get("draft_guidance"),
        "floor": state.get("draft_floor"),
    }
    return {key: value for key, value in facts.items() if value is not None}


async def judge_ending(state: State, runtime: Runtime[Deps]) -> dict[str, Any]:
    """Let the user end the dialogue, unless a rule forbids it now (then the draft is rejected)."""
    deps = runtime.context
    last = state["messages"][-1] if state["messages"] else None
    answer = last.text if isinstance(last, AIMessage) else ""
    refused = ending_refused(answer, state["turn"], min_turns=deps.min_turns, mode=deps.ending)
    record = {
        "accepted": refused is None,
        "reason": refused or ENDED_REASON,
        "similarity": 0.0,
        "ending": True,
        **_drafted(state),
    }
    runtime.stream_writer(VerdictEvent.model_validate(record))
    update: dict[str, Any] = {"drafts": [*state["drafts"], {"text": state["draft"], **record}]}
    if refused is not None:
        return update | _rejected(state, runtime, refused)
    reason = ended_reason(state["turn"] + 1)
    runtime.stream_writer(UserEndedEvent(turn=state["turn"] + 1, reason=reason))
    return update | {"rejections": 0, "feedback": None, "status": "ended_by_user", "reason": reason}


async def respond(state: State, runtime: Runtime[Deps]) -> dict[str, Any]:
    """Answer the accepted instruction and close the turn's decision record."""
    instruction = HumanMessage(content=state["draft"] or "")
    reply = await runtime.context.agents.assistant.respond([*state["messages"], instruction])
    usage = _spend(state, "assistant", reply.usage)
    if not reply.text:
        reason = f"the assistant gave an empty answer at turn {state['turn'] + 1}"
        runtime.stream_writer(EndedEvent(reason=reason))
        return {"status": "ended_early", "reason": reason, "usage": usage}
    runtime.stream_writer(AnswerEvent(turn=state["turn"] + 1, text=reply.text))
    selection = StrategySelection.model_validate(state["selection"] or {})
    drafts = [Verdict.model_validate(d) for d in state["drafts"]]
    turn = state["turn"] + 1
    record = TurnRecord(
        index=turn,
        candidates=selection.candidates,
        strategy=selection.strategy,
        selection=selection.summary(),
        drafts=drafts,
        critic=drafts[-1] if drafts else None,
        instruction=instruction.text,
        answer=reply.text,
        usage={agent: Usage.from_dict(spent) for agent, spent in usage.items()},
    )
    used = [*state["used_strategies"], *([selection.strategy.id] if selection.strategy else [])]
    return {
        "messages": [instruction, AIMessage(content=reply.text)],
        "turn": turn,
        "turns": [*state["turns"], record.dump()],
        "used_strategies": used,
        "status": "complete" if turn >= state["target_turns"] else "running",
        "drafts": [],
        "usage": {},
    }


def route_start(state: State) -> Literal["answer_opening", "select_strategy"]:
    """Answer the seed first when it ends with a user message."""
    return (
        "answer_opening" if isinstance(state["messages"][-1], HumanMessage) else "select_strategy"
    )


def route_after_opening(state: State) -> Literal["select_strategy", "__end__"]:
    """Start the first turn unless the opening failed."""
    return "select_strategy" if state["status"] == "running" else END


def route_after_draft(state: State) -> Literal["critique", "judge_ending"]:
    """Send a draft that ends the conversation to the ending rules, any other to the critic."""
    return "judge_ending" if is_end_marker(state["draft"]) else "critique"


def route_after_ending(state: State) -> Literal["draft_instruction", "__end__"]:
    """End where the user ended (or after too many rejections); redraft a refused ending."""
    return "draft_instruction" if state["status"] == "running" else END


def route_after_critique(state: State) -> Literal["respond", "draft_instruction", "__end__"]:
    """Answer an accepted draft, redraft a rejected one, or end after too many rejections."""
    if state["status"] != "running":
        return END
    return "respond" if state["rejections"] == 0 else "draft_instruction"


def route_after_respond(state: State) -> Literal["select_strategy", "__end__"]:
    """Start another turn until the target is reached."""
    return "select_strategy" if state["status"] == "running" else END


NODES = (answer_opening, select_strategy, draft_instruction, critique, judge_ending, respond)
Node = Callable[[State, Runtime[Deps]], Awaitable[dict[str, Any]]]


def build_graph(checkpointer: Any = None) -> CompiledStateGraph:
    """Compile the deduction graph; the agents arrive at run time as `context=Deps(...)`."""
    return _compile(StateGraph(State, context_schema=Deps), NODES, checkpointer)


def build_served_graph(deps: Deps | None) -> CompiledStateGraph:
    """Compile the deduction graph with `deps` bound in, for a LangGraph server.

    A server's runs carry only JSON, so this graph takes no run context: every node runs with
    `deps` as its runtime's context. With `deps=None` it is the same topology with nothing
    bound, for the server's calls that only read state or draw the graph. No checkpointer: the
    server brings its own.
    """
    nodes = NODES if deps is None else tuple(_bind(node, deps) for node in NODES)
    return _compile(StateGraph(State), nodes, None)


def _bind(node: Node, deps: Deps) -> Node:
    """Return `node` run with `deps` as its runtime's context."""

    async def bound(state: State, runtime: Runtime[Deps]) -> dict[str, Any]:
        return await node(state, runtime.override(context=deps))

    bound.__name__ = node.__name__
    return bound


def _compile(builder: StateGraph, nodes: tuple[Node, ...], checkpointer: Any) -> CompiledStateGraph:
    """Add `nodes` and the edges between them to `builder` and compile it."""
    for node in nodes:
        builder.add_node(node.__name__, node)
    builder.add_conditional_edges(START, route_start)
    builder.add_conditional_edges("answer_opening", route_after_opening)
    builder.add_edge("select_strategy", "draft_instruction")
    builder.add_conditional_edges("draft_instruction", route_after_draft)
    builder.add_conditional_edges("critique", route_after_critique)
    builder.add_conditional_edges("judge_ending", route_after_ending)
    builder.add_conditional_edges("respond", route_after_respond)
    return builder.compile(checkpointer=checkpointer, name="ideas-deduction")
