"""The deduction graph in layers: routers as pure functions, nodes one at a time, the topology."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

from langchain_core.messages import AIMessage, HumanMessage, SystemMessage
from langgraph.graph import END
from langgraph.runtime import Runtime

from agents.assistant import Reply
from agents.critic import CriticScores, CriticVerdict
from agents.registry import Agents
from agents.simulator import Draft
from agents.strategist import Selection
from dialogues.models import Rerank, Usage, Verdict
from dialogues.seeds import load_seed
from graphs.deduction import (
    answer_opening,
    build_graph,
    build_served_graph,
    critique,
    draft_instruction,
    respond,
    route_after_critique,
    route_after_opening,
    route_after_respond,
    route_start,
    select_strategy,
)
from graphs.events import (
    TRACE_EVENTS,
    AnswerEvent,
    DraftEvent,
    EndedEvent,
    SelectionEvent,
    TraceEvent,
    TurnEvent,
)
from graphs.state import Deps, initial_state
from stores.base import Candidate

SNAPSHOT = Path(__file__).parent / "snapshots" / "deduction.mmd"

SEED = [
    HumanMessage(content="How do vaccines train the immune system?"),
    AIMessage(content="They show it a harmless antigen so memory cells form."),
]
CANDIDATES = [
    Candidate(id="s1", text="Ask for a concrete example", score=0.9, rank=0),
    Candidate(id="s2", text="Challenge a claim and ask for evidence", score=0.7, rank=1),
]


# --- fake agents: each records what it was asked -------------------------------------------


class FakeStrategist:
    def __init__(self, chosen: int | None = 1) -> None:
        self.chosen = chosen
        self.calls: list[tuple[list, list]] = []

    async def select(self, messages, used):
        self.calls.append((list(messages), list(used)))
        if self.chosen is None:
            return Selection([], None, "none", "strategist disabled")
        return Selection(CANDIDATES, CANDIDATES[self.chosen], "llm", None, Usage(1, 30, 5, 0.1))


class FakeSimulator:
    def __init__(
        self,
        text: str = "Which cells remember the antigen?",
        author="simulator",
        rerank=None,
        guidance=None,
        floor=None,
    ) -> None:
        self.text, self.author, self.rerank, self.guidance = text, author, rerank, guidance
        self.floor = floor
        self.calls: list[tuple[list, str | None, str | None]] = []
        self.candidates: list[list[str]] = []

    async def draft(self, messages, strategy, feedback, *, candidates=()):
        self.calls.append((list(messages), strategy, feedback))
        self.candidates.append(list(candidates))
        usage = Usage(1, 40, 10, 0.2)
        return Draft(
            self.text,
            usage,
            author=self.author,
            rerank=self.rerank,
            guidance=self.guidance,
            floor=self.floor,
        )


class FakeCritic:
    def __init__(self, *verdicts: CriticVerdict) -> None:
        self.verdicts = list(verdicts)
        self.calls: list[tuple[list, str]] = []

    async def critique(self, messages, draft):
        self.calls.append((list(messages), draft))
        return self.verdicts.pop(0)


class FakeAssistant:
    def __init__(self, text: str = "Memory B and T cells.") -> None:
        self.text = text
        self.calls: list[list] = []

    async def respond(self, messages):
        self.calls.append(list(messages))
        return Reply(self.text, Usage(1, 100, 20, 0.5))


def make_runtime(max_rejections: int = 6, **agents) -> tuple[Runtime, list[TraceEvent], Agents]:
    roles = {
        "strategist": FakeStrategist(),
        "simulator": FakeSimulator(),
        "critic": FakeCritic(),
        "assistant": FakeAssistant(),
    } | agents
    bundle = Agents(**roles)
    events: list[TraceEvent] = []
    runtime = Runtime(
        context=Deps(bundle, max_rejections=max_rejections), stream_writer=events.append
    )
    return runtime, events, bundle


def state(**updates):
    return {**initial_state(SEED, 3), **updates}


def call(node, st, runtime):
    return asyncio.run(node(st, runtime))


SCORES = CriticScores(correct=True, coherent=True, depth=1, insight=2, feedback="Go deeper.")


# --- routers ---------------------------------------------------------------------------------


def test_route_start_answers_a_seed_that_ends_with_the_user():
    assert route_start(state(messages=[HumanMessage(content="hi")])) == "answer_opening"
    assert route_start(state()) == "select_strategy"
    assert route_start(state(messages=[SystemMessage(content="s"), *SEED])) == "select_strategy"


def test_route_after_opening():
    assert route_after_opening(state(status="running")) == "select_strategy"
    assert route_after_opening(state(status="ended_early")) == END


def test_route_after_critique_every_branch():
    assert route_after_critique(state(status="running", rejections=0)) == "respond"
    assert route_after_critique(state(status="running", rejections=2)) == "draft_instruction"
    assert route_after_critique(state(status="ended_early", rejections=6)) == END
    # A finished run ends even if the last verdict was an acceptance.
    assert route_after_critique(state(status="complete", rejections=0)) == END


def test_route_after_respond():
    assert route_after_respond(state(status="running")) == "select_strategy"
    assert route_after_respond(state(status="complete")) == END
    assert route_after_respond(state(status="ended_early")) == END


# --- nodes -----------------------------------------------------------------------------------


def test_answer_opening_adds_the_answer_and_its_usage():
    runtime, events, agents = make_runtime(assistant=FakeAssistant("Antigens."))
    st = state(messages=[HumanMessage(content="How do vaccines work?")])
    update = call(answer_opening, st, runtime)

    assert agents.assistant.calls == [st["messages"]]
    assert [m.text for m in update["messages"]] == ["Antigens."]
    assert isinstance(update["messages"][0], AIMessage)
    assert update["opening"]["answer"] == "Antigens."
    assert update["opening"]["usage"]["assistant"]["input_tokens"] == 100
    assert "status" not in update
    assert events == [AnswerEvent(turn=0, text="Antigens.")]


def test_answer_opening_ends_early_on_an_empty_answer():
    runtime, events, _ = make_runtime(assistant=FakeAssistant(""))
    update = call(answer_opening, state(messages=[HumanMessage(content="Q?")]), runtime)

    assert update["status"] == "ended_early"
    assert "empty answer to the seed" in update["reason"]
    assert "messages" not in update
    assert events == [EndedEvent(reason=update["reason"])]


def test_select_strategy_passes_used_ids_and_resets_the_turn():
    runtime, events, agents = make_runtime()
    st = state(
        turn=1,
        used_strategies=["s9"],
        drafts=[{"text": "old"}],
        draft="old",
        feedback="old feedback",
        usage={"assistant": Usage(1, 1, 1, 1).as_dict()},
    )
    update = call(select_strategy, st, runtime)

    assert agents.strategist.calls == [(st["messages"], ["s9"])]
    assert update["selection"]["strategy"] == {"id": "s2", "text": CANDIDATES[1].text}
    assert update["drafts"] == [] and update["draft"] is None and update["feedback"] is None
    # The previous turn's usage is not carried into this one.
    assert set(update["usage"]) == {"strategist"}
    assert update["usage"]["strategist"]["input_tokens"] == 30
    assert events[0] == TurnEvent(turn=2, of=3)
    assert isinstance(events[1], SelectionEvent) and events[1].method == "llm"
    assert len(events[1].candidates) == 2
    # The event is the turn record's selection, tagged (the same JSON as before it was typed).
    assert events[1].model_dump(exclude_none=True) == {"event": "selection"} | {
        k: v for k, v in update["selection"].items() if v is not None
    }


def test_draft_instruction_sends_strategy_text_and_feedback():
    runtime, events, agents = make_runtime(simulator=FakeSimulator("Why boosters?"))
    selection = Selection(CANDIDATES, CANDIDATES[0], "llm").as_record()
    st = state(
        selection=selection,
        feedback="too shallow. Go deeper.",
        drafts=[{"text": "Shallow?", "accepted": False}],
        usage={"simulator": Usage(1, 10, 10, 0.0).as_dict()},
    )
    update = call(draft_instruction, st, runtime)

    assert agents.simulator.calls == [
        (st["messages"], CANDIDATES[0].text, "too shallow. Go deeper.")
    ]
    assert agents.simulator.candidates == [[c.text for c in CANDIDATES]]
    assert update["draft"] == "Why boosters?" and update["draft_author"] == "simulator"
    assert update["usage"]["simulator"]["calls"] == 2  # added to this turn's earlier draft
    assert update["usage"]["simulator"]["input_tokens"] == 50
    assert events == [DraftEvent(attempt=2, text="Why boosters?")]


def test_draft_instruction_without_a_strategy_passes_none():
    runtime, _, agents = make_runtime()
    call(draft_instruction, state(selection=None), runtime)
    call(draft_instruction, state(selection={"strategy": None}), runtime)

    assert [c[1] for c in agents.simulator.calls] == [None, None]
    assert [c[2] for c in agents.simulator.calls] == [None, None]


def test_critique_accepts_and_resets_rejections():
    verdict = CriticVerdict(True, "accepted", 0.2, usage=Usage(1, 50, 10, 0.1))
    runtime, events, agents = make_runtime(critic=FakeCritic(verdict))
    st = state(draft="Which cells?", rejections=2, feedback="old")
    update = call(critique, st, runtime)

    assert agents.critic.calls == [(st["messages"], "Which cells?")]
    assert update["rejections"] == 0 and update["feedback"] is None
    assert update["drafts"] == [{"text": "Which cells?", **verdict.as_record()}]
    assert "status" not in update
    assert [e.model_dump() for e in events] == [
        {
            "event": "verdict",
            **verdict.as_record(),
            "ending": False,
            "end_probability": None,
            "guidance": None,
            "floor": None,
        }
    ]
    assert TRACE_EVENTS.validate_python(events[0].model_dump()) == events[0]


def test_critique_records_that_a_person_wrote_the_draft():
    verdict = CriticVerdict(True, "accepted", 0.2)
    runtime, _, _ = make_runtime(critic=FakeCritic(verdict))
    update = call(critique, state(draft="Which cells?", draft_author="human"), runtime)

    assert update["drafts"] == [{"text": "Which cells?", **verdict.as_record(), "author": "human"}]


def test_a_reranked_draft_carries_its_rerank_into_the_turn_record():
    rerank = Rerank(kept=1, drafts=["Why?", "Which cells?"], ratios=[0.0, 2.5])
    runtime, _, _ = make_runtime(simulator=FakeSimulator("Which cells?", rerank=rerank))
    selection = Selection(CANDIDATES, CANDIDATES[0], "llm").as_record()
    update = call(draft_instruction, state(selection=selection), runtime)
    assert update["draft_rerank"] == rerank.dump()

    verdict = CriticVerdict(True, "accepted", 0.2)
    runtime, _, _ = make_runtime(critic=FakeCritic(verdict))
    update = call(critique, state(**update), runtime)
    assert Verdict.model_validate(update["drafts"][-1]).rerank == rerank
    old = Verdict.model_validate({"text": "Why?", "accepted": True})  # before reranking
    assert old.rerank is None and "rerank" not in old.dump()


def test_a_guided_held_draft_says_so_in_its_verdict_and_the_trace():
    from rich.console import Console

    from cli.tracer import Tracer

    simulator = FakeSimulator("Which cells?", guidance=5.0, floor=16)
    runtime, _, _ = make_runtime(simulator=simulator)
    selection = Selection(CANDIDATES, CANDIDATES[0], "llm").as_record()
    update = call(draft_instruction, state(selection=selection), runtime)
    assert update["draft_guidance"] == 5.0 and update["draft_floor"] == 16

    accepted = CriticVerdict(True, "accepted", 0.2)
    runtime, events, _ = make_runtime(critic=FakeCritic(accepted, accepted))
    update = call(critique, state(**update), runtime)
    recorded = Verdict.model_validate(update["drafts"][-1])
    assert recorded.guidance == 5.0 and recorded.floor == 16
    assert events[-1].guidance == 5.0 and events[-1].floor == 16
    console = Console(record=True, width=120)
    Tracer(console).event(events[-1])
    expected = "critic accepted  similarity=0.20  guided x5  held to 16 words"
    assert expected in console.export_text()
    plain = call(critique, state(draft="Why?"), runtime)  # an unguided draft: no key
    assert "guidance" not in plain["drafts"][-1] and "floor" not in plain["drafts"][-1]


def test_critique_rejection_counts_and_feeds_back():
    verdict = CriticVerdict(False, "depth 1 < 3", 0.1, SCORES)
    runtime, events, _ = make_runtime(critic=FakeCritic(verdict), max_rejections=3)
    update = call(critique, state(draft="Shallow?", rejections=1), runtime)

    assert update["rejections"] == 2
    assert update["feedback"] == "depth 1 < 3. Go deeper."
    assert update["drafts"][-1]["accepted"] is False
    assert "status" not in update
    assert [e.event for e in events] == ["verdict"]
    assert events[0].scores is not None and events[0].scores.depth == SCORES.depth


def test_critique_ends_the_dialogue_at_max_rejections():
    verdict = CriticVerdict(False, "not correct")
    runtime, events, _ = make_runtime(critic=FakeCritic(verdict), max_rejections=3)
    update = call(critique, state(draft="Again?", rejections=2, turn=1), runtime)

    assert update["status"] == "ended_early"
    assert update["reason"] == "3 drafts rejected in a row at turn 2"
    assert events[-1] == EndedEvent(reason=update["reason"])


def test_critique_of_a_missing_draft_judges_an_empty_text():
    runtime, _, agents = make_runtime(critic=FakeCritic(CriticVerdict(False, "empty draft")))
    call(critique, state(draft=None), runtime)
    assert agents.critic.calls[0][1] == ""


def test_respond_closes_the_turn_record():
    runtime, events, agents = make_runtime(assistant=FakeAssistant("Plasma cells."))
    selection = Selection(CANDIDATES, CANDIDATES[1], "llm").as_record()
    drafts = [{"text": "Which cells?", "accepted": True, "reason": "accepted"}]
    st = state(
        selection=selection,
        draft="Which cells?",
        drafts=drafts,
        used_strategies=["s1"],
        usage={"strategist": Usage(1, 30, 5, 0.1).as_dict()},
    )
    update = call(respond, st, runtime)

    sent = agents.assistant.calls[0]
    assert sent[:-1] == st["messages"] and sent[-1].text == "Which cells?"
    assert isinstance(sent[-1], HumanMessage)
    assert [(m.type, m.text) for m in update["messages"]] == [
        ("human", "Which cells?"),
        ("ai", "Plasma cells."),
    ]
    assert update["turn"] == 1 and update["status"] == "running"
    assert update["used_strategies"] == ["s1", "s2"]
    assert update["drafts"] == [] and update["usage"] == {}
    (record,) = update["turns"]
    assert record["index"] == 1
    assert record["strategy"] == {"id": "s2", "text": CANDIDATES[1].text}
    assert record["critic"] == drafts[-1] and record["drafts"] == drafts
    assert record["instruction"] == "Which cells?" and record["answer"] == "Plasma cells."
    assert set(record["usage"]) == {"strategist", "assistant"}
    assert events == [AnswerEvent(turn=1, text="Plasma cells.")]


def test_respond_completes_at_the_target_and_without_strategy_adds_no_id():
    runtime, _, _ = make_runtime()
    update = call(
        respond,
        state(turn=2, draft="Q?", selection={"strategy": None}, used_strategies=["a"]),
        runtime,
    )
    assert update["status"] == "complete" and update["turn"] == 3
    assert update["used_strategies"] == ["a"]


def test_respond_ends_early_on_an_empty_answer():
    runtime, events, _ = make_runtime(assistant=FakeAssistant(""))
    update = call(respond, state(turn=1, draft="Q?", usage={}), runtime)

    assert update["status"] == "ended_early"
    assert update["reason"] == "the assistant gave an empty answer at turn 2"
    assert "messages" not in update and "turns" not in update
    assert update["usage"]["assistant"]["calls"] == 1  # the spending is still counted
    assert events == [EndedEvent(reason=update["reason"])]


# --- topology --------------------------------------------------------------------------------


def test_graph_topology_matches_the_snapshot():
    # To change the graph deliberately, regenerate the snapshot and review the diff:
    #   python -c "from graphs.deduction import build_graph; \
    #     print(build_graph().get_graph().draw_mermaid(), end='')" > tests/snapshots/deduction.mmd
    assert build_graph().get_graph().draw_mermaid() == SNAPSHOT.read_text(encoding="utf-8")


def test_the_served_graph_has_the_same_topology_and_takes_no_context():
    runtime, _, _ = make_runtime()
    for served in (build_served_graph(None), build_served_graph(runtime.context)):
        assert served.get_graph().draw_mermaid() == SNAPSHOT.read_text(encoding="utf-8")
        assert served.context_schema is None


def test_the_served_graph_runs_with_its_bound_agents_and_no_context():
    runtime, _, bundle = make_runtime(critic=FakeCritic(CriticVerdict(True, "accepted", 0.1)))
    served = build_served_graph(runtime.context)
    final = asyncio.run(served.ainvoke(state(target_turns=1)))

    assert final["status"] == "complete" and len(final["turns"]) == 1
    assert len(bundle.simulator.calls) == 1 and len(bundle.assistant.calls) == 1


def test_the_served_input_example_is_the_initial_state_of_the_example_seed():
    """`examples/langgraph_input.json` (what docs/serve.md sends) is a whole initial state."""
    root = Path(__file__).resolve().parents[1]
    example = json.loads((root / "examples" / "langgraph_input.json").read_text(encoding="utf-8"))
    seed = load_seed(root / "examples" / "seed.json")
    assert example == {**initial_state([], 2), "messages": seed.to_openai_messages()}


def test_route_after_draft_sends_only_the_end_marker_to_the_ending_rules():
    from graphs.deduction import route_after_draft

    assert route_after_draft(state(draft="<|endconversation|>")) == "judge_ending"
    assert route_after_draft(state(draft="END_CONVERSATION")) == "judge_ending"
    assert route_after_draft(state(draft="Thanks! <|endconversation|> and more")) == "critique"
    assert route_after_draft(state(draft="Which cells remember it?")) == "critique"


def test_route_after_ending_ends_or_redrafts():
    from graphs.deduction import route_after_ending

    assert route_after_ending(state(status="ended_by_user")) == END
    assert route_after_ending(state(status="ended_early")) == END
    assert route_after_ending(state(status="running", rejections=1)) == "draft_instruction"
