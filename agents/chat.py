"""The one door to chat models: plain and structured calls with retries, timing and token usage."""

from __future__ import annotations

import asyncio
import copy
import hashlib
import json
import logging
import time
import weakref
from collections.abc import Callable, Sequence
from contextlib import AbstractAsyncContextManager, nullcontext
from dataclasses import dataclass
from itertools import takewhile
from typing import Generic, TypeVar

import openai
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, BaseMessage, SystemMessage
from langchain_core.messages.utils import count_tokens_approximately
from pydantic import BaseModel, Field, ValidationError

from agents.prompt_logprobs import InvalidScore, ScoringUnsupported, score_with_prompt_logprobs
from dialogues.errors import ServiceError
from dialogues.messages import to_openai
from dialogues.models import Usage
from runtime.http_client import ReplyTooLarge, capped_async_client, capped_sync_client
from runtime.settings import GUIDED_SAMPLING, ModelSettings
from runtime.urls import redact_url

M = TypeVar("M", bound=BaseModel)

logger = logging.getLogger(__name__)

SCORE_PATH = "/ideas/score"
"""The scoring endpoint under a server's base URL (`runtime/llama_server.py` serves it)."""

GUIDE_PATH = "/ideas/guided"
"""The guided sampling endpoint under a server's base URL (`runtime/llama_server.py`)."""

INVALID_REPLY_ERRORS = (ValueError, TypeError, LookupError, AttributeError, RecursionError)
"""What langchain-openai raises on a 200 reply that is not a chat completion: no `choices`
(ValueError), `choices: []` (IndexError), `message: null` (AttributeError), a body nested too
deeply for the JSON parser (RecursionError), fields of the wrong type (TypeError, KeyError)."""


class ModelError(ServiceError, RuntimeError):
    """The model server failed in a way retries could not fix; one line for the user."""


@dataclass
class Structured(Generic[M]):
    """The outcome of a structured call: the parsed object, or None with the last error.

    `unusable` is True when no attempt got a usable reply at all (empty, or tool arguments that
    are not JSON): a broken server rather than a weak model, which callers may treat as failure.
    """

    value: M | None
    usage: Usage
    error: str | None = None
    unusable: bool = False


def request_seed(seed: int, messages: Sequence[BaseMessage], attempt: int) -> int:
    """Return the sampling seed of one request: a hash of the base seed, messages and attempt.

    Deriving it from the messages (not from a call counter) keeps it the same when a dialogue
    resumes from a checkpoint, and keeps concurrent dialogues from affecting each other's seeds.
    """
    payload = "\x1e".join(f"{m.type}\x1f{m.text}" for m in messages)
    digest = hashlib.blake2b(f"{seed}\x1d{attempt}\x1d{payload}".encode(), digest_size=4)
    return int.from_bytes(digest.digest(), "big") & 0x7FFFFFFF


def build_chat_model(settings: ModelSettings, base_url: str) -> BaseChatModel:
    """Create the ChatOpenAI client for one role.

    The token limit goes in `extra_body`: llama-cpp-python ignores `max_tokens` sent the way
    ChatOpenAI sends it for new models (`max_completion_tokens`). Each model gets its own HTTP
    clients: langchain-openai otherwise shares one per URL across the process, and its
    kept-alive connections break when a later event loop (a second run, a Ray task in a reused
    worker) uses them. They refuse a reply body over `settings.reply_limit()` bytes (counted
    after decompression, while it is read): a server that ignores the token limit, or a small
    gzip body that inflates to hundreds of MB, fails the call instead of filling memory.
    """
    from langchain_openai import ChatOpenAI

    return ChatOpenAI(
        base_url=base_url,
        api_key=settings.api_key,
        model=settings.model,
        temperature=settings.temperature,
        timeout=settings.timeout,
        max_retries=settings.max_retries,
        extra_body={"max_tokens": settings.max_tokens},
        frequency_penalty=settings.frequency_penalty,
        http_client=capped_sync_client(settings.reply_limit()),
        http_async_client=capped_async_client(settings.reply_limit()),
    )


def fit_history(messages: Sequence[BaseMessage], max_tokens: int) -> list[BaseMessage]:
    """Drop old history in chunks to fit `max_tokens`, never the system or the last message.

    The leading system messages (the role's instructions) and the last message (this turn's
    request) always stay. The history between loses its oldest messages at cut points fixed by
    the history itself, one after about every half budget of tokens counted from the dialogue's
    start: the cut moves only when the budget forces it, by a large chunk, so a request keeps
    beginning with the one before it (a prefix the server can reuse) for half a budget of new
    turns, instead of shifting every turn.
    """
    messages = list(messages)
    if len(messages) < 2:
        return messages
    head = list(takewhile(lambda m: isinstance(m, SystemMessage), messages[:-1]))
    history, last = messages[len(head) : -1], messages[-1:]
    sizes = [count_tokens_approximately([m]) for m in history]
    room = max_tokens - count_tokens_approximately(head + last)
    for cut in _cut_points(sizes, max(max_tokens // 2, 1)):
        if sum(sizes[cut:]) <= room:
            return head + history[cut:] + last
    return head + last


class ScoreReply(BaseModel):
    """What the scoring endpoint answers (`runtime.llama_server.ScoreResponse`)."""

    logprob: float = Field(allow_inf_nan=False)
    tokens: int = Field(ge=0)
    prompt_tokens: int = Field(default=0, ge=0)
    cached_tokens: int = Field(default=0, ge=0)


@dataclass
class Scored:
    """The log-probability of a reply, and what asking for it cost."""

    logprob: float
    usage: Usage


class GuidedReply(BaseModel):
    """What the guided sampling endpoint answers (`runtime.llama_server.GuideResponse`)."""

    text: str
    tokens: int = Field(ge=0)
    prompt_tokens: int = Field(default=0, ge=0)
    cached_tokens: int = Field(default=0, ge=0)


@dataclass
class _Guiding:
    """Whether the server samples with guidance; shared by a client and its `seeded` copies."""

    available: bool = True


@dataclass
class _Scoring:
    """Whether the server scores replies; shared by a client and its `seeded` copies."""

    available: bool = True
    route: str = "ideas"
    """`ideas` (the embedded server's endpoint) or `prompt_logprobs` (`agents.prompt_logprobs`)."""


class EndpointLimit:
    """At most `n` requests in flight to one endpoint (per event loop), shared by its clients."""

    def __init__(self, n: int) -> None:
        """Allow `n` concurrent requests."""
        self.n = n
        self._semaphores: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Semaphore]
        self._semaphores = weakref.WeakKeyDictionary()

    def slot(self) -> asyncio.Semaphore:
        """Return the semaphore of the running event loop (an `async with` holds one slot)."""
        loop = asyncio.get_running_loop()
        if loop not in self._semaphores:
            self._semaphores[loop] = asyncio.Semaphore(self.n)
        return self._semaphores[loop]


class ChatClient:
    """Calls one chat model for one role, keeping the history inside a token budget."""

    def __init__(
        self,
        model: BaseChatModel,
        *,
        structured_method: str = "function_calling",
        history_tokens: int = 2400,
        attempts: int = 3,
        limit: EndpointLimit | None = None,
        seed: int | None = None,
        timeout: float | None = None,
        timeout_retries: int | None = None,
    ) -> None:
        """Wrap `model`; `attempts` bounds retries of empty or unparseable output.

        `limit` bounds the requests in flight to the model's endpoint; time spent waiting for a
        slot is not counted in the call's seconds. With a `seed`, each request carries a sampling
        seed derived from it, the messages sent and the attempt (see `request_seed`), so a
        server that honours seeds samples the same reply for the same job and context, while a
        retry of the same messages still gets a fresh draw.

        `timeout` is a total deadline in seconds for each request, however slowly the server
        sends its reply (the HTTP client's own timeout only bounds the wait for each chunk); a
        request past it is tried again up to `timeout_retries` times. Both default to the
        model's own settings (`request_timeout`, `max_retries` of ChatOpenAI); no deadline when
        the model has none.
        """
        self.model = model
        self.limit = limit
        self.structured_method = structured_method
        self.history_tokens = history_tokens
        self.attempts = attempts
        self.seed = seed
        self.timeout = timeout if timeout is not None else _seconds(model, "request_timeout")
        if timeout_retries is None:
            timeout_retries = getattr(model, "max_retries", None)
        self.timeout_retries = timeout_retries if isinstance(timeout_retries, int) else 0
        self._scoring = _Scoring()
        self._guiding = _Guiding()

    def seeded(self, seed: int | None) -> ChatClient:
        """Return a client like this one whose requests derive their sampling seed from `seed`."""
        clone = copy.copy(self)
        clone.seed = seed
        return clone

    def fit(self, messages: Sequence[BaseMessage]) -> list[BaseMessage]:
        """Fit the messages to the token budget (see `fit_history`)."""
        return fit_history(messages, self.history_tokens)

    async def text(self, messages: Sequence[BaseMessage]) -> tuple[str, Usage]:
        """Return the model's reply text, retrying empty replies.

        Raises:
            ModelError: If every attempt got an empty reply (a broken server: nothing to use).
        """
        messages = self.fit(messages)
        usage = Usage()
        for attempt in range(self.attempts):
            reply, spent = await self._invoke(self._model(messages, attempt), messages)
            usage += spent
            content = reply.text.strip() if isinstance(reply, AIMessage) else ""
            if content:
                return content, usage
        raise ModelError(f"{self._server()} gave only empty replies ({self.attempts} attempts)")

    async def structured(self, schema: type[M], messages: Sequence[BaseMessage]) -> Structured[M]:
        """Return `schema` filled by the model, retrying output that does not validate."""
        messages = self.fit(messages)
        usage = Usage()
        error = None
        unusable = True
        for attempt in range(self.attempts):
            runnable = self._model(messages, attempt).with_structured_output(
                schema, method=self.structured_method, include_raw=True
            )
            result, spent = await self._invoke(runnable, messages)
            usage += spent
            parsed = result.get("parsed")
            if isinstance(parsed, schema):
                return Structured(parsed, usage)
            error = _describe_parse_error(result)
            unusable = unusable and not self._cut(spent) and _unusable(result.get("raw"))
        return Structured(None, usage, error, unusable)

    @property
    def can_score(self) -> bool:
        """Whether `score` may answer: False once the server showed it cannot score replies."""
        return self._scoring.available

    async def score(self, messages: Sequence[BaseMessage], continuation: str) -> Scored | None:
        """Return the log-probability of `continuation` as the model's reply to `messages`.

        The server renders `messages` with the model's chat template and sums the natural-log
        probabilities of the continuation's tokens (`POST {base_url}/ideas/score`, served by the
        embedded server, `runtime/llama_server.py`); the model name selects an adapter as a
        chat completion's does. A server without that endpoint (404 or 405) is asked for prompt
        log-probabilities instead, as vLLM returns them (`agents.prompt_logprobs`). `messages`
        are sent as given: fit them first (`fit`) to score a reply to what `text` sent. A server
        that can do neither, or a chat model that is no OpenAI client, gives None, with one
        notice, and is not asked again.

        Raises:
            ModelError: If the server fails otherwise, or answers something that is no score.
        """
        client = self._openai_client(self._unscored) if self._scoring.available else None
        if client is None:
            return None
        route = self._scoring.route
        slot: AbstractAsyncContextManager = self.limit.slot() if self.limit else nullcontext()
        async with slot:
            started = time.perf_counter()
            try:
                async with asyncio.timeout(self.timeout):
                    if route == "ideas":
                        reply = await self._score_endpoint(client, messages, continuation)
                    else:
                        reply = await self._score_prompt_logprobs(client, messages, continuation)
            except TimeoutError:
                raise ModelError(
                    f"{self._server()} did not score a reply within {self.timeout:g} s"
                ) from None
            except openai.APIStatusError as exc:
                if route == "ideas" and exc.status_code in (404, 405):
                    self._scoring.route = "prompt_logprobs"
                    reply = None
                elif route != "ideas" and exc.status_code in (400, 404, 405, 422):
                    return self._unscored(
                        f"{self._server()} serves neither {SCORE_PATH} nor prompt "
                        f"log-probabilities ({exc.status_code}: {_short(exc.message)})"
                    )
                else:
                    raise self._model_error(exc) from None
            except ScoringUnsupported as exc:
                return self._unscored(f"{self._server()} cannot score replies: {exc}")
            except (ReplyTooLarge, openai.OpenAIError) as exc:
                raise self._model_error(exc) from None
            seconds = time.perf_counter() - started
        if reply is None:  # no scoring endpoint: ask for prompt log-probabilities once
            return await self.score(messages, continuation)
        return Scored(
            reply.logprob,
            Usage(1, reply.prompt_tokens + reply.tokens, 0, seconds, reply.cached_tokens),
        )

    @property
    def can_guide(self) -> bool:
        """Whether `guided` may answer: False once the server showed it has no such endpoint."""
        return self._guiding.available

    async def guided(
        self,
        messages: Sequence[BaseMessage],
        against: Sequence[BaseMessage],
        guidance: float,
        *,
        unboosted: str = "",
        min_words: int = 0,
        whole: Sequence[str] = (),
    ) -> tuple[str, Usage] | None:
        """Sample a reply to `messages` with classifier-free guidance away from `against`.

        Each token is drawn from `log p(t | against) + guidance * (log p(t | messages) -
        log p(t | against))` among the tokens the model finds plausible after `messages`
        (`POST {base_url}/ideas/guided`, served by the embedded server); `against` is the same
        chat without the condition to strengthen. The words of `unboosted` (the condition's
        text) keep their plain log-probability, so the reply is not pushed to copy them. The
        reply does not end before it has `min_words` words, unless it is one of `whole`. The
        model's temperature, token limit and this client's seed apply as to `text`, with
        `GUIDED_SAMPLING`'s truncation, and an empty reply is drawn again as there. Both
        chats are sent as given: fit them first (`fit`), alike. A server without the endpoint
        (404 or 405), or a chat model that is no OpenAI client, gives None, with one notice,
        and is not asked again.

        Raises:
            ModelError: If the server fails otherwise, or every attempt got an empty reply.
        """
        client = self._openai_client(self._unguided) if self._guiding.available else None
        if client is None:
            return None
        usage = Usage()
        for attempt in range(self.attempts):
            body = {
                "model": model_name(self.model),
                "messages": to_openai(messages),
                "against": to_openai(against),
                "guidance": guidance,
                "unboosted": unboosted,
                **({"min_words": min_words, "whole": list(whole)} if min_words else {}),
                **GUIDED_SAMPLING,
                **self._sampling(messages, attempt),
            }
            slot: AbstractAsyncContextManager = self.limit.slot() if self.limit else nullcontext()
            async with slot:
                started = time.perf_counter()
                try:
                    async with asyncio.timeout(self.timeout):
                        raw = await client.post(GUIDE_PATH, cast_to=object, body=body)
                except TimeoutError:
                    raise ModelError(
                        f"{self._server()} did not finish a guided reply within {self.timeout:g} s"
                    ) from None
                except openai.APIStatusError as exc:
                    if exc.status_code in (404, 405):
                        return self._unguided(f"{self._server()} serves no {GUIDE_PATH}")
                    raise self._model_error(exc) from None
                except (ReplyTooLarge, openai.OpenAIError) as exc:
                    raise self._model_error(exc) from None
                seconds = time.perf_counter() - started
            try:
                reply = GuidedReply.model_validate(raw)
            except ValidationError as exc:
                raise ModelError(
                    f"model server sent an invalid guided reply: {_short(str(exc))}"
                ) from None
            usage += Usage(1, reply.prompt_tokens, reply.tokens, seconds, reply.cached_tokens)
            if reply.text.strip():
                return reply.text.strip(), usage
        raise ModelError(f"{self._server()} gave only empty replies ({self.attempts} attempts)")

    def _sampling(self, messages: Sequence[BaseMessage], attempt: int) -> dict[str, object]:
        """The model's sampling settings as a request's fields, with this request's seed."""
        fields: dict[str, object] = {}
        temperature = getattr(self.model, "temperature", None)
        if isinstance(temperature, int | float):
            fields["temperature"] = temperature
        if (limit := self._token_limit()) is not None:
            fields["max_tokens"] = limit
        if self.seed is not None:
            fields["seed"] = request_seed(self.seed, messages, attempt)
        return fields

    def _openai_client(self, give_up: Callable[[str], None]) -> openai.AsyncOpenAI | None:
        """The model's OpenAI client; None, after `give_up(why)`, for a model that has none."""
        client = getattr(self.model, "root_async_client", None)
        if isinstance(client, openai.AsyncOpenAI):
            return client
        give_up(f"{model_name(self.model)} is not an OpenAI-compatible client")
        return None

    def _unguided(self, why: str) -> None:
        """Stop asking for guided replies, saying why once."""
        self._guiding.available = False
        logger.warning("%s: drafts are sampled without guidance", why)

    async def _score_endpoint(
        self, client: openai.AsyncOpenAI, messages: Sequence[BaseMessage], continuation: str
    ) -> ScoreReply:
        """Ask the embedded server's scoring endpoint (`SCORE_PATH`)."""
        body = {
            "model": model_name(self.model),
            "messages": to_openai(messages),
            "continuation": continuation,
        }
        raw = await client.post(SCORE_PATH, cast_to=object, body=body)
        try:
            return ScoreReply.model_validate(raw)
        except ValidationError as exc:
            raise ModelError(f"model server sent an invalid score: {_short(str(exc))}") from None

    async def _score_prompt_logprobs(
        self, client: openai.AsyncOpenAI, messages: Sequence[BaseMessage], continuation: str
    ) -> ScoreReply:
        """Sum the reply's prompt log-probabilities (`agents.prompt_logprobs`, vLLM's API)."""

        async def post(url: str, body: dict) -> object:
            return await client.post(url, cast_to=object, body=body)

        try:
            logprob, prompt = await score_with_prompt_logprobs(
                post, str(client.base_url), model_name(self.model), to_openai(messages),
                continuation,
            )  # fmt: skip
        except InvalidScore as exc:
            raise ModelError(
                f"model server sent invalid prompt log-probabilities: {_short(str(exc))}"
            ) from None
        return ScoreReply(logprob=logprob, tokens=0, prompt_tokens=prompt)

    def _model_error(self, exc: ReplyTooLarge | openai.OpenAIError) -> ModelError:
        """The one-line error for a failed request to the model server."""
        if isinstance(exc, ReplyTooLarge):
            return ModelError(f"model server sent an invalid response: {exc}")
        if isinstance(exc, openai.APIConnectionError):
            return ModelError(f"{self._server()} did not answer: {exc.__cause__ or exc}")
        if isinstance(exc, openai.APIStatusError):
            return ModelError(f"model server error {exc.status_code}: {_short(exc.message)}")
        return ModelError(f"model call failed: {_short(str(exc))}")

    def _unscored(self, why: str) -> None:
        """Stop asking for scores, saying why once."""
        self._scoring.available = False
        logger.warning("%s: drafts are not reranked", why)

    def _model(self, messages: Sequence[BaseMessage], attempt: int) -> BaseChatModel:
        """Return the model to call: a copy carrying this request's seed when seeding applies.

        `messages` are the fitted ones, exactly what the request sends.
        """
        if self.seed is None or "seed" not in getattr(type(self.model), "model_fields", {}):
            return self.model
        seed = request_seed(self.seed, messages, attempt)
        return self.model.model_copy(update={"seed": seed})

    async def _invoke(self, runnable, messages: Sequence[BaseMessage]):
        slot: AbstractAsyncContextManager = self.limit.slot() if self.limit else nullcontext()
        async with slot:
            started = time.perf_counter()
            result = await self._call(runnable, messages)
            seconds = time.perf_counter() - started
        raw = result.get("raw") if isinstance(result, dict) else result
        meta = getattr(raw, "usage_metadata", None) or {}
        cached = (meta.get("input_token_details") or {}).get("cache_read") or 0
        usage = Usage(1, meta.get("input_tokens", 0), meta.get("output_tokens", 0), seconds, cached)
        return result, usage

    def _cut(self, usage: Usage) -> bool:
        """Whether a reply used its whole token budget: the model ran on, the server works."""
        limit = self._token_limit()
        return limit is not None and usage.output_tokens >= limit

    def _token_limit(self) -> int | None:
        """The model's reply token limit (in `extra_body` for the embedded server), if any."""
        model = self.model
        limit = getattr(model, "max_tokens", None) or (
            (getattr(model, "extra_body", None) or {}).get("max_tokens")
        )
        return limit if isinstance(limit, int) and limit > 0 else None

    def _server(self) -> str:
        """Name the model server in messages: `model server URL` when the URL is known."""
        url = getattr(self.model, "openai_api_base", None)
        return " ".join(filter(None, ["model server", url and redact_url(url)]))

    async def _call(self, runnable, messages: Sequence[BaseMessage]):
        """Run one request under the total deadline, trying again after a timed-out attempt."""
        tries = 1 + self.timeout_retries if self.timeout else 1
        for _ in range(tries):
            try:
                async with asyncio.timeout(self.timeout):
                    return await self._request(runnable, messages)
            except TimeoutError:
                continue
        raise ModelError(
            f"{self._server()} did not finish a reply within {self.timeout:g} s "
            f"({tries} attempt{'s' if tries > 1 else ''})"
        )

    async def _request(self, runnable, messages: Sequence[BaseMessage]):
        try:
            return await runnable.ainvoke(list(messages))
        except (ReplyTooLarge, openai.OpenAIError) as exc:
            raise self._model_error(exc) from None
        except INVALID_REPLY_ERRORS as exc:  # a reply that is not a chat completion
            raise ModelError(f"model server sent an invalid response: {_short(str(exc))}") from None


def _seconds(model: BaseChatModel, name: str) -> float | None:
    """Return the model's `name` setting when it is a plain number of seconds, else None."""
    value = getattr(model, name, None)
    return float(value) if isinstance(value, int | float) and value > 0 else None


def _unusable(raw: object) -> bool:
    """Whether a structured reply carries nothing usable: no message, no content, or bad JSON.

    Tool arguments that are not JSON land in `invalid_tool_calls`; text that is not JSON is
    only unusable when it is empty, or when it looks like an attempt at JSON (a weak model that
    answers in prose is a model problem, not a broken server). A reply cut by the token limit
    (`finish_reason` "length") is the model running on, not a broken server, whatever it holds.
    """
    if not isinstance(raw, AIMessage):
        return True
    if raw.tool_calls or raw.response_metadata.get("finish_reason") == "length":
        return False
    if raw.invalid_tool_calls:
        return True
    text = raw.text.strip()
    if not text:
        return True
    if text[0] in "{[":
        try:
            json.loads(text)
        except ValueError:
            return True
    return False


def _cut_points(sizes: Sequence[int], chunk: int) -> list[int]:
    """Return where history may be cut: 0, then the first message after every `chunk` tokens."""
    cuts, total = [0], 0
    for i, size in enumerate(sizes):
        total += size
        if total >= len(cuts) * chunk:
            cuts.append(i + 1)
    return cuts


def _describe_parse_error(result: dict) -> str:
    error = result.get("parsing_error")
    if error is not None:
        return _short(f"invalid output: {error}")
    raw = result.get("raw")
    if isinstance(raw, AIMessage) and raw.invalid_tool_calls and not raw.tool_calls:
        args = raw.invalid_tool_calls[0].get("args")
        return _short(f"tool call arguments are not JSON: {args!r}")
    if isinstance(raw, AIMessage) and not raw.tool_calls:
        return _short(f"no structured output, got text: {raw.text!r}")
    return "invalid output"


def _short(text: str, limit: int = 160) -> str:
    line = " ".join(str(text).split())
    return line if len(line) <= limit else line[: limit - 3] + "..."


def model_name(model: object) -> str:
    """Return a chat model's name as its server knows it (the class name for fakes)."""
    name = getattr(model, "model_name", None) or getattr(model, "model", None)
    return str(name) if isinstance(name, str) and name else type(model).__name__
