"""The whole deduction loop with scripted fake models: turns, speaker order, retries, endings."""

from __future__ import annotations

import asyncio

from langchain_core.messages import AIMessage, HumanMessage

from agents.registry import build_agents
from dialogues.models import GENERATION_ROLES
from dialogues.record import summarize, unfinished_turn
from graphs.deduction import build_graph
from graphs.events import AnswerEvent, EndedEvent, TraceEvent, UserEndedEvent
from graphs.state import Deps, initial_state
from tests.fakes import text_reply, tool_reply
from wiring.generation import Growth


def good_verdict(depth: int = 4, insight: int = 4):
    return tool_reply(
        "CriticScores", correct=True, coherent=True, depth=depth, insight=insight, feedback="Fine."
    )


def run(wiring, messages, turns, **deps):
    agents = build_agents(wiring)
    events: list[TraceEvent] = []
    growth = Growth(build_graph(), Deps(agents, **deps), events.append)
    outcome = asyncio.run(growth.run(initial_state(messages, turns)))
    return outcome, events


def test_three_turns_alternate_speakers_and_record_decisions(wiring, seed_messages):
    questions = [
        "Which cells actually remember the antigen?",
        "Why do some vaccines need boosters while others last for life?",
        "Could you compare mRNA vaccines with inactivated ones in a table?",
    ]
    w = wiring(
        {
            "strategist": [tool_reply("StrategyChoice", choice="2") for _ in range(3)],
            "simulator": [text_reply(q) for q in questions],
            "critic": [good_verdict() for _ in range(3)],
            "assistant": [text_reply(f"Answer {i}.") for i in range(3)],
        }
    )
    outcome, events = run(w, seed_messages, 3)

    assert outcome.status == "complete"
    msgs = outcome.state["messages"]
    assert len(msgs) == 2 + 2 * 3
    assert [type(m) for m in msgs] == [HumanMessage, AIMessage] * 4
    assert [m.text for m in msgs[2::2]] == questions
    turns = outcome.state["turns"]
    assert [t["index"] for t in turns] == [1, 2, 3]
    for turn in turns:
        assert turn["selection"]["method"] == "llm"
        assert turn["strategy"]["id"] == turn["candidates"][1]["id"]
        assert turn["critic"]["scores"]["depth"] == 4
        assert set(turn["usage"]) == set(GENERATION_ROLES)
        assert turn["usage"]["critic"]["input_tokens"] == 50
    used = [t["strategy"]["id"] for t in turns]
    assert len(set(used)) == 3, "a strategy was reused within one dialogue"
    assert [e.event for e in events].count("turn") == 3
    w.assert_all_used()


def test_rejected_draft_is_redrafted_with_feedback(wiring, seed_messages):
    w = wiring(
        {
            "strategist": [tool_reply("StrategyChoice", choice="1")],
            "simulator": [
                text_reply("Shallow?"),
                text_reply("How do memory B cells last decades?"),
            ],
            "critic": [
                tool_reply(
                    "CriticScores",
                    correct=True,
                    coherent=True,
                    depth=1,
                    insight=2,
                    feedback="Go deeper.",
                ),
                good_verdict(),
            ],
            "assistant": [text_reply("Long-lived plasma cells.")],
        }
    )
    outcome, _ = run(w, seed_messages, 1)

    assert outcome.status == "complete"
    drafts = outcome.state["turns"][0]["drafts"]
    assert [d["accepted"] for d in drafts] == [False, True]
    assert "depth 1 < 3" in drafts[0]["reason"]
    redraft_prompt = w.models["simulator"].prompts[1][-1].text
    assert "Go deeper." in redraft_prompt and "depth 1 < 3" in redraft_prompt
    w.assert_all_used()


def test_too_many_rejections_end_the_dialogue_with_a_reason(wiring, seed_messages):
    bad = tool_reply(
        "CriticScores",
        correct=False,
        coherent=True,
        depth=3,
        insight=3,
        feedback="It repeats the answer.",
    )
    w = wiring(
        {
            "strategist": [tool_reply("StrategyChoice", choice="1")],
            "simulator": [text_reply(f"Attempt {i} at a question?") for i in range(3)],
            "critic": [bad, bad, bad],
        }
    )
    outcome, events = run(w, seed_messages, 4, max_rejections=3)

    assert outcome.status == "ended_early"
    assert outcome.reason == "3 drafts rejected in a row at turn 1"
    assert outcome.state["turns"] == []
    assert len(outcome.state["messages"]) == 2
    assert events[-1] == EndedEvent(reason=outcome.reason)
    pending = unfinished_turn(outcome.state)
    assert [d["accepted"] for d in pending["drafts"]] == [False, False, False]
    assert pending["index"] == 1 and pending["strategy"]["id"] == pending["candidates"][0]["id"]
    assert summarize(outcome.state, 1.0)["rejections"] == 3
    w.assert_all_used()


def test_near_duplicate_draft_is_rejected_without_an_llm_call(wiring, seed_messages):
    w = wiring(
        {
            "strategist": [tool_reply("StrategyChoice", choice="1")],
            "simulator": [
                text_reply("How do vaccines train the immune system?!"),
                text_reply("Which cells remember the antigen, and for how long?"),
            ],
            "critic": [good_verdict()],
            "assistant": [text_reply("Memory B and T cells, for years.")],
        }
    )
    outcome, _ = run(w, seed_messages, 1)

    first = outcome.state["turns"][0]["drafts"][0]
    assert not first["accepted"] and first["scores"] is None
    assert first["similarity"] > 0.8
    assert len(w.models["critic"].prompts) == 1
    w.assert_all_used()


def test_invalid_strategist_pick_falls_back_to_best_ranked(wiring, seed_messages):
    w = wiring(
        {
            "strategist": [text_reply("I like number seven")] * 3,
            "simulator": [text_reply("Can you give an example with the flu vaccine?")],
            "critic": [good_verdict()],
            "assistant": [text_reply("Sure: ...")],
        }
    )
    outcome, _ = run(w, seed_messages, 1)

    turn = outcome.state["turns"][0]
    assert turn["selection"]["method"] == "fallback"
    assert "invalid pick" in turn["selection"]["note"]
    assert turn["strategy"]["id"] == turn["candidates"][0]["id"]
    assert turn["usage"]["strategist"]["calls"] == 3
    w.assert_all_used()


def test_seed_ending_with_a_user_message_is_answered_first(wiring):
    w = wiring(
        {
            "strategist": [tool_reply("StrategyChoice", choice="1")],
            "simulator": [text_reply("And how long does that memory last?")],
            "critic": [good_verdict()],
            "assistant": [text_reply("Vaccines present antigens."), text_reply("Years.")],
        }
    )
    outcome, events = run(w, [HumanMessage(content="How do vaccines work?")], 1)

    assert outcome.status == "complete"
    assert [m.type for m in outcome.state["messages"]] == ["human", "ai", "human", "ai"]
    assert outcome.state["opening"]["answer"] == "Vaccines present antigens."
    assert events[0] == AnswerEvent(turn=0, text="Vaccines present antigens.")
    w.assert_all_used()


def test_ablation_none_strategist_and_no_critic_make_no_llm_calls_for_them(wiring, seed_messages):
    w = wiring(
        {"simulator": [text_reply("What about boosters?")], "assistant": [text_reply("...")]},
        agents={"strategist": "none", "critic": "none"},
    )
    outcome, _ = run(w, seed_messages, 1)

    turn = outcome.state["turns"][0]
    assert turn["strategy"] is None and turn["candidates"] == []
    assert "strategy:" not in w.models["simulator"].prompts[0][0].text
    assert set(w.models) == {"simulator", "assistant"}
    w.assert_all_used()


def test_only_empty_assistant_answers_fail_without_adding_the_turn(wiring, seed_messages):
    """A server that answers nothing is broken: the dialogue fails (retryable), not ends early."""
    w = wiring(
        {
            "strategist": [tool_reply("StrategyChoice", choice="1")],
            "simulator": [text_reply("What about boosters?")],
            "critic": [good_verdict()],
            "assistant": [text_reply("")] * 3,
        }
    )
    outcome, _ = run(w, seed_messages, 2)

    assert outcome.status == "failed"
    assert outcome.reason == "model server gave only empty replies (3 attempts)"
    assert len(outcome.state["messages"]) == 2
    w.assert_all_used()


# --- the user ends the conversation (issue 21) ---------------------------------------------------

END = "<|endconversation|>"


def ending_run(wiring, seed_messages, drafts, answers, turns=5, ended=True, **deps):
    """Run scripted drafts; the critic accepts each non-ending draft (never asked about one)."""
    questions = [d for d in drafts if d != END and d != " <|End_Conversation|>. "]
    w = wiring(
        {
            "strategist": [
                tool_reply("StrategyChoice", choice="1") for _ in range(len(answers) + ended)
            ],
            "simulator": [text_reply(d) for d in drafts],
            "critic": [good_verdict() for _ in questions],
            "assistant": [text_reply(a) for a in answers],
        }
    )
    outcome, events = run(w, seed_messages, turns, **deps)
    w.assert_all_used()  # so the critic was never asked about an ending
    return outcome, events


def test_the_marker_ends_the_dialogue_with_the_recorded_reason(wiring, seed_messages):
    outcome, events = ending_run(
        wiring,
        seed_messages,
        ["Which cells remember it?", "How long does that last?", " <|End_Conversation|>. "],
        ["Memory B cells.", "Decades, often."],
    )
    assert outcome.status == "ended_by_user"
    assert outcome.reason == "the user ended the conversation instead of turn 3"
    assert len(outcome.state["turns"]) == 2
    ending = unfinished_turn(outcome.state)
    assert ending["index"] == 3
    assert ending["drafts"][-1] | {"text": ""} == {
        "text": "",
        "accepted": True,
        "reason": "the user ended the conversation",
        "similarity": 0.0,
        "ending": True,
    }
    assert [e for e in events if e.event == "user_ended"] == [
        UserEndedEvent(turn=3, reason=outcome.reason)
    ]


def test_no_ending_before_min_turns(wiring, seed_messages):
    outcome, _ = ending_run(
        wiring,
        seed_messages,
        [END, "Which cells remember it?", END, "And boosters?", END],
        ["Memory B cells.", "They refresh memory."],
        min_turns=2,
    )
    assert outcome.status == "ended_by_user"
    first, second = outcome.state["turns"]
    assert [d["accepted"] for d in first["drafts"]] == [False, True]
    assert first["drafts"][0]["reason"].startswith("too early to end: 0 of at least 2")
    assert second["drafts"][0]["reason"].startswith("too early to end: 1 of at least 2")


def test_no_ending_right_after_a_refusal_or_a_question_back(wiring, seed_messages):
    outcome, _ = ending_run(
        wiring,
        seed_messages,
        ["Which cells remember it?", END, "Why not?", END, "Yes please.", END],
        ["I'm sorry, but I can't help with that.", "Fine.\n\nWould you like an example?", "Ok."],
        min_turns=0,
    )
    assert outcome.status == "ended_by_user"
    second, third = outcome.state["turns"][1:]
    assert "refusal" in second["drafts"][0]["reason"]
    assert "asks a question" in third["drafts"][0]["reason"]
    assert not second["drafts"][0]["accepted"] and second["drafts"][0]["ending"]


def test_ending_never_keeps_the_fixed_length(wiring, seed_messages):
    outcome, _ = ending_run(
        wiring,
        seed_messages,
        ["Which cells remember it?", END, "And boosters?"],
        ["Memory B cells.", "They refresh memory."],
        turns=2,
        ended=False,
        min_turns=0,
        ending="never",
    )
    assert outcome.status == "complete"
    assert outcome.state["turns"][1]["drafts"][0]["reason"].startswith("fixed length")
