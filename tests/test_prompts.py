"""Every prompt template, rendered strictly with the variables its agent really passes.

Each case drives an agent's own prompt-building code (offline, scripted models) and returns the
texts it would send; the templates it rendered are recorded. A template in `prompts/` without a
case fails `test_every_template_has_a_case`.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable

import numpy as np
import pytest
from jinja2 import StrictUndefined, UndefinedError
from langchain_core.messages import AIMessage, HumanMessage

import prompts
from agents.assistant import LLMAssistant
from agents.critic import CriticScores, LLMCritic, NoveltyCritic, rubric
from agents.simulator import PlainSimulator, StrategySimulator
from agents.strategist import LLMStrategist
from dialogues.formats import Message
from induction.abstract import LLMAbstractor
from induction.extract import LLMExtractor
from induction.records import Pair
from stores.base import StrategyRecord
from stores.memory import HashingEmbedding, InMemoryStrategyStore
from tests.conftest import STRATEGIES
from tests.fakes import scripted, text_reply, tool_reply

QUESTION = "How do vaccines train the immune system?"
ANSWER = "They show the immune system a harmless antigen so memory cells form."
DIALOGUE = [HumanMessage(content=QUESTION), AIMessage(content=ANSWER)]
STRATEGY = "Ask for a concrete example that applies the idea to a new case"
FEEDBACK = "depth 2 < 3. Mention memory cells."
DRAFT = "Why do boosters help memory cells last longer?"
PAIR = Pair("demo.jsonl", "r1", 1, (Message("user", QUESTION), Message("assistant", ANSWER)), DRAFT)


def texts(messages) -> list[str]:
    return [str(m.content) for m in messages]


def simulator(feedback: str | None) -> list[str]:
    return texts(StrategySimulator(scripted()).messages(DIALOGUE, STRATEGY, feedback))


def plain_simulator(feedback: str | None) -> list[str]:
    return texts(PlainSimulator(scripted()).messages(DIALOGUE, STRATEGY, feedback))


def strategist() -> list[str]:
    store = InMemoryStrategyStore("test", HashingEmbedding())
    store.add([StrategyRecord(id=f"s{i}", text=t) for i, t in enumerate(STRATEGIES)])
    chat = scripted(tool_reply("StrategyChoice", choice="2"))
    asyncio.run(LLMStrategist(store, chat, k=3).select(DIALOGUE, used=set()))
    return texts(chat.model.prompts[0])


def critic() -> list[str]:
    scores = {"correct": True, "coherent": True, "depth": 4, "insight": 4, "feedback": "Fine."}
    chat = scripted(tool_reply("CriticScores", **scores))
    asyncio.run(LLMCritic(chat, NoveltyCritic()).critique(DIALOGUE, DRAFT))
    return texts(chat.model.prompts[0])


def assistant() -> list[str]:
    chat = scripted(text_reply("Memory B cells."))
    asyncio.run(LLMAssistant(chat).respond(DIALOGUE[:1]))
    return texts(chat.model.prompts[0])


def extractor(feedback: str) -> list[str]:
    return [LLMExtractor(scripted()).prompt(PAIR, feedback)]


def abstractor(feedback: str) -> list[str]:
    members = STRATEGIES[:3]
    embeddings = np.asarray(HashingEmbedding().embed(members))
    return [LLMAbstractor(scripted()).prompt(members, embeddings, feedback)]


Case = tuple[Callable[[], list[str]], set[str], list[str]]
"""How to build the prompts, the templates that must be rendered, texts that must appear."""

CASES: dict[str, Case] = {
    "simulator": (lambda: simulator(None), {"simulator", "simulator_turn"}, [STRATEGY, ANSWER]),
    "simulator, feedback": (lambda: simulator(FEEDBACK), {"simulator_turn"}, [FEEDBACK]),
    "plain simulator": (
        lambda: plain_simulator(FEEDBACK),
        {"simulator_plain", "simulator_turn"},
        ["a natural follow-up", FEEDBACK],
    ),
    "strategist": (strategist, {"strategist", "strategist_choice"}, ["1. ", "3. ", ANSWER]),
    "critic": (critic, {"critic", "critic_draft"}, [DRAFT, ANSWER]),
    "assistant": (assistant, {"assistant"}, ["helpful, knowledgeable assistant", QUESTION]),
    "extractor": (lambda: extractor(""), {"extractor"}, [QUESTION, ANSWER, DRAFT]),
    "extractor, feedback": (lambda: extractor(FEEDBACK), {"extractor"}, [FEEDBACK]),
    "abstractor": (lambda: abstractor(""), {"abstractor"}, [f"- {STRATEGIES[0]}"]),
    "abstractor, feedback": (lambda: abstractor(FEEDBACK), {"abstractor"}, [FEEDBACK]),
}


@pytest.fixture
def rendered(monkeypatch) -> list[str]:
    """Record the name of every template `prompts.render` renders."""
    names: list[str] = []
    environment = prompts._environment()
    assert environment.undefined is StrictUndefined

    class Recording:
        def get_template(self, name: str):
            names.append(name.removesuffix(".jinja2"))
            return environment.get_template(name)

    monkeypatch.setattr(prompts, "_environment", Recording)
    return names


@pytest.mark.parametrize("case", CASES)
def test_templates_render_with_the_variables_the_agents_pass(case, rendered):
    build, templates, expected = CASES[case]
    sent = "\n".join(build())
    assert templates <= set(rendered)
    for text in expected:
        assert text in sent
    assert "{{" not in sent and "{%" not in sent


def test_every_template_has_a_case():
    covered = {name for _, templates, _ in CASES.values() for name in templates}
    assert covered == set(prompts.template_names())


def test_strict_rendering_refuses_a_missing_variable():
    with pytest.raises(UndefinedError):
        prompts.render("critic_draft")


def test_the_critic_rubric_has_one_source():
    """The schema's field descriptions are the rubric in the critic's system prompt."""
    system = critic()[0]
    schema = CriticScores.model_json_schema()["properties"]
    assert [name.split(" ")[0] for name, _ in rubric()] == list(schema)
    for name, description in rubric():
        assert f"- {name}: {description}\n" in system + "\n"
        assert schema[name.split(" ")[0]]["description"] == description
    assert "- depth (1-5): how far it pushes beyond the surface of the answer." in system
    assert json.dumps(schema["depth"]["enum"]) == "[1, 2, 3, 4, 5]"
