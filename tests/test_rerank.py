"""Reranking the strategy simulator's drafts by their likelihood ratio, with scripted scores."""

from __future__ import annotations

import asyncio
import json
import logging
import math

import httpx
import pytest
from langchain_core.messages import AIMessage, HumanMessage

from agents.chat import ChatClient, ModelError, Scored
from agents.simulator import DRAFT_SEED_STRIDE, StrategySimulator
from dialogues.ending import END_MARKER
from dialogues.models import Rerank, Usage
from tests.fakes import ScriptedChatModel, SeedRecordingModel, recorded_client, text_reply

DIALOGUE = [
    HumanMessage(content="How do vaccines work?"),
    AIMessage(content="They train memory B and T cells to recognise an antigen."),
]
STRATEGY = "Ask for a concrete example of the claim."
CHALLENGE = "Challenge the claim with a counterexample."
COSTS = "Ask what the approach costs."
CANDIDATES = [STRATEGY, CHALLENGE, COSTS]

GENERIC = "Can you tell me more?"
EXAMPLE = "Could you give a concrete example of a memory cell at work?"
DOUBT = "Is that really true for every vaccine?"
LOGPROBS = {
    # The generic draft is the likeliest under the strategy, and as likely under any: LR 0.
    (STRATEGY, GENERIC): -4.0,
    (CHALLENGE, GENERIC): -4.0,
    (COSTS, GENERIC): -4.0,
    # The example is less likely under the strategy than the generic one, far less elsewhere.
    (STRATEGY, EXAMPLE): -6.0,
    (CHALLENGE, EXAMPLE): -12.0,
    (COSTS, EXAMPLE): -12.0,
    # The doubt belongs to the challenge.
    (STRATEGY, DOUBT): -9.0,
    (CHALLENGE, DOUBT): -3.0,
    (COSTS, DOUBT): -10.0,
}
SCORE_USAGE = Usage(1, 100, 0, 0.25, 90)


def ratio(draft: str) -> float:
    """The log-likelihood ratio the simulator should compute, written out."""
    others = [math.exp(LOGPROBS[c, draft]) for c in (CHALLENGE, COSTS)]
    return LOGPROBS[STRATEGY, draft] - math.log(sum(others) / len(others))


class ScriptedScores(ChatClient):
    """A chat client whose replies are scripted and whose scores come from `LOGPROBS`.

    It records every score asked for as (strategy, draft) and checks what it was asked: the
    messages before the last are the ones the drafts were written after, and the last message
    asks for exactly one of the candidate strategies.
    """

    def __init__(self, *replies: str, model: ScriptedChatModel | None = None) -> None:
        model = model or ScriptedChatModel(script=[text_reply(r) for r in replies])
        super().__init__(model)
        self.asked: list[tuple[str, str]] = []
        self.scoring = True

    async def score(self, messages, continuation):
        if not self.scoring:
            self._scoring.available = False  # as the client does on a 404
            return None
        sent = self.model.prompts[0]
        assert [m.text for m in messages[:-1]] == [m.text for m in sent[:-1]]
        named = [c for c in CANDIDATES if c in messages[-1].text]
        assert len(named) == 1, messages[-1].text
        assert messages[-1].text.startswith(sent[-1].text.split("\n\n")[0])  # the same answer
        self.asked.append((named[0], continuation))
        return Scored(LOGPROBS[named[0], continuation], SCORE_USAGE)


def draft(simulator: StrategySimulator, candidates=CANDIDATES, strategy=STRATEGY):
    return asyncio.run(simulator.draft(DIALOGUE, strategy, None, candidates=candidates))


def test_the_draft_most_specific_to_the_strategy_is_kept_not_the_likeliest_or_first():
    chat = ScriptedScores(GENERIC, EXAMPLE, DOUBT)
    result = draft(StrategySimulator(chat, drafts=3))

    assert result.text == EXAMPLE
    assert LOGPROBS[STRATEGY, GENERIC] > LOGPROBS[STRATEGY, EXAMPLE]  # raw lp(d|s) picks GENERIC
    assert (result.rerank.kept, result.rerank.drafts) == (1, [GENERIC, EXAMPLE, DOUBT])
    assert result.rerank.ratios == pytest.approx([ratio(GENERIC), ratio(EXAMPLE), ratio(DOUBT)])
    assert ratio(GENERIC) == pytest.approx(0.0) and ratio(EXAMPLE) == pytest.approx(6.0)
    # Every draft under the strategy and under each other candidate, once, strategy by strategy.
    assert chat.asked == [(s, d) for s in CANDIDATES for d in (GENERIC, EXAMPLE, DOUBT)]
    assert len(chat.model.prompts) == 3 and chat.model.unused == 0
    assert all(p == chat.model.prompts[0] for p in chat.model.prompts)  # drafted alike
    # The usage counts the three drafts (text_reply: 40 + 20 tokens) and the nine scores.
    assert result.usage.calls == 3 + 9
    assert result.usage.input_tokens == 3 * 40 + 9 * 100
    assert result.usage.output_tokens == 3 * 20
    assert result.usage.cached_tokens == 9 * 90
    assert result.usage.seconds >= 9 * 0.25


def test_the_strategy_decides_which_draft_is_kept():
    # The same drafts and scores, with the challenge as the turn's strategy: the doubt wins.
    chat = ScriptedScores(GENERIC, EXAMPLE, DOUBT)
    result = draft(StrategySimulator(chat, drafts=3), strategy=CHALLENGE)

    assert result.text == DOUBT
    assert {s for s, _ in chat.asked} == set(CANDIDATES)
    assert [s for s, _ in chat.asked[:3]] == [CHALLENGE] * 3  # its own strategy first


def test_equal_drafts_are_scored_once_and_the_first_of_equals_is_kept():
    chat = ScriptedScores(GENERIC, GENERIC)
    result = draft(StrategySimulator(chat, drafts=2))

    assert result.text == GENERIC and result.rerank.kept == 0
    assert chat.asked == [(s, GENERIC) for s in CANDIDATES]


@pytest.mark.parametrize(
    ("drafts", "candidates", "strategy"),
    [(1, CANDIDATES, STRATEGY), (3, [STRATEGY], STRATEGY), (3, CANDIDATES, None)],
    ids=["one draft", "no other candidate", "no strategy"],
)
def test_without_drafts_to_choose_from_or_strategies_to_compare_it_drafts_once(
    drafts, candidates, strategy
):
    chat = ScriptedScores(GENERIC)
    result = draft(StrategySimulator(chat, drafts=drafts), candidates, strategy)

    assert result.text == GENERIC and result.rerank is None
    assert chat.asked == [] and chat.model.unused == 0
    assert result.usage == Usage(1, 40, 20, result.usage.seconds)


def test_a_first_draft_that_ends_the_dialogue_is_kept_at_once():
    chat = ScriptedScores(END_MARKER, EXAMPLE)
    result = draft(StrategySimulator(chat, drafts=2))

    assert result.text == END_MARKER and result.rerank is None
    assert chat.asked == [] and chat.model.unused == 1  # no second draft


def test_an_end_marker_among_the_drafts_keeps_the_first_draft_unranked():
    chat = ScriptedScores(GENERIC, END_MARKER, EXAMPLE)
    result = draft(StrategySimulator(chat, drafts=3))

    assert result.text == GENERIC
    assert result.rerank == Rerank(kept=0, drafts=[GENERIC, END_MARKER])
    assert chat.asked == [] and chat.model.unused == 1  # it stopped at the end marker
    assert result.usage.calls == 2


def test_a_server_that_cannot_score_keeps_the_first_draft():
    chat = ScriptedScores(GENERIC, EXAMPLE)
    chat.scoring = False
    result = draft(StrategySimulator(chat, drafts=2))

    assert result.text == GENERIC
    assert result.rerank == Rerank(kept=0, drafts=[GENERIC, EXAMPLE])
    chat.model.script.append(text_reply(DOUBT))
    chat.model.messages = iter([text_reply(DOUBT)])
    again = draft(StrategySimulator(chat, drafts=2))  # the server cannot score: one draft
    assert (again.text, again.rerank, again.usage.calls) == (DOUBT, None, 1)


def test_each_draft_samples_with_its_own_seed():
    model = SeedRecordingModel(script=[text_reply(t) for t in (GENERIC, EXAMPLE, DOUBT)])
    chat = ScriptedScores(model=model).seeded(7)
    draft(StrategySimulator(chat, drafts=3))

    first = model.seeds[0]
    assert len(set(model.seeds)) == 3
    # The first draft samples as a single draft does: the seed the client derives for it.
    single = SeedRecordingModel(script=[text_reply(GENERIC)])
    draft(StrategySimulator(ScriptedScores(model=single).seeded(7), drafts=1))
    assert single.seeds == [first]
    assert DRAFT_SEED_STRIDE > 1


def test_the_drafts_setting_reaches_the_strategy_simulator_only(wiring):
    from agents.registry import SIMULATORS

    w = wiring({}, simulator_drafts=4)
    assert SIMULATORS["strategy"](w).drafts == 4
    assert SIMULATORS["plain"](w).drafts == 1


def test_the_drafts_setting_has_a_flag_and_an_environment_variable(monkeypatch):
    import argparse

    from cli.options import add_agent_arguments, add_settings_arguments, settings_from_args
    from runtime.settings import Settings, SettingsError

    parser = argparse.ArgumentParser()
    add_settings_arguments(parser)
    add_agent_arguments(parser)
    assert settings_from_args(parser.parse_args(["--simulator-drafts", "3"])).simulator_drafts == 3
    assert settings_from_args(parser.parse_args([])).simulator_drafts == 1
    monkeypatch.setenv("IDEAS_SIMULATOR_DRAFTS", "2")
    assert Settings().simulator_drafts == 2
    with pytest.raises((SettingsError, ValueError)):
        settings_from_args(parser.parse_args(["--simulator-drafts", "0"]))


# --- the client's side of the scoring endpoint ---------------------------------------------


def scoring_client(handler) -> tuple[ChatClient, list[dict]]:
    """A ChatClient on an OpenAI-compatible model whose HTTP requests `handler` answers."""
    return recorded_client(handler)


def test_the_client_asks_the_endpoint_and_counts_the_call():
    body = {"logprob": -3.5, "tokens": 4, "prompt_tokens": 30, "cached_tokens": 29}
    chat, requests = scoring_client(lambda request: httpx.Response(200, json=body))
    scored = asyncio.run(chat.score(DIALOGUE, "Why?"))

    assert scored.logprob == -3.5
    assert (scored.usage.calls, scored.usage.input_tokens, scored.usage.cached_tokens) == (
        1,
        34,
        29,
    )
    assert requests == [
        {
            "url": "http://scores.test/v1/ideas/score",
            "body": {
                "model": "simulator",
                "messages": [
                    {"role": "user", "content": DIALOGUE[0].text},
                    {"role": "assistant", "content": DIALOGUE[1].text},
                ],
                "continuation": "Why?",
            },
        }
    ]


@pytest.mark.parametrize("status", [404, 405])
def test_a_server_without_the_endpoint_gives_none_with_one_notice(status, caplog):
    chat, requests = scoring_client(lambda request: httpx.Response(status, json={}))
    seeded = chat.seeded(3)
    with caplog.at_level(logging.WARNING, logger="agents.chat"):
        assert asyncio.run(chat.score(DIALOGUE, "Why?")) is None
        assert asyncio.run(seeded.score(DIALOGUE, "Why?")) is None

    # the endpoint, then the prompt log-probabilities route's first request; never again, by the
    # client or its seeded copies
    assert [r["url"] for r in requests] == [
        "http://scores.test/v1/ideas/score",
        "http://scores.test/tokenize",
    ]
    notices = [r.getMessage() for r in caplog.records]
    assert len(notices) == 1
    assert "serves neither /ideas/score nor prompt log-probabilities" in notices[0]


# --- prompt log-probabilities, as vLLM returns them -----------------------------------------

HISTORY_TOKENS = [1, 5, 9, 2, 7]
"""The history with the generation prompt, tokenized."""
REPLY_TOKENS = [11, 12]
"""The reply's own tokens: the continued chat is HISTORY_TOKENS + REPLY_TOKENS."""


def vllm_like(request: httpx.Request, *, prefix=HISTORY_TOKENS, logprobs=None) -> httpx.Response:
    """Answer as vLLM does: no /ideas/score, /tokenize at the root, prompt_logprobs on chat."""
    body = json.loads(request.content)
    full = HISTORY_TOKENS + REPLY_TOKENS
    if request.url.path == "/v1/ideas/score":
        return httpx.Response(404, json={"detail": "Not Found"})
    if request.url.path == "/tokenize":
        tokens = full if body.get("continue_final_message") else prefix
        return httpx.Response(200, json={"count": len(tokens), "tokens": tokens})
    if request.url.path == "/v1/chat/completions":
        found = (
            logprobs
            or [None]
            + [
                {str(t): {"logprob": -0.5 if i < len(HISTORY_TOKENS) else -1.25, "rank": 1}}
                for i, t in enumerate(full)
            ][1:]
        )
        return httpx.Response(200, json={"choices": [], "prompt_logprobs": found})
    return httpx.Response(500, json={})


def test_without_the_endpoint_the_reply_tokens_prompt_logprobs_are_summed():
    chat, requests = scoring_client(vllm_like)
    scored = asyncio.run(chat.score(DIALOGUE, "Why?"))

    assert scored.logprob == pytest.approx(-2.5)  # the two reply tokens only, not the history
    assert scored.usage.input_tokens == len(HISTORY_TOKENS + REPLY_TOKENS)
    history = [
        {"role": "user", "content": DIALOGUE[0].text},
        {"role": "assistant", "content": DIALOGUE[1].text},
    ]
    continued = [*history, {"role": "assistant", "content": "Why?"}]
    assert [(r["url"], r["body"]) for r in requests[1:]] == [
        ("http://scores.test/tokenize",
         {"model": "simulator", "messages": history, "add_generation_prompt": True}),
        ("http://scores.test/tokenize",
         {"model": "simulator", "messages": continued, "add_generation_prompt": False,
          "continue_final_message": True}),
        ("http://scores.test/v1/chat/completions",
         {"model": "simulator", "messages": continued, "add_generation_prompt": False,
          "continue_final_message": True, "max_tokens": 1, "temperature": 0,
          "prompt_logprobs": 0}),
    ]  # fmt: skip
    again = asyncio.run(chat.score(DIALOGUE, "How?"))  # the route is remembered
    assert again.logprob == pytest.approx(-2.5) and requests[4]["url"].endswith("/tokenize")


def test_a_template_that_rewrites_the_history_is_not_scored(caplog):
    chat, _ = scoring_client(lambda r: vllm_like(r, prefix=[1, 5, 9, 3]))
    with caplog.at_level(logging.WARNING, logger="agents.chat"):
        assert asyncio.run(chat.score(DIALOGUE, "Why?")) is None
    assert "does not continue the history as a prefix" in caplog.records[0].getMessage()


def test_prompt_logprobs_without_the_reply_token_are_a_model_error():
    full = HISTORY_TOKENS + REPLY_TOKENS
    wrong = [None] + [{"999": {"logprob": -1.0}} for _ in full[1:]]
    chat, _ = scoring_client(lambda r: vllm_like(r, logprobs=wrong))
    with pytest.raises(ModelError, match="^model server sent invalid prompt log-probabilities"):
        asyncio.run(chat.score(DIALOGUE, "Why?"))


@pytest.mark.parametrize(
    ("status", "body", "message"),
    [
        (500, {"error": "boom"}, "^model server error 500"),
        (200, {"tokens": 3}, "^model server sent an invalid score"),
        (200, {"logprob": "nan", "tokens": 3}, "^model server sent an invalid score"),
    ],
)
def test_a_failing_or_invalid_score_is_a_model_error(status, body, message):
    chat, _ = scoring_client(lambda request: httpx.Response(status, json=body))
    with pytest.raises(ModelError, match=message):
        asyncio.run(chat.score(DIALOGUE, "Why?"))
