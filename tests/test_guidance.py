"""Sampling the simulator's drafts with classifier-free guidance, with scripted logits."""

from __future__ import annotations

import asyncio
import logging

import httpx
import numpy as np
import pytest
from langchain_core.messages import AIMessage, HumanMessage

from agents.chat import ChatClient, ModelError
from agents.simulator import StrategySimulator
from dialogues.models import Usage
from runtime.settings import GUIDED_SAMPLING
from tests.fakes import ScriptedChatModel, ScriptedGuidance, recorded_client

DIALOGUE = [
    HumanMessage(content="How do vaccines work?"),
    AIMessage(content="They train memory B and T cells to recognise an antigen."),
]
STRATEGY = "Ask for a concrete example of the claim."


# --- the sampling rule (runtime/llama_server.py) --------------------------------------------


def logits(**probabilities: float) -> np.ndarray:
    """Logits over a 4-token vocabulary (a, b, c, d) with these probabilities (rest: tiny)."""
    row = np.full(4, 1e-9)
    for token, p in probabilities.items():
        row["abcd".index(token)] = p
    return np.log(row / row.sum())


def choose(
    llama_server,
    on,
    off,
    *,
    recent=(),
    seed=0,
    unboosted=frozenset(),
    ends=frozenset(),
    may_end=True,
    **fields,
) -> int:
    request = llama_server.GuideRequest(messages=[], against=[], **fields)
    rng = np.random.default_rng(seed)
    return llama_server.guided_choice(on, off, list(recent), request, rng, unboosted, ends, may_end)


def test_the_clients_guided_sampling_is_the_endpoints_default(llama_server):
    defaults = llama_server.GuideRequest(messages=[], against=[])
    assert {k: getattr(defaults, k) for k in GUIDED_SAMPLING} == GUIDED_SAMPLING


def test_guidance_picks_the_token_the_condition_raises_not_the_likeliest(llama_server):
    # Under the strategy, a is a bit likelier than b; without it, a is far likelier: what the
    # strategy adds is b. Ignoring the strategy (or the contrast) picks a.
    on, off = logits(a=0.5, b=0.4, c=0.1), logits(a=0.8, b=0.1, c=0.1)
    assert choose(llama_server, on, off, temperature=0, guidance=1.0) == 0
    assert choose(llama_server, on, off, temperature=0, guidance=2.0) == 1
    assert choose(llama_server, on, off, temperature=0, guidance=0.0) == 0  # the contrast alone
    # a contrast equal to the condition changes nothing, whatever the weight
    assert choose(llama_server, on, on, temperature=0, guidance=5.0) == 0


def test_guidance_never_picks_a_token_the_condition_finds_implausible(llama_server):
    # d is 1000x likelier with the strategy than without, but under 2% of the likeliest token
    on, off = logits(a=0.6, b=0.39, d=0.01), logits(a=0.6, b=0.39, d=0.00001)
    assert choose(llama_server, on, off, temperature=0, guidance=10.0) != 3
    draws = {choose(llama_server, on, off, guidance=10.0, seed=s) for s in range(200)}
    assert 3 not in draws
    # top-k 1 leaves only the likeliest
    assert choose(llama_server, on, logits(a=0.9, b=0.1), temperature=0, guidance=9, top_k=1) == 0


def test_guided_draws_follow_the_guided_distribution(llama_server):
    on, off = logits(a=0.5, b=0.5), logits(a=0.8, b=0.2)
    fields = {"temperature": 1.0, "top_p": 1.0, "repeat_penalty": 1.0}
    plain = [choose(llama_server, on, off, seed=s, guidance=1.0, **fields) for s in range(2000)]
    guided = [choose(llama_server, on, off, seed=s, guidance=2.0, **fields) for s in range(2000)]
    assert abs(np.mean(plain) - 0.5) < 0.05  # b's share, sampled from the condition alone
    # gamma 2: p(b) ~ 0.2 * (0.5 / 0.2)^2 = 1.25 against a's 0.8 * (0.5 / 0.8)^2 = 0.3125
    assert abs(np.mean(guided) - 1.25 / 1.5625) < 0.05
    seeded = [choose(llama_server, on, off, seed=7, guidance=2.0, **fields) for _ in range(5)]
    assert len(set(seeded)) == 1


def test_top_p_one_keeps_every_token_even_when_the_sum_falls_short_of_one(llama_server):
    # these probabilities sum to 1 - 1e-16 in floating point: top-p 1 must still draw them all
    on = logits(a=0.0268, b=0.0951, c=0.3414, d=0.5367)
    fields = {"temperature": 1.0, "top_p": 1.0, "top_k": 0, "min_p": 0.0, "repeat_penalty": 1.0}
    draws = [choose(llama_server, on, on, seed=s, guidance=1.0, **fields) for s in range(400)]
    assert set(draws) == {0, 1, 2, 3}


def test_the_conditions_own_words_are_not_boosted(llama_server):
    # b is the condition's word, copied: guidance would pick it; unboosted, it keeps its plain
    # log-probability, and c, which the condition raises without being its word, wins
    on, off = logits(a=0.5, b=0.3, c=0.2), logits(a=0.6, b=0.01, c=0.39)
    assert choose(llama_server, on, off, temperature=0, guidance=3.0) == 1
    assert choose(llama_server, on, off, temperature=0, guidance=3.0, unboosted={1}) == 0
    off = logits(a=0.6, b=0.01, c=0.05)
    assert choose(llama_server, on, off, temperature=0, guidance=3.0, unboosted={1}) == 2


def test_the_model_end_rule_ends_with_the_models_own_untruncated_probability(llama_server):
    # a is the end token, 30% likely; top-k 2 keeps a and b, so sampled after truncation the
    # reply ends half the time; the model's own call ends it 30% of the time
    on = logits(a=0.3, b=0.3, c=0.2, d=0.2)
    fields = {"temperature": 1.0, "top_k": 2, "guidance": 1.0, "ends": {0}}
    sampled = [choose(llama_server, on, on, seed=s, end="sampled", **fields) for s in range(3000)]
    model = [choose(llama_server, on, on, seed=s, end="model", **fields) for s in range(3000)]
    assert abs(np.mean(np.equal(sampled, 0)) - 0.5) < 0.04
    assert abs(np.mean(np.equal(model, 0)) - 0.3) < 0.04
    # continuing, the end token is out and the next two continuations make the top-k
    assert set(model) == {0, 1, 2}
    # guidance does not move the decision: the contrast finds the end far likelier
    off = logits(a=0.9, b=0.05, c=0.03, d=0.02)
    guided = [choose(llama_server, on, off, seed=s, end="model", **fields | {"guidance": 5.0})
              for s in range(3000)]  # fmt: skip
    assert abs(np.mean(np.equal(guided, 0)) - 0.3) < 0.04


def test_the_model_end_rule_at_temperature_zero_ends_only_when_the_end_is_likelier(llama_server):
    fields = {"temperature": 0, "guidance": 1.0, "end": "model", "ends": {0}}
    on = logits(a=0.45, b=0.3, c=0.25)  # the end is the likeliest token, but under one half
    assert choose(llama_server, on, on, **fields) == 1
    assert choose(llama_server, on, on, **fields | {"end": "sampled"}) == 0
    assert choose(llama_server, logits(a=0.6, b=0.4), logits(a=0.6, b=0.4), **fields) == 0
    # without end tokens to decide on, the rule changes nothing
    assert choose(llama_server, on, on, **fields | {"ends": frozenset()}) == 0


@pytest.mark.parametrize("end", ["sampled", "model"])
def test_a_reply_under_its_fewest_words_never_ends(llama_server, end):
    # the end token a is the likeliest; held open, the reply goes on with b, c, d as they are
    on = logits(a=0.7, b=0.15, c=0.1, d=0.05)
    fields = {"temperature": 1.0, "guidance": 1.0, "end": end, "ends": {0}}
    held = [choose(llama_server, on, on, seed=s, may_end=False, **fields) for s in range(3000)]
    assert 0 not in held
    assert abs(np.mean(np.equal(held, 1)) - 0.5) < 0.04  # 0.15 of the 0.3 left
    free = [choose(llama_server, on, on, seed=s, **fields) for s in range(300)]
    assert np.mean(np.equal(free, 0)) > 0.5
    assert choose(llama_server, on, on, may_end=False, **fields | {"temperature": 0}) == 1


class Detokenizer:
    """Spells token i as the i-th word of `words`."""

    def __init__(self, words: list[str]) -> None:
        self.words = words

    def detokenize(self, tokens: list[int]) -> bytes:
        return "".join(self.words[t] for t in tokens).encode()


def test_a_held_reply_may_end_once_it_has_its_fewest_words(llama_server):
    llama = Detokenizer(["Why", " not", " now", "<|end|>", "?"])
    assert llama_server.Hold(llama, 0, []).may_end  # no floor: nothing held
    hold = llama_server.Hold(llama, 3, [])
    assert not hold.may_end
    assert hold.stop([0]) is None and hold.stop([0, 1]) is None and not hold.may_end
    assert hold.stop([0, 1, 4]) is None and not hold.may_end  # "Why not?" is two words
    assert hold.stop([0, 1, 2]) is None and hold.may_end
    unheld = llama_server.Hold(llama, 0, ["<|end|>"])
    assert unheld.stop([0, 2, 2, 2]) is None and unheld.stop([3]) is None  # no floor: no stops


def test_a_held_reply_stops_at_the_end_marker_alone_or_after_words(llama_server):
    llama = Detokenizer(["Why", " not", "<|end|>", "\n", "<|", "end", "|>"])
    assert llama_server.Hold(llama, 8, ["<|end|>"]).stop([2]) == 1
    assert llama_server.Hold(llama, 8, ["<|end|>"]).stop([0, 1, 3, 2]) == 4
    hold = llama_server.Hold(llama, 8, ["<|end|>"])
    assert [hold.stop([0, 4][:n]) for n in (1, 2)] == [None, None]
    assert hold.stop([0, 4, 5, 6]) == 4  # written in pieces
    assert llama_server.Hold(llama, 8, ["<|other|>"]).stop([2]) is None


def test_a_held_reply_that_loops_stops_after_the_first_time_round_even_past_its_words(
    llama_server,
):
    words = ["What", " happened", " that", " occurred", " and", "\n"]
    hold = llama_server.Hold(Detokenizer(words), 32, [])
    assert hold.stop([0, 1, 2, 3, 2, 3]) is None  # twice is not yet a loop
    assert hold.stop([0, 1, 2, 3, 2, 3, 2, 3]) == 4  # "What happened that occurred"
    assert hold.stop([0, 1, 5, 5, 5]) == 3
    # held, then looping once it may end: the demo's "injury that occurred that occurred ..."
    past = llama_server.Hold(Detokenizer(words), 2, [])
    assert past.stop([0, 1]) is None and past.may_end
    assert past.stop([0, 1, 2, 3, 2, 3, 2, 3]) == 4


def test_looping_finds_the_shortest_run_repeated_three_times(llama_server):
    looping = llama_server.looping
    assert looping([]) == 0 and looping([1, 1]) == 0
    assert looping([1, 1, 1]) == 1
    assert looping([9, 1, 2, 1, 2, 1, 2]) == 2
    assert looping([1, 2, 3, 1, 2, 3, 1, 2, 4]) == 0  # the tail breaks it
    assert looping([1, 2] * 2 + [1]) == 0 and looping([1, 2] * 3 + [1]) == 2  # (2, 1) x3
    run = list(range(30))
    assert looping(run * 3) == 0  # longer than LOOP_LONGEST: not counted
    assert looping(run[: llama_server.LOOP_LONGEST] * 3) == llama_server.LOOP_LONGEST


class WordTokenizer:
    """Tokenizes each distinct spelling to one id, recording what it was asked."""

    def __init__(self) -> None:
        self.ids: dict[bytes, int] = {}

    def tokenize(self, text: bytes, add_bos: bool, special: bool) -> list[int]:
        assert not add_bos and not special
        return [self.ids.setdefault(text, len(self.ids))]


def test_the_unboosted_words_are_spelled_as_a_reply_may_write_them(llama_server):
    tokenizer = WordTokenizer()
    tokens = llama_server.word_tokens(tokenizer, "Ask for an Example, twice: 2 examples.")
    spelled = set(tokenizer.ids)
    assert {b"Example", b" Example", b"example", b" example", b"Ask", b" ask"} <= spelled
    assert {b"examples", b" Examples", b"twice", b" Twice"} <= spelled
    assert not any(b"2" in s or b"," in s or b":" in s for s in spelled)
    assert tokens == frozenset(tokenizer.ids.values())
    assert llama_server.word_tokens(tokenizer, "") == frozenset()


def test_the_repeat_penalty_lowers_recent_tokens(llama_server):
    on = logits(a=0.52, b=0.48)
    assert choose(llama_server, on, on, temperature=0, guidance=1.0, repeat_penalty=1.0) == 0
    shifted = on + 3.0  # positive logits shrink by the penalty, as llama.cpp's do
    penalised = {"temperature": 0, "recent": [0], "guidance": 1.0, "repeat_penalty": 1.1}
    assert choose(llama_server, shifted, shifted, **penalised) == 1


# --- the client (agents/chat.py) ------------------------------------------------------------


def guided_client(handler) -> tuple[ChatClient, list[dict]]:
    """A seeded ChatClient whose model samples at 0.8, up to 96 tokens; `handler` answers."""
    return recorded_client(
        handler,
        seed=11,
        base_url="http://guided.test/v1",
        temperature=0.8,
        extra_body={"max_tokens": 96},
    )


AGAINST = [DIALOGUE[0], AIMessage(content=DIALOGUE[1].text + " (a plain follow-up)")]


def test_the_client_sends_both_chats_the_weight_and_the_models_sampling():
    reply = {"text": " Such as? ", "tokens": 3, "prompt_tokens": 60, "cached_tokens": 50}
    chat, requests = guided_client(lambda request: httpx.Response(200, json=reply))
    text, usage = asyncio.run(chat.guided(DIALOGUE, AGAINST, 2.5, unboosted=STRATEGY))

    assert text == "Such as?"
    assert usage == Usage(1, 60, 3, usage.seconds, 50)
    [request] = requests
    assert request["url"] == "http://guided.test/v1/ideas/guided"
    body = request["body"]
    assert body["messages"][-1]["content"] == DIALOGUE[1].text
    assert body["against"][-1]["content"] == AGAINST[1].text
    assert (body["model"], body["guidance"], body["temperature"], body["max_tokens"]) == (
        "simulator",
        2.5,
        0.8,
        96,
    )
    assert body["unboosted"] == STRATEGY
    assert {k: body[k] for k in GUIDED_SAMPLING} == GUIDED_SAMPLING  # in the fingerprint too
    seeds = {chat.seeded(s)._sampling(DIALOGUE, 0)["seed"] for s in (11, 12)}
    assert body["seed"] in seeds and len(seeds) == 2  # the client's seed decides the draw


def test_an_empty_guided_reply_is_drawn_again_with_a_new_seed():
    replies = iter([{"text": " ", "tokens": 1}, {"text": "Why?", "tokens": 2}])
    chat, requests = guided_client(lambda request: httpx.Response(200, json=next(replies)))
    text, usage = asyncio.run(chat.guided(DIALOGUE, AGAINST, 2.0))
    assert text == "Why?" and usage.calls == 2
    assert requests[0]["body"]["seed"] != requests[1]["body"]["seed"]


@pytest.mark.parametrize("status", [404, 405])
def test_a_server_without_the_endpoint_gives_none_with_one_notice(status, caplog):
    chat, requests = guided_client(lambda request: httpx.Response(status, json={}))
    with caplog.at_level(logging.WARNING, logger="agents.chat"):
        assert asyncio.run(chat.guided(DIALOGUE, AGAINST, 2.0)) is None
        assert asyncio.run(chat.seeded(3).guided(DIALOGUE, AGAINST, 2.0)) is None
    assert len(requests) == 1 and not chat.can_guide
    [notice] = [r.getMessage() for r in caplog.records]
    assert "serves no /ideas/guided" in notice and "without guidance" in notice


@pytest.mark.parametrize(
    ("status", "body", "message"),
    [
        (500, {"detail": "boom"}, "model server error 500"),
        (200, {"text": 3}, "invalid guided reply"),
    ],
)
def test_a_failing_or_invalid_guided_reply_is_one_model_error(status, body, message):
    chat, _ = guided_client(lambda request: httpx.Response(status, json=body))
    with pytest.raises(ModelError, match=message):
        asyncio.run(chat.guided(DIALOGUE, AGAINST, 2.0))


# --- the simulator (agents/simulator.py) ----------------------------------------------------


def test_the_simulator_samples_against_its_prompt_without_the_strategy():
    chat = ScriptedGuidance("Could you give an example?")
    simulator = StrategySimulator(chat, guidance=2.0)
    draft = asyncio.run(simulator.draft(DIALOGUE, STRATEGY, None))

    assert draft.text == "Could you give an example?" and draft.guidance == 2.0
    assert draft.usage.calls == 1 and chat.model.prompts == []  # no plain completion
    assert chat.unboosted == STRATEGY
    [(messages, against, guidance)] = chat.asked
    assert guidance == 2.0
    assert messages == chat.fit(simulator.messages(DIALOGUE, STRATEGY, None))
    assert STRATEGY in messages[-1].text and STRATEGY not in against[-1].text
    assert [m.text for m in messages[:-1]] == [m.text for m in against[:-1]]
    # the two requests differ in the strategy line only
    lines, contrast = messages[-1].text.splitlines(), against[-1].text.splitlines()
    assert len(lines) == len(contrast)
    assert [a != b for a, b in zip(lines, contrast, strict=True)].count(True) == 1
    assert "natural follow-up" in against[-1].text and "specific" in against[-1].text


def test_the_contrast_keeps_the_critics_feedback():
    chat = ScriptedGuidance("Which cells, exactly?")
    asyncio.run(StrategySimulator(chat, guidance=3.0).draft(DIALOGUE, STRATEGY, "Too vague."))
    [(messages, against, _)] = chat.asked
    assert "Too vague." in messages[-1].text and "Too vague." in against[-1].text


@pytest.mark.parametrize(("guidance", "strategy"), [(1.0, STRATEGY), (2.0, None)])
def test_without_a_weight_or_a_strategy_the_draft_is_sampled_plainly(guidance, strategy):
    chat = ScriptedGuidance("never used")
    draft = asyncio.run(StrategySimulator(chat, guidance=guidance).draft(DIALOGUE, strategy, None))
    assert draft.text == "plain reply" and chat.asked == [] and draft.guidance is None


def test_the_plain_simulator_never_guides_even_with_a_weight():
    from agents.simulator import PlainSimulator

    chat = ScriptedGuidance("never used")
    draft = asyncio.run(PlainSimulator(chat, guidance=5.0).draft(DIALOGUE, STRATEGY, None))
    assert draft.text == "plain reply" and chat.asked == [] and draft.guidance is None


def test_a_server_without_guidance_gets_plain_drafts():
    chat = ScriptedGuidance(guides=False)
    simulator = StrategySimulator(chat, guidance=2.0)
    first = asyncio.run(simulator.draft(DIALOGUE, STRATEGY, None))
    assert first.text == "plain reply" and not chat.can_guide and first.guidance is None
    assert len(chat.model.prompts) == 1


def test_a_negative_weight_is_refused():
    with pytest.raises(ValueError, match="guidance"):
        StrategySimulator(ScriptedGuidance(), guidance=-1.0)


def test_the_guidance_setting_reaches_the_strategy_simulator_and_the_fingerprint(wiring):
    import argparse

    from agents.registry import SIMULATORS
    from cli.options import add_agent_arguments, add_settings_arguments, settings_from_args

    w = wiring({}, simulator_guidance=2.5)
    assert SIMULATORS["strategy"](w).guidance == 2.5
    assert SIMULATORS["plain"](w).guidance == 1.0
    parser = argparse.ArgumentParser()
    add_settings_arguments(parser)
    add_agent_arguments(parser)
    parsed = settings_from_args(parser.parse_args(["--simulator-guidance", "2"]))
    assert parsed.guidance() == 2.0 and parsed.fingerprint()["simulator_guidance"] == 2.0
    assert parsed.fingerprint()["guided_sampling"] == GUIDED_SAMPLING
    plain = settings_from_args(parser.parse_args(["--simulator-guidance", "1"]))
    assert "simulator_guidance" not in plain.fingerprint()  # older batches still resume
    assert "guided_sampling" not in plain.fingerprint()
    with pytest.raises(ValueError):
        settings_from_args(parser.parse_args(["--simulator-guidance", "-1"]))


def test_unset_guidance_is_the_measured_weight_for_the_trained_simulator_on_the_bundled_model():
    from runtime.adapters import shipped
    from runtime.settings import EMBEDDED_GUIDANCE, Settings

    if shipped("strategy") is None:
        pytest.skip("no shipped simulator adapter")
    assert Settings().guidance() == EMBEDDED_GUIDANCE == 5.0
    assert Settings().fingerprint()["simulator_guidance"] == EMBEDDED_GUIDANCE
    assert Settings().public_dump()["simulator_guidance"] == EMBEDDED_GUIDANCE  # manifest, card
    assert Settings(simulator={"adapter": "none"}).guidance() == 1.0  # the prompted simulator
    served = Settings(model={"base_url": "http://localhost:8000/v1"})
    assert served.guidance() == 1.0  # measured on the embedded server only
    assert Settings(simulator_guidance=3.0, model={"base_url": "http://h/v1"}).guidance() == 3.0


def test_a_chat_model_that_is_no_openai_client_neither_scores_nor_guides(caplog):
    chat = ChatClient(ScriptedChatModel(script=[]))
    with caplog.at_level(logging.WARNING, logger="agents.chat"):
        assert asyncio.run(chat.guided(DIALOGUE, AGAINST, 2.0)) is None
        assert asyncio.run(chat.score(DIALOGUE, "Why?")) is None
        assert asyncio.run(chat.guided(DIALOGUE, AGAINST, 2.0)) is None  # not asked again
    assert not chat.can_guide and not chat.can_score
    notices = [r.getMessage() for r in caplog.records]
    assert len(notices) == 2 and all("is not an OpenAI-compatible client" in n for n in notices)
    assert "without guidance" in notices[0] and "not reranked" in notices[1]
