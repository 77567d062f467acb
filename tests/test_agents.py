"""Each agent on its own, driven by scripted chat clients."""

from __future__ import annotations

import asyncio

import httpx
import openai
import pytest
from langchain_core.messages import AIMessage, HumanMessage, SystemMessage

from agents.assistant import LLMAssistant
from agents.chat import ChatClient, ModelError, request_seed
from agents.critic import AcceptAllCritic, CriticScores, LLMCritic, NoveltyCritic
from agents.simulator import PlainSimulator, StrategySimulator, clean_instruction
from agents.strategist import (
    LearnedStrategist,
    LLMStrategist,
    NoStrategist,
    RandomStrategist,
    choice_schema,
)
from dialogues.models import Usage
from tests.conftest import STRATEGIES
from tests.fakes import ScriptedChatModel, SeedRecordingModel, scripted, text_reply, tool_reply

DIALOGUE = [
    HumanMessage(content="How do vaccines train the immune system?"),
    AIMessage(content="They show the immune system a harmless antigen so memory cells form."),
]


def run(coro):
    return asyncio.run(coro)


def verdict(correct=True, coherent=True, depth=4, insight=4, feedback="Fine."):
    return tool_reply(
        "CriticScores",
        correct=correct,
        coherent=coherent,
        depth=depth,
        insight=insight,
        feedback=feedback,
    )


# --- clean_instruction ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "clean"),
    [
        ("What about boosters?", "What about boosters?"),
        ("  User: What about boosters?  ", "What about boosters?"),
        ("question: Why?", "Why?"),
        ("MESSAGE : Why?", "Why?"),
        ("**User**: What about boosters?", "What about boosters?"),
        ('"What about boosters?"', "What about boosters?"),
        ("'Tell me more.'", "Tell me more."),
        ('User: "Why do boosters help?"', "Why do boosters help?"),
        ("Why boosters?\n\nBoosters refresh memory cells.", "Why boosters?"),
        ("Why boosters? Because memory fades over time.", "Why boosters?"),
        ("Why? And how? Because.", "Why? And how?"),
        ("Tell me more about memory cells.", "Tell me more about memory cells."),
        ("A user: label in the middle stays", "A user: label in the middle stays"),
        ('"', '"'),
        ("", ""),
    ],
)
def test_clean_instruction(raw, clean):
    assert clean_instruction(raw) == clean


def test_clean_instruction_strips_a_bold_label_with_the_colon_inside():
    assert clean_instruction("**User:** What about boosters?") == "What about boosters?"


def test_a_trained_simulators_whole_turn_is_kept_past_its_question_and_paragraph():
    raw = "User: Can you shorten it? Also add a title.\n\nHere is my code:\nx = 1"
    assert clean_instruction(raw) == "Can you shorten it?"
    whole = "Can you shorten it? Also add a title.\n\nHere is my code:\nx = 1"
    assert clean_instruction(raw, whole=True) == whole
    assert clean_instruction(f'User: "{whole}"', whole=True) == whole


@pytest.mark.parametrize(
    ("raw", "kept"),
    [
        (
            "Can you add a title?\n\n<|endconversation|>\n<|endconversation|>",
            "Can you add a title?",
        ),
        ("Write an intro. <|endcopyboard|>", "Write an intro."),
        ("<|endcopyboard|>\n<|endcopyboard|>", ""),
        ("<|endconversation|>", "<|endconversation|>"),  # the marker alone is the marker
        ("Compare a < b and b > c", "Compare a < b and b > c"),
    ],
)
def test_a_trained_turn_ends_at_a_special_tag(raw, kept):
    assert clean_instruction(raw, whole=True) == kept


def test_an_empty_draft_is_drawn_again_with_a_new_seed():
    model = SeedRecordingModel(script=[text_reply("<|endcopyboard|>"), text_reply("Why?")])
    chat = ChatClient(model).seeded(5)
    draft = run(StrategySimulator(chat, trained=True).draft(DIALOGUE, "Ask why.", None))
    assert draft.text == "Why?"
    assert len(set(model.seeds)) == 2 and draft.usage.calls == 2


@pytest.mark.parametrize(("trained", "kept"), [(False, "Why?"), (True, "Why? Tell me more.")])
def test_the_simulator_keeps_the_whole_reply_only_when_trained(trained, kept):
    chat = scripted(text_reply("Why? Tell me more."))
    draft = run(StrategySimulator(chat, trained=trained).draft(DIALOGUE, "Ask why.", None))
    assert draft.text == kept


# --- simulator and assistant ---------------------------------------------------------------------


def test_strategy_simulator_prompt_roles_and_cleaning():
    chat = scripted(text_reply("User: Which cells remember it?\n\nMemory B cells do."))
    draft = run(StrategySimulator(chat).draft(DIALOGUE, "Ask for an example", "too vague"))

    assert draft.text == "Which cells remember it?"
    assert draft.usage.calls == 1 and draft.usage.input_tokens == 40
    system, *rest = chat.model.prompts[0]
    assert isinstance(system, SystemMessage)
    assert "Ask for an example" not in system.text and "too vague" not in system.text
    # The simulator sees its own (user) turns as AI and the answers as human; this draft's
    # request (strategy, feedback) follows the last answer.
    assert [m.type for m in rest] == ["ai", "human"]
    assert rest[0].text == DIALOGUE[0].text
    answer, request = rest[1].text.split("\n\n", 1)
    assert answer == DIALOGUE[1].text
    assert "Ask for an example" in request and "too vague" in request


def test_plain_simulator_ignores_the_strategy():
    chat = scripted(text_reply("Why?"))
    run(PlainSimulator(chat).draft(DIALOGUE, "Ask for a table", None))
    prompt = "\n".join(m.text for m in chat.model.prompts[0])
    assert "Ask for a table" not in prompt and "strategy" not in prompt
    assert "rejected" not in prompt


def test_assistant_adds_a_default_system_prompt_only_when_missing():
    chat = scripted(text_reply("Answer one."), text_reply("Answer two."))
    assistant = LLMAssistant(chat)
    reply = run(assistant.respond(DIALOGUE[:1]))
    assert reply.text == "Answer one."
    first = chat.model.prompts[0]
    assert first[0].type == "system" and "helpful" in first[0].text

    run(assistant.respond([SystemMessage(content="Be a pirate."), DIALOGUE[0]]))
    second = chat.model.prompts[1]
    assert [m.text for m in second] == ["Be a pirate.", DIALOGUE[0].text]


# --- critics -------------------------------------------------------------------------------------


def test_novelty_critic_rejects_above_the_threshold():
    critic = NoveltyCritic(0.8)
    near = run(critic.critique(DIALOGUE, "How do vaccines train the immune system?!"))
    assert not near.accepted and near.similarity > 0.8
    assert "too similar" in near.reason
    same = run(critic.critique(DIALOGUE, DIALOGUE[0].text))
    assert not same.accepted and same.similarity == 1.0
    new = run(critic.critique(DIALOGUE, "Could you compare mRNA and inactivated vaccines?"))
    assert new.accepted and new.similarity < 0.8


def test_novelty_threshold_is_strict():
    messages = [HumanMessage(content="abcde"), AIMessage(content="ok")]
    at = run(NoveltyCritic(0.8).critique(messages, "abcdX"))  # Levenshtein ratio exactly 0.8
    assert at.similarity == pytest.approx(0.8) and at.accepted
    assert not run(NoveltyCritic(0.79).critique(messages, "abcdX")).accepted


def test_novelty_compares_with_every_earlier_user_message_but_not_answers():
    messages = [
        *DIALOGUE,
        HumanMessage(content="Which cells remember the antigen?"),
        AIMessage(content="B cells."),
    ]
    critic = NoveltyCritic()
    assert not run(critic.critique(messages, "Which cells remember the antigen??")).accepted
    # Copying the assistant's answer is not a repeated *user* message.
    assert run(critic.critique(DIALOGUE, DIALOGUE[1].text)).accepted


@pytest.mark.parametrize("critic", [NoveltyCritic(), AcceptAllCritic()])
def test_empty_draft_is_rejected(critic):
    result = run(critic.critique(DIALOGUE, "   "))
    assert not result.accepted and result.reason == "empty draft"


@pytest.mark.parametrize(
    ("scores", "accepted", "reason"),
    [
        ({}, True, "accepted"),
        ({"depth": 3, "insight": 3}, True, "accepted"),  # the minimum itself passes
        ({"depth": 2}, False, "depth 2 < 3"),
        ({"insight": 1}, False, "insight 1 < 3"),
        ({"correct": False}, False, "not correct"),
        ({"coherent": False}, False, "not coherent"),
        (
            {"correct": False, "coherent": False, "depth": 1, "insight": 2},
            False,
            "not correct, not coherent, depth 1 < 3, insight 2 < 3",
        ),
    ],
)
def test_llm_critic_thresholds(scores, accepted, reason):
    chat = scripted(verdict(**scores))
    result = run(LLMCritic(chat, NoveltyCritic()).critique(DIALOGUE, "Why do boosters help?"))
    assert result.accepted is accepted
    assert result.reason == reason
    assert isinstance(result.scores, CriticScores)
    assert result.usage.calls == 1 and result.usage.input_tokens == 50


def test_llm_critic_custom_minimums():
    chat = scripted(verdict(depth=4, insight=4), verdict(depth=4, insight=4))
    strict = LLMCritic(chat, NoveltyCritic(), min_depth=5, min_insight=4)
    assert run(strict.critique(DIALOGUE, "Why?")).reason == "depth 4 < 5"
    lenient = LLMCritic(chat, NoveltyCritic(), min_depth=1, min_insight=1)
    assert run(lenient.critique(DIALOGUE, "Why?")).accepted


def test_llm_critic_prompt_and_feedback():
    chat = scripted(verdict(depth=1, feedback="Mention   memory\ncells."))
    result = run(LLMCritic(chat, NoveltyCritic()).critique(DIALOGUE, "Why do boosters help?"))
    system, *rest = chat.model.prompts[0]
    assert system.type == "system" and "Why do boosters help?" not in system.text
    assert [(m.type, m.text) for m in rest[:2]] == [(m.type, m.text) for m in DIALOGUE]
    assert rest[-1].type == "human" and "Why do boosters help?" in rest[-1].text
    assert result.feedback == "depth 1 < 3. Mention memory cells."


def test_llm_critic_invalid_verdicts_reject_after_three_attempts():
    chat = scripted(text_reply("Looks great!"), text_reply("10/10"), text_reply("yes"))
    result = run(LLMCritic(chat, NoveltyCritic()).critique(DIALOGUE, "Why do boosters help?"))

    assert not result.accepted
    assert result.reason.startswith("critic gave no valid verdict (")
    assert "'yes'" in result.reason  # the last attempt's error is reported
    assert result.scores is None
    assert result.usage.calls == 3 and len(chat.model.prompts) == 3
    assert result.feedback == result.reason


def garbage_tool_call() -> AIMessage:
    bad = {"name": "CriticScores", "args": "{'depth': 4", "id": "c1", "error": "not JSON"}
    return AIMessage(content="", invalid_tool_calls=[bad])


def test_llm_critic_with_only_unusable_replies_is_a_model_error():
    chat = scripted(text_reply(""), garbage_tool_call(), garbage_tool_call())
    critic = LLMCritic(chat, NoveltyCritic())
    with pytest.raises(ModelError, match="^the critic got no usable reply from the model: tool"):
        run(critic.critique(DIALOGUE, "Why do boosters help?"))


def test_llm_critic_with_one_real_but_invalid_reply_still_rejects():
    """A model that answers in prose once is weak, not broken: the draft is only rejected."""
    chat = scripted(text_reply(""), text_reply("Looks great!"), garbage_tool_call())
    result = run(LLMCritic(chat, NoveltyCritic()).critique(DIALOGUE, "Why do boosters help?"))
    assert not result.accepted
    assert result.reason.startswith("critic gave no valid verdict (tool call arguments are not")


def test_llm_critic_whose_verdicts_are_cut_by_the_token_limit_only_rejects():
    """JSON cut off by max_tokens is the model running on (seen on SmolLM2), not a dead server."""
    cut = garbage_tool_call()
    cut.response_metadata = {"finish_reason": "length"}
    chat = scripted(cut, cut.model_copy(), cut.model_copy())
    result = run(LLMCritic(chat, NoveltyCritic()).critique(DIALOGUE, "Why do boosters help?"))
    assert not result.accepted
    assert result.reason.startswith("critic gave no valid verdict (tool call arguments are not")
    assert result.usage.calls == 3


def test_llm_critic_out_of_range_score_is_invalid():
    chat = scripted(verdict(depth=9), verdict(depth=0), verdict(depth=4))
    result = run(LLMCritic(chat, NoveltyCritic()).critique(DIALOGUE, "Why do boosters help?"))
    assert result.accepted and result.usage.calls == 3


def test_llm_critic_skips_the_llm_for_a_near_duplicate():
    chat = scripted()
    result = run(LLMCritic(chat, NoveltyCritic()).critique(DIALOGUE, DIALOGUE[0].text))
    assert not result.accepted and chat.model.prompts == []


# --- strategists ---------------------------------------------------------------------------------


def test_choice_schema_is_a_closed_list():
    schema = choice_schema(["1", "2"]).model_json_schema()
    assert schema["title"] == "StrategyChoice"
    assert schema["required"] == ["choice"]
    assert schema["properties"]["choice"]["enum"] == ["1", "2"]
    model = choice_schema(["1", "2"])
    assert model(choice="2").choice == "2"
    with pytest.raises(ValueError):
        model(choice="3")


def test_llm_strategist_picks_by_number(store):
    chat = scripted(tool_reply("StrategyChoice", choice="2"))
    selection = run(LLMStrategist(store, chat, k=3).select(DIALOGUE, used=[]))

    assert selection.method == "llm" and selection.note is None
    assert len(selection.candidates) == 3
    assert selection.strategy == selection.candidates[1]
    assert selection.usage.calls == 1
    system, *rest = chat.model.prompts[0]
    assert system.type == "system" and "1." not in system.text
    assert [(m.type, m.text) for m in rest[:2]] == [(m.type, m.text) for m in DIALOGUE]
    request = rest[-1].text
    for i, c in enumerate(selection.candidates, 1):
        assert f"{i}. {c.text}" in request
    assert "4." not in request


def test_llm_strategist_falls_back_when_the_pick_is_off_the_list(store):
    chat = scripted(*[tool_reply("StrategyChoice", choice="9")] * 3)
    selection = run(LLMStrategist(store, chat, k=2).select(DIALOGUE, used=[]))
    assert selection.method == "fallback"
    assert selection.strategy == selection.candidates[0]
    assert "invalid pick" in selection.note
    assert selection.usage.calls == 3


def test_llm_strategist_never_offers_used_strategies(store):
    used = ["s0", "s1", "s2"]
    chat = scripted(tool_reply("StrategyChoice", choice="1"))
    selection = run(LLMStrategist(store, chat, k=8).select(DIALOGUE, used=used))
    assert {c.id for c in selection.candidates} == {"s3", "s4"}

    exhausted = run(
        LLMStrategist(store, scripted(), k=8).select(DIALOGUE, used=[f"s{i}" for i in range(5)])
    )
    assert exhausted.method == "none" and exhausted.strategy is None
    assert "no unused strategy" in exhausted.note


def test_random_strategist_is_deterministic_for_a_seed(store):
    def picks(seed: int) -> list[str]:
        strategist = RandomStrategist(store, k=len(STRATEGIES), seed=seed)
        return [run(strategist.select(DIALOGUE, used=[])).strategy.id for _ in range(12)]

    assert picks(7) == picks(7)
    assert len({tuple(picks(s)) for s in range(4)}) > 1  # the seed matters
    selection = run(RandomStrategist(store, k=3, seed=1).select(DIALOGUE, used=[]))
    assert selection.method == "random" and selection.strategy in selection.candidates
    assert selection.usage == Usage()


class OffLoopRetriever:
    """A retriever that records whether it was called on a thread running an event loop."""

    def __init__(self, store) -> None:
        self.store, self.on_loop = store, []

    def _called(self) -> None:
        try:
            asyncio.get_running_loop()
            self.on_loop.append(True)
        except RuntimeError:
            self.on_loop.append(False)

    def search(self, text, k, *, exclude=()):
        self._called()
        return self.store.search(text, k, exclude=exclude)

    def rank(self, text, *, exclude=(), temperature=1.0):
        self._called()
        return []


def test_retrieval_runs_off_the_event_loop(store):
    """Chroma, the embedder and the ranker block: on the loop they would stall every run."""
    retriever = OffLoopRetriever(store)
    chat = scripted(tool_reply("StrategyChoice", choice="1"))
    run(LLMStrategist(retriever, chat, k=2).select(DIALOGUE, used=[]))
    run(RandomStrategist(retriever, k=2).select(DIALOGUE, used=[]))
    run(LearnedStrategist(retriever, k=2).select(DIALOGUE, used=[]))
    assert retriever.on_loop == [False, False, False]


def test_no_strategist():
    selection = run(NoStrategist().select(DIALOGUE, used=[]))
    assert selection.strategy is None and selection.candidates == [] and selection.method == "none"
    assert selection.as_record()["strategy"] is None


# --- chat client ---------------------------------------------------------------------------------


def long_dialogue(turns: int) -> list:
    messages = [SystemMessage(content="You are a helpful assistant.")]
    for i in range(turns):
        messages.append(HumanMessage(content=f"question {i} " + "word " * 40))
        messages.append(AIMessage(content=f"answer {i} " + "word " * 40))
    messages.append(HumanMessage(content="the last question?"))
    return messages


def test_history_trimming_keeps_system_and_last_message():
    messages = long_dialogue(10)
    client = ChatClient(ScriptedChatModel(), history_tokens=150)
    kept = client.fit(messages)

    assert kept[0] is messages[0]
    assert kept[-1] is messages[-1]
    assert 2 < len(kept) < len(messages)
    assert kept[1:] == messages[len(messages) - len(kept) + 1 :]  # the newest ones, in order


def test_history_within_budget_is_untouched():
    messages = long_dialogue(2)
    assert ChatClient(ScriptedChatModel(), history_tokens=10_000).fit(messages) == messages


def test_history_trimming_sends_the_trimmed_history():
    chat = scripted(text_reply("ok"), history_tokens=150)
    run(chat.text(long_dialogue(10)))
    sent = chat.model.prompts[0]
    assert sent[0].type == "system" and sent[-1].text == "the last question?"
    assert len(sent) < len(long_dialogue(10))


def test_history_trimming_never_drops_the_last_message():
    messages = [SystemMessage(content="system prompt"), HumanMessage(content="long " * 400)]
    kept = ChatClient(ScriptedChatModel(), history_tokens=100).fit(messages)
    assert kept[-1] is messages[-1]


def test_text_retries_empty_replies():
    chat = scripted(text_reply(""), text_reply("  "), text_reply(" Fine. "))
    text, usage = run(chat.text(DIALOGUE))
    assert text == "Fine."
    assert usage.calls == 3 and usage.input_tokens == 120 and usage.output_tokens == 60


def test_text_fails_after_only_empty_replies():
    chat = scripted(*[text_reply("")] * 3)
    with pytest.raises(ModelError, match=r"^model server gave only empty replies \(3 attempts\)$"):
        run(chat.text(DIALOGUE))
    assert chat.model.unused == 0


def test_a_seeded_client_sends_a_seed_per_messages_and_attempt():
    replies = [text_reply(""), text_reply("Fine."), text_reply("Again."), text_reply("Other.")]
    model = SeedRecordingModel(script=[*replies, verdict(depth=4)])
    client = ChatClient(model, seed=7)
    assert run(client.text(DIALOGUE))[0] == "Fine."  # the empty first reply was retried
    first = request_seed(7, client.fit(DIALOGUE), 0)
    assert model.seeds[:2] == [first, request_seed(7, client.fit(DIALOGUE), 1)]
    assert model.seeds[0] != model.seeds[1]  # a retry is a fresh draw, not the same one again
    run(client.text(DIALOGUE))
    run(client.seeded(8).text(DIALOGUE))
    assert model.seeds[2] == first and model.seeds[3] not in (first, model.seeds[1])
    assert run(client.structured(CriticScores, DIALOGUE)).value.depth == 4
    assert model.seeds[4] == first  # structured calls are seeded the same way
    assert client.seed == 7 and model.seed is None  # seeding never changes the shared model


def test_an_unseeded_client_leaves_the_model_seed_alone():
    model = SeedRecordingModel(script=[text_reply("Fine.")], seed=3)
    run(ChatClient(model).text(DIALOGUE))
    assert model.seeds == [3]


def test_request_seeds_depend_on_seed_messages_and_attempt():
    other = [*DIALOGUE[:-1], HumanMessage(content="something else?")]
    seeds = {
        request_seed(0, DIALOGUE, 0),
        request_seed(1, DIALOGUE, 0),
        request_seed(0, DIALOGUE, 1),
        request_seed(0, other, 0),
    }
    assert len(seeds) == 4
    assert request_seed(0, DIALOGUE, 0) == request_seed(0, list(DIALOGUE), 0)
    assert all(0 <= s < 2**31 for s in seeds)


class FailingModel(ScriptedChatModel):
    error: BaseException | None = None

    def _generate(self, messages, *args, **kwargs):
        raise self.error


def test_connection_failure_becomes_a_one_line_model_error():
    request = httpx.Request("POST", "http://127.0.0.1:9/v1/chat/completions")
    client = ChatClient(FailingModel(error=openai.APIConnectionError(request=request)))
    with pytest.raises(ModelError, match="^model server did not answer") as info:
        run(client.text(DIALOGUE))
    assert "\n" not in str(info.value)


def test_http_error_status_becomes_a_model_error():
    request = httpx.Request("POST", "http://127.0.0.1:9/v1/chat/completions")
    response = httpx.Response(503, request=request)
    error = openai.APIStatusError("busy\nplease retry", response=response, body=None)
    client = ChatClient(FailingModel(error=error))
    with pytest.raises(ModelError, match="^model server error 503: busy please retry$"):
        run(client.structured(CriticScores, DIALOGUE))


# --- usage ---------------------------------------------------------------------------------------


def test_usage_sums_and_round_trips():
    total = Usage(1, 10, 2, 0.5) + Usage(2, 5, 3, 0.25) + Usage()
    assert total == Usage(3, 15, 5, 0.75)
    assert sum([Usage(1, 1, 1, 1.0)] * 3, Usage()) == Usage(3, 3, 3, 3.0)
    data = Usage(1, 2, 3, 0.123456789, 1).as_dict()
    assert data == {
        "calls": 1,
        "input_tokens": 2,
        "output_tokens": 3,
        "seconds": 0.1235,
        "cached_tokens": 1,
    }
    assert Usage.from_dict(data) == Usage(1, 2, 3, 0.1235, 1)
    assert Usage.from_dict(None) == Usage() == Usage.from_dict({})


def test_usage_sums_cached_tokens_and_loads_records_without_them():
    total = Usage(1, 100, 5, 0.5, 90) + Usage(1, 50, 5, 0.5)
    assert total.cached_tokens == 90 and total.evaluated_tokens == 60
    old = Usage.from_dict({"calls": 1, "input_tokens": 7, "output_tokens": 1, "seconds": 0.1})
    assert old.cached_tokens == 0 and old.evaluated_tokens == 7


def test_client_records_the_cached_prompt_tokens_the_server_reports():
    usage = {
        "input_tokens": 300,
        "output_tokens": 5,
        "total_tokens": 305,
        "input_token_details": {"cache_read": 280},
    }
    chat = scripted(AIMessage(content="Hi.", usage_metadata=usage), text_reply("Plain."))
    _, first = run(chat.text(DIALOGUE))
    assert (first.input_tokens, first.cached_tokens, first.evaluated_tokens) == (300, 280, 20)
    _, second = run(chat.text(DIALOGUE))  # a reply without cache details: nothing reused
    assert (second.input_tokens, second.cached_tokens) == (40, 0)


def test_openai_prompt_tokens_details_reach_the_usage_record():
    body = {
        "id": "x",
        "object": "chat.completion",
        "created": 0,
        "model": "m",
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": "Hi."},
                "finish_reason": "stop",
            }
        ],
        "usage": {
            "prompt_tokens": 120,
            "completion_tokens": 2,
            "total_tokens": 122,
            "prompt_tokens_details": {"cached_tokens": 100},
        },
    }
    transport = httpx.MockTransport(lambda request: httpx.Response(200, json=body))
    from langchain_openai import ChatOpenAI

    model = ChatOpenAI(
        base_url="http://test/v1",
        api_key="x",
        model="m",
        max_retries=0,
        http_async_client=httpx.AsyncClient(transport=transport),
    )
    _, usage = run(ChatClient(model).text(DIALOGUE))
    assert (usage.input_tokens, usage.cached_tokens, usage.evaluated_tokens) == (120, 100, 20)


@pytest.mark.parametrize(("adapter", "trained"), [("trained", True), ("none", False)])
def test_the_registry_marks_the_simulator_trained_when_it_runs_with_an_adapter(adapter, trained):
    from types import SimpleNamespace

    from agents.registry import SIMULATORS
    from runtime.settings import load_settings

    settings = load_settings(None, simulator={"adapter": adapter})
    asked = []
    wiring = SimpleNamespace(settings=settings, chat=lambda role: asked.append(role) or scripted())
    for name in ("strategy", "plain"):
        assert SIMULATORS[name](wiring).trained is trained
    assert asked == ["simulator", "simulator"]
