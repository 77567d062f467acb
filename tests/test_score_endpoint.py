"""The embedded server's scoring endpoint on the bundled model (`pytest -m embedded`)."""

import json
import math
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest

from runtime.server import EmbeddedServer, default_gguf

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def server(bundled_gguf):
    """The embedded server on the bundled model, serving the shipped simulators as adapters."""
    from runtime.adapters import all_shipped
    from runtime.settings import EMBEDDED_ALIAS

    gguf = bundled_gguf
    adapters = all_shipped(EMBEDDED_ALIAS)
    if not adapters:
        pytest.skip("no shipped simulator adapters")
    with EmbeddedServer(gguf=gguf, alias=EMBEDDED_ALIAS, adapters=adapters) as running:
        running.adapter_paths = adapters
        yield running


def post(url: str, body: dict) -> dict:
    request = urllib.request.Request(
        url, json.dumps(body).encode(), {"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=120) as response:
        return json.load(response)


SYSTEM = {"role": "system", "content": "You are a helpful assistant."}
FRANCE = [SYSTEM, {"role": "user", "content": "What is the capital of France?"}]
GERMANY = [SYSTEM, {"role": "user", "content": "What is the capital of Germany?"}]


def greedy(server, messages, model=None) -> str:
    body = {"model": model or server.model, "messages": messages, "temperature": 0}
    body["max_tokens"] = 16
    reply = post(f"{server.base_url}/chat/completions", body)
    return reply["choices"][0]["message"]["content"]


@pytest.mark.embedded
def test_the_score_endpoint_scores_replies_and_leaves_chat_completions_as_they_were(server):
    url = f"{server.base_url}/ideas/score"
    reply = greedy(server, GERMANY)
    greedy(server, FRANCE)
    before = greedy(server, GERMANY)  # evaluated from the user's turn on, as after a score
    assert len(reply.split()) > 1
    likely = post(url, {"model": server.model, "messages": GERMANY, "continuation": reply})
    backwards = " ".join(reply.split()[::-1])
    unlikely = post(url, {"model": server.model, "messages": GERMANY, "continuation": backwards})
    assert likely["tokens"] > 0 and unlikely["tokens"] > 0
    assert math.isfinite(likely["logprob"]) and likely["logprob"] < 0
    assert likely["logprob"] > unlikely["logprob"]
    again = post(url, {"model": server.model, "messages": GERMANY, "continuation": reply})
    assert again == likely  # the prefix the last score left in the context changes nothing
    post(url, {"model": server.model, "messages": FRANCE, "continuation": reply})
    assert greedy(server, GERMANY) == before
    too_long = {"model": server.model, "messages": GERMANY, "continuation": "word " * 5000}
    with pytest.raises(urllib.error.HTTPError, match="400"):
        post(url, too_long)


def reference(llama_server, messages, continuation, lora=None) -> float:
    """The continuation's log-probability from every logit row of a fresh model: no reuse."""
    import numpy as np
    from llama_cpp import Llama

    llama = Llama(
        str(default_gguf()),
        n_ctx=1024,
        n_threads=1,
        n_threads_batch=1,
        logits_all=True,
        lora_path=lora,
        verbose=False,
    )
    prompt = llama_server.chat_prompt(llama, messages, None)
    tokens = llama.tokenize(continuation.encode(), False, False)
    llama.eval(prompt + tokens)
    total = 0.0
    for i, token in enumerate(tokens):
        row = llama.scores[len(prompt) - 1 + i].astype(np.float64)
        total += row[token] - row.max() - np.log(np.exp(row - row.max()).sum())
    return total


@pytest.mark.embedded
def test_the_model_name_selects_the_adapter_a_score_is_computed_with(server, llama_server):
    url = f"{server.base_url}/ideas/score"
    name, path = sorted(server.adapter_paths.items())[0]
    continuation = "What is the capital of France?"

    def score(model):
        body = {"model": model, "messages": GERMANY, "continuation": continuation}
        return post(url, body)["logprob"]

    base = score(server.model)
    adapted = score(name)
    assert adapted == pytest.approx(reference(llama_server, GERMANY, continuation, str(path)))
    assert base == pytest.approx(reference(llama_server, GERMANY, continuation))
    assert abs(adapted - base) > 0.1
    assert score(server.model) == base  # switching back restores the base model's scores


@pytest.fixture(scope="module")
def scoring(llama_server, bundled_gguf):
    """The bundled model in this process, its chat path guarded as the server's is (no cache)."""
    from llama_cpp import Llama

    gguf = bundled_gguf

    class Scoring(Llama):
        pass

    llama_server.guard_special_tokens(Scoring)
    return Scoring(str(gguf), n_ctx=1024, n_threads=1, n_threads_batch=1, verbose=False)


@pytest.mark.embedded
def test_a_score_sums_the_log_softmax_of_each_continuation_token_and_keeps_the_context_true(
    scoring, llama_server
):

    def chat(messages):
        reply = scoring.create_chat_completion(messages=messages, temperature=0, max_tokens=16)
        return reply["choices"][0]["message"]["content"]

    def score(messages, continuation):
        request = llama_server.ScoreRequest(messages=messages, continuation=continuation)
        return llama_server.score(scoring, request)

    reply = chat(GERMANY)
    chat(FRANCE)
    before = chat(GERMANY)  # evaluated from the user's turn on, as after a score
    scored = score(GERMANY, reply)
    assert score(FRANCE, reply).logprob < scored.logprob
    assert chat(GERMANY) == before  # the context was left holding the French prompt, truly

    prompt = llama_server.chat_prompt(scoring, GERMANY, None)
    continuation = scoring.tokenize(reply.encode(), False, False)
    assert scored.tokens == len(continuation) and scored.prompt_tokens == len(prompt)
    expected = reference(llama_server, GERMANY, reply)
    assert scored.logprob == pytest.approx(expected, abs=1e-3)
    assert score(GERMANY, "").logprob == 0.0
    assert score(GERMANY, reply).cached_tokens == len(prompt) - 1  # the prompt's last is redone


# --- guided sampling (`POST /v1/ideas/guided`) ----------------------------------------------


def guided(server, messages, against, model=None, **fields) -> dict:
    body = {"model": model or server.model, "messages": messages, "against": against}
    body |= {"max_tokens": 16, "temperature": 0, "repeat_penalty": 1.0, **fields}
    return post(f"{server.base_url}/ideas/guided", body)


def plain_greedy(server, messages, model=None, max_tokens=16) -> str:
    body = {"model": model or server.model, "messages": messages, "temperature": 0}
    body |= {"max_tokens": max_tokens, "repeat_penalty": 1.0}
    return post(f"{server.base_url}/chat/completions", body)["choices"][0]["message"]["content"]


@pytest.mark.embedded
def test_guided_sampling_against_the_same_chat_is_the_plain_reply_with_or_without_adapter(server):
    name = sorted(server.adapter_paths)[0]
    for model in (server.model, name, server.model):  # the contrast follows the adapter switch
        expected = plain_greedy(server, GERMANY, model)
        reply = guided(server, GERMANY, GERMANY, model, guidance=3.0)
        assert reply["text"].strip() == expected.strip()
        assert reply["tokens"] > 0 and reply["prompt_tokens"] > 0


@pytest.mark.embedded
def test_guidance_makes_the_reply_likelier_under_its_condition_than_under_the_contrast(server):
    asked = [SYSTEM, {"role": "user", "content": "Write one sentence about the sea."}]
    against = [SYSTEM, {"role": "user", "content": "Write one sentence."}]

    def ratio(text: str) -> float:
        """log p(text | asked) - log p(text | against), from the scoring endpoint."""
        scores = [
            post(f"{server.base_url}/ideas/score", {"messages": m, "continuation": text})
            for m in (asked, against)
        ]
        return scores[0]["logprob"] - scores[1]["logprob"]

    before = plain_greedy(server, GERMANY)
    plain = guided(server, asked, against, guidance=1.0, max_tokens=24)
    strong = guided(server, asked, against, guidance=4.0, max_tokens=24)
    assert plain["text"].strip() == plain_greedy(server, asked, max_tokens=24).strip()
    assert strong["text"] != plain["text"]
    assert ratio(strong["text"]) > ratio(plain["text"])
    assert plain_greedy(server, GERMANY) == before  # the context was left holding its tokens
    assert guided(server, asked, against, guidance=4.0, max_tokens=24) == strong
    too_long = [SYSTEM, {"role": "user", "content": "word " * 5000}]
    with pytest.raises(urllib.error.HTTPError, match="400"):
        guided(server, too_long, GERMANY)


@pytest.mark.embedded
def test_guidance_leaves_the_models_end_tokens_unboosted(llama_server, scoring):
    ends = llama_server.end_tokens(scoring)
    turn_end = scoring.tokenize(b"<|im_end|>", add_bos=False, special=True)
    assert scoring.token_eos() in ends and turn_end[0] in ends
    assert not ends & set(scoring.tokenize(b" the sea", add_bos=False, special=False))
    assert llama_server.end_tokens(scoring) is ends  # read once per model


@pytest.mark.embedded
def test_the_contrast_context_keeps_one_sequence_per_dialogue_in_flight(llama_server, scoring):
    contrast = llama_server.Contrast(scoring)
    system = scoring.tokenize(b"You are the user of a chat assistant.", add_bos=True)
    dialogues = [
        system + scoring.tokenize(f" {topic} is what dialogue {n} is about. ".encode() * 3, False)
        for n, topic in enumerate(["Sea", "Tax", "Chess", "Bread", "Volcanoes"])
    ]
    slots = contrast.SLOTS
    for prompt in dialogues[:slots]:
        _, kept = contrast.logits(prompt)
        assert kept <= len(system)  # a new dialogue shares the system prompt at most
    # each dialogue's next turn extends its own sequence, however they interleave
    for prompt in reversed(dialogues[:slots]):
        longer = prompt + scoring.tokenize(b" Next turn.", add_bos=False)
        row, kept = contrast.logits(longer)
        assert kept == len(prompt)
        reference, _ = llama_server._main_logits(scoring, longer)
        assert np.allclose(row, reference, atol=1e-3)
    # one more dialogue takes the least recently used sequence (the first one extended)
    contrast.logits(dialogues[slots])
    _, kept = contrast.logits(dialogues[slots - 1] + scoring.tokenize(b" Again.", add_bos=False))
    assert kept <= len(system)
    _, kept = contrast.logits(dialogues[0] + scoring.tokenize(b" Next turn.", add_bos=False))
    assert kept > len(dialogues[0])
