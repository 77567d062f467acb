"""Each role's request extends its previous one, so a model server can reuse the prefix."""

from __future__ import annotations

import asyncio

from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, SystemMessage
from langchain_core.messages.utils import count_tokens_approximately

from agents.chat import ChatClient
from agents.registry import build_agents
from graphs.deduction import build_graph
from graphs.state import Deps, initial_state
from tests.fakes import ScriptedChatModel, text_reply, tool_reply
from wiring.generation import Growth

REQUEST_STARTS = {
    "strategist": "Follow-up strategies:",
    "simulator": "\n\n---\nWrite your next message",
    "critic": "The user's new message:",
}
"""Where each role's turn-specific request begins in its last message (the assistant has none)."""


def chatml(messages: list[BaseMessage]) -> str:
    """Render messages the way a ChatML template (SmolLM2's) lays out the prompt."""
    roles = {"system": "system", "human": "user", "ai": "assistant"}
    return "".join(f"<|im_start|>{roles[m.type]}\n{m.text}<|im_end|>\n" for m in messages)


def verdict(depth: int) -> AIMessage:
    return tool_reply(
        "CriticScores", correct=True, coherent=True, depth=depth, insight=4, feedback="Deeper."
    )


def run_dialogue(wiring, seed_messages, turns: int = 4):
    """Run `turns` turns with scripted models; the critic rejects the first draft of turn 2."""
    questions = [
        "Which cells actually remember the antigen?",
        "Why do some vaccines need boosters while others last for life?",
        "Could you compare mRNA vaccines with inactivated ones in a table?",
        "What would happen to herd immunity if coverage fell to sixty percent?",
        "How are adjuvants chosen, and do they change side effects?",
    ][: turns + 1]
    w = wiring(
        {
            "strategist": [tool_reply("StrategyChoice", choice="1") for _ in range(turns)],
            "simulator": [text_reply(q) for q in questions],
            "critic": [verdict(4), verdict(1), *[verdict(4) for _ in range(turns - 1)]],
            "assistant": [text_reply(f"Answer {i}: " + "memory " * 30) for i in range(turns)],
        }
    )
    growth = Growth(build_graph(), Deps(build_agents(w)), lambda event: None)
    outcome = asyncio.run(growth.run(initial_state(seed_messages, turns)))
    assert outcome.status == "complete"
    w.assert_all_used()
    return w


def test_each_roles_request_begins_with_its_previous_request(wiring, seed_messages):
    w = run_dialogue(wiring, seed_messages)

    for role, model in w.models.items():
        requests = [chatml(prompt) for prompt in model.prompts]
        assert len(requests) >= 4, role
        for before, after in zip(requests, requests[1:], strict=False):
            start = REQUEST_STARTS.get(role)
            stable = before[: before.rindex(start)] if start else before
            assert after.startswith(stable), f"{role}: the request does not extend the last one"
            assert len(before) - len(stable) < 600, f"{role}: turn-specific part too long"


def test_turn_specific_parts_come_last(wiring, seed_messages):
    w = run_dialogue(wiring, seed_messages)

    for role, start in REQUEST_STARTS.items():
        for prompt in w.models[role].prompts:
            assert isinstance(prompt[0], SystemMessage)
            assert all(start not in m.text for m in prompt[:-1]), role
            assert start in prompt[-1].text, role
    redraft, rejected = w.models["critic"].prompts[2], w.models["critic"].prompts[1]
    assert redraft[:-1] == rejected[:-1], "a redraft's review should differ only in the draft"


def grow(turns: int) -> list[list[BaseMessage]]:
    """Return the requests of a role at each turn of a growing dialogue."""
    system, request = SystemMessage(content="instructions"), HumanMessage(content="request")
    dialogue: list[BaseMessage] = []
    requests = []
    for i in range(turns):
        dialogue += [
            HumanMessage(content=f"question {i} " + "word " * 20),
            AIMessage(content=f"answer {i} " + "word " * 60),
        ]
        requests.append([system, *dialogue, request])
    return requests


def test_history_trimming_cuts_rarely_and_in_large_chunks():
    budget = 600
    client = ChatClient(ScriptedChatModel(), history_tokens=budget)
    requests = grow(30)
    fits = [client.fit(r) for r in requests]

    assert all(count_tokens_approximately(f) <= budget for f in fits)
    pairs = enumerate(zip(fits, fits[1:], strict=False), 1)
    cuts = [i for i, (a, b) in pairs if b[: len(a) - 1] != a[:-1]]
    per_turn = count_tokens_approximately(requests[0][1:3])
    turns_per_chunk = (budget // 2) // per_turn
    assert cuts, "the budget never forced a cut"
    assert all(b - a >= turns_per_chunk for a, b in zip(cuts, cuts[1:], strict=False))
    assert all(count_tokens_approximately(fits[i]) >= budget // 2 for i in cuts)
