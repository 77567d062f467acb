"""llama-cpp-python's OpenAI server, reporting per request the prompt tokens it reused.

llama-cpp-python's server answers `usage.prompt_tokens` (the prompt sent) but not how much of it
was evaluated: with a prefix reused from the context or from its RAM cache (`--cache true`), most
of it is not. This entry point runs the same server with `Llama` instrumented to count the prompt
tokens each chat completion hands to the model for evaluation, and reports the rest as OpenAI's
`usage.prompt_tokens_details.cached_tokens`, the field vLLM, SGLang and llama-server fill in too,
so one reader on the client side serves every server.

It also serves LoRA adapters per request, without a second process or a model reload: each
`--adapter NAME=PATH` makes `NAME` a model a request can ask for; the base model answers every
other name. The adapter is switched on the one context between requests (the server answers one at
a time), and the prefix cache keeps each adapter's states apart, since a state computed with one
adapter is wrong for another.

Message text is data: the chat path renders the chat template and tokenizes the whole prompt with
`special=True`, so a seed holding `<|im_end|>` or `<|im_start|>` would close its own turn and
forge others. Before rendering, each of the model's control-token strings in a message's text
gets a WORD JOINER (U+2060) after its first character (`SpecialTokens`), so it stays text; only
the template's own markers become control tokens.

It also scores a reply: `POST /v1/ideas/score` with `{"model", "messages", "continuation"}`
answers `{"logprob", "tokens"}`, the summed natural-log probability of `continuation`'s tokens as
the assistant's reply after `messages` (`serve_scores`). The prompt is rendered by the chat path
itself (template, generation prompt, control-token escaping, the adapter `model` names), and only
the tokens after the prefix already in the context are evaluated.

It is started as a script (`python runtime/llama_server.py --model ... [--adapter NAME=PATH]...`,
otherwise the arguments of `python -m llama_cpp.server`) and imports nothing from this project.
"""

from __future__ import annotations

import argparse
import ctypes
import inspect
import re
import runpy
import sys
from collections.abc import Callable, Iterator, Sequence
from functools import wraps
from typing import Any, Literal, NotRequired

import llama_cpp
import llama_cpp._internals
import llama_cpp.llama_types
import numpy as np
from llama_cpp import Llama, LlamaRAMCache
from llama_cpp.llama import LlamaState
from pydantic import BaseModel, Field

M_MMAP_THRESHOLD = -3
"""glibc's `mallopt` parameter number of the size from which blocks get their own mapping."""


def instrument(cls: type[Llama] = Llama) -> None:
    """Make `cls.create_chat_completion` report the prompt tokens it did not evaluate.

    `Llama.generate` first evaluates the prompt tokens that follow the longest prefix already in
    the context (after `_create_completion` restored the best cached state), then one token per
    sampled token. The first `eval` of each `generate` is therefore the prompt work; an exact
    cache hit evaluates nothing or replays one token.

    Also keeps `save_state` and `load_state` off the `n_batch` x vocabulary logits array (~100 MB
    for SmolLM2 at `n_batch` 512), which every cached state would otherwise copy and which no one
    reads without `logits_all`: sampling reads llama.cpp's own logits, and a restored state
    always re-evaluates at least one token. A saved state holds one zero row instead, and its
    model state is copied once, straight into the buffer the cache keeps (llama-cpp-python's own
    `save_state` makes three copies of it, tens of MB each, which raise the server's peak RSS).
    """
    generate, evaluate, chat = cls.generate, cls.eval, cls.create_chat_completion
    load, save = cls.load_state, cls.save_state

    @wraps(generate)
    def counting_generate(self: Llama, *args: Any, **kwargs: Any) -> Iterator[int]:
        self._prompt_pending = True
        return (yield from generate(self, *args, **kwargs))

    @wraps(evaluate)
    def counting_eval(self: Llama, tokens: Any) -> None:
        if getattr(self, "_prompt_pending", False):
            self._prompt_pending = False
            self._prompt_evaluated = getattr(self, "_prompt_evaluated", 0) + len(tokens)
        return evaluate(self, tokens)

    @wraps(chat)
    def reporting_chat(self: Llama, *args: Any, **kwargs: Any) -> Any:
        self._prompt_evaluated = 0
        result = chat(self, *args, **kwargs)
        usage = result.get("usage") if isinstance(result, dict) else None  # not when streaming
        if usage:
            cached = max(usage["prompt_tokens"] - self._prompt_evaluated, 0)
            usage["prompt_tokens_details"] = {"cached_tokens": cached}
        return result

    def without_logits(method: Any) -> Any:
        @wraps(method)
        def wrapper(self: Llama, *args: Any) -> Any:
            if self._logits_all:
                return method(self, *args)
            scores, self.scores = self.scores, np.zeros((1, self._n_vocab), dtype=np.single)
            try:
                return method(self, *args)
            finally:
                self.scores = scores

        return wrapper

    cls.generate, cls.eval, cls.create_chat_completion = (
        counting_generate,
        counting_eval,
        reporting_chat,
    )

    @wraps(save)
    def lean_save(self: Llama) -> LlamaState:
        if self._logits_all:
            return save(self)
        size = llama_cpp.llama_state_get_size(self._ctx.ctx)
        data = (ctypes.c_uint8 * size)()
        written = llama_cpp.llama_state_get_data(self._ctx.ctx, data, size)
        if written != size:
            raise RuntimeError(f"llama.cpp wrote {written} bytes of a {size}-byte state")
        return LlamaState(
            input_ids=self.input_ids.copy(),
            scores=np.zeros((1, self._n_vocab), dtype=np.single),
            n_tokens=self.n_tokens,
            llama_state=data,  # a buffer; load_state copies it with from_buffer_copy
            llama_state_size=size,
            seed=self._seed,
        )

    cls.save_state, cls.load_state = lean_save, without_logits(load)
    _declare_usage_details()


WORD_JOINER = "\u2060"
"""Put after the first character of a control-token string in message text: no token then."""


class SpecialTokens:
    """The model's control-token strings, and message text kept from forming them.

    They are the vocabulary texts of the tokens marked control or unknown: what llama.cpp's
    tokenizer turns into those tokens with `special=True` and leaves as text without it. A string
    of one character (no room for a mark) is left alone; no known chat template has one.
    """

    def __init__(self, llama: Llama) -> None:
        """Read the control-token strings of `llama`'s vocabulary (~50 ms for 49k tokens)."""
        model, wanted = llama._model, llama_cpp.LLAMA_TOKEN_ATTR_CONTROL
        wanted |= llama_cpp.LLAMA_TOKEN_ATTR_UNKNOWN
        texts = {
            model.token_get_text(token)
            for token in range(llama.n_vocab())
            if model.token_get_attr(token) & wanted
        }
        texts = sorted((t for t in texts if len(t) > 1 and WORD_JOINER not in t), key=len)
        alternatives = "|".join(re.escape(text) for text in reversed(texts))
        self.pattern = re.compile(alternatives) if texts else None

    def escape(self, text: str) -> str:
        """Return `text` with a WORD JOINER inside every control-token string it holds.

        Overlapping strings are broken one pass at a time; a mark never forms a new one.
        """
        if self.pattern is None:
            return text
        count = 1
        while count:
            text, count = self.pattern.subn(lambda m: m[0][0] + WORD_JOINER + m[0][1:], text)
        return text

    def message(self, message: Any) -> Any:
        """Return a copy of a chat message with its text, name and call arguments escaped."""
        if not isinstance(message, dict):
            return message
        message = dict(message)
        content = message.get("content")
        if isinstance(content, str):
            message["content"] = self.escape(content)
        elif isinstance(content, list):
            message["content"] = [self._part(part) for part in content]
        if isinstance(message.get("name"), str):
            message["name"] = self.escape(message["name"])
        if isinstance(message.get("tool_calls"), list):
            message["tool_calls"] = [self._call(call) for call in message["tool_calls"]]
        if isinstance(message.get("function_call"), dict):
            message["function_call"] = self._arguments(message["function_call"])
        return message

    def _part(self, part: Any) -> Any:
        if isinstance(part, dict) and isinstance(part.get("text"), str):
            return {**part, "text": self.escape(part["text"])}
        return part

    def _call(self, call: Any) -> Any:
        if isinstance(call, dict) and isinstance(call.get("function"), dict):
            return {**call, "function": self._arguments(call["function"])}
        return call

    def _arguments(self, function: dict[str, Any]) -> dict[str, Any]:
        if isinstance(function.get("arguments"), str):
            return {**function, "arguments": self.escape(function["arguments"])}
        return function


def guard_special_tokens(cls: type[Llama] = Llama) -> None:
    """Make `cls.create_chat_completion` escape control-token strings in every message.

    Every role and every client is covered: the messages are escaped where the server gets
    them, before the chat template renders them. The request's own messages are not changed.
    """
    chat = cls.create_chat_completion

    @wraps(chat)
    def guarded_chat(self: Llama, *args: Any, **kwargs: Any) -> Any:
        special = self.__dict__.get("_special_tokens")
        if special is None:
            special = self._special_tokens = SpecialTokens(self)
        if args:
            args = ([special.message(m) for m in args[0]], *args[1:])
        elif "messages" in kwargs:
            kwargs["messages"] = [special.message(m) for m in kwargs["messages"]]
        return chat(self, *args, **kwargs)

    cls.create_chat_completion = guarded_chat


def _declare_usage_details() -> None:
    """Let the server's response model keep `prompt_tokens_details` instead of dropping it.

    FastAPI serialises the response through the `CompletionUsage` TypedDict, which ignores keys it
    does not declare; this must run before `llama_cpp.server.app` builds its routes.
    """
    usage = llama_cpp.llama_types.CompletionUsage
    usage.__annotations__["prompt_tokens_details"] = NotRequired[dict[str, int]]
    usage.__optional_keys__ = usage.__optional_keys__ | {"prompt_tokens_details"}


class PrefixCache(LlamaRAMCache):
    """The server's RAM cache of model states, dropping each state once a newer one supersedes it.

    A new state supersedes an older one when it repeats at least half of the older one's tokens:
    the rest of the older one is a turn-specific tail (a strategy, candidates, a draft) or an
    earlier reply that no later request repeats. Dropping it at once, rather than by age, leaves
    the byte budget to the states that later requests can extend.
    """

    def __setitem__(self, key: Any, value: LlamaState) -> None:
        """Store `value` under `key`, dropping the states it supersedes."""
        key = tuple(key)
        for old in list(self.cache_state):
            if 2 * Llama.longest_token_prefix(old, key) >= len(old):
                del self.cache_state[old]
        super().__setitem__(key, value)


def return_freed_memory() -> None:
    """Have glibc map large blocks on their own, so freed cache states go back to the system.

    Saving and restoring a state makes several transient copies of it (tens of MB each); by
    default glibc raises its mmap threshold after the first one is freed and keeps later ones in
    the heaps of the server's worker threads, where the resident size only grows.
    """
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:  # not glibc
        return
    libc.mallopt(M_MMAP_THRESHOLD, 1 << 20)


class AdapterCache:
    """One adapter's share of the server's prefix cache: its keys carry the adapter's mark.

    Token ids are never negative, so a key that starts with a negative mark shares no prefix with
    the base model's keys or another adapter's, and the byte budget stays one for all.
    """

    def __init__(self, cache: LlamaRAMCache, mark: int) -> None:
        """Keep the states of adapter number `mark` (a negative int) in `cache`."""
        self.cache, self.mark = cache, mark

    def _key(self, key: Sequence[int]) -> tuple[int, ...]:
        return (self.mark, *key)

    def __getitem__(self, key: Sequence[int]) -> LlamaState:
        """Return the state with the longest prefix of `key` among this adapter's."""
        return self.cache[self._key(key)]

    def __contains__(self, key: Sequence[int]) -> bool:
        """Whether this adapter has a state sharing a prefix with `key`."""
        found = self.cache._find_longest_prefix_key(self._key(key))
        return found is not None and len(found) > 1 and found[0] == self.mark

    def __setitem__(self, key: Sequence[int], value: LlamaState) -> None:
        """Store a state of this adapter."""
        self.cache[self._key(key)] = value


def set_adapter(ctx: Any, adapter: Any) -> bool:
    """Make llama.cpp context `ctx` answer with LoRA `adapter` at scale 1 (None: the base model).

    Returns whether llama.cpp switched it.
    """
    if adapter is None:
        return llama_cpp.llama_set_adapters_lora(ctx, None, 0, None) == 0
    adapters = (llama_cpp.llama_adapter_lora_p_ctypes * 1)(adapter)
    scales = (ctypes.c_float * 1)(1.0)
    return llama_cpp.llama_set_adapters_lora(ctx, adapters, 1, scales) == 0


class Adapters:
    """LoRA adapters loaded once and switched per request by the request's `model` name."""

    def __init__(self, paths: dict[str, str]) -> None:
        """Serve each adapter file of `paths` under its name (`serve_adapters` loads them)."""
        self.paths = paths
        self.loaded: dict[str, Any] = {}
        self.current: str | None = None
        self.base_cache: Any = None

    def select(self, llama: Llama, model: str | None) -> None:
        """Make `llama` answer as `model`: its adapter if it names one, else the base model.

        Switching drops the context's tokens (they were evaluated with the other weights) and
        points the prefix cache at the new adapter's share.
        """
        name = model if model in self.paths else None
        if name == self.current:
            return
        if self.current is None:
            self.base_cache = llama.cache
        if name is None:
            ok = set_adapter(llama._ctx.ctx, None)
            llama.cache = self.base_cache
        else:
            ok = set_adapter(llama._ctx.ctx, self.load(llama, name))
            mark = -1 - sorted(self.paths).index(name)
            llama.cache = AdapterCache(self.base_cache, mark) if self.base_cache else None
        if not ok:
            raise RuntimeError(f"llama.cpp could not switch to adapter {name or 'none'}")
        llama.reset()
        self.current = name

    def load(self, llama: Llama, name: str) -> Any:
        """Return adapter `name` loaded for `llama`'s model (loaded once).

        Raises:
            RuntimeError: If llama.cpp cannot load the file.
        """
        if name not in self.loaded:
            adapter = llama_cpp.llama_adapter_lora_init(
                llama._model.model, self.paths[name].encode("utf-8")
            )
            if not adapter:  # a NULL pointer: ctypes gives a false pointer object, not None
                raise RuntimeError(f"llama.cpp could not load LoRA adapter {self.paths[name]}")
            llama._stack.callback(llama_cpp.llama_adapter_lora_free, adapter)
            self.loaded[name] = adapter
        return self.loaded[name]


def serve_adapters(adapters: Adapters, cls: type[Llama] = Llama) -> None:
    """Make `cls.create_chat_completion` answer with the adapter its `model` argument names.

    Every adapter is loaded with the model, so one that llama.cpp cannot load ends the server
    on start with a line naming it (the last line of its log) instead of failing a request.
    """
    chat, init = cls.create_chat_completion, cls.__init__

    @wraps(init)
    def loading_init(self: Llama, *args: Any, **kwargs: Any) -> None:
        init(self, *args, **kwargs)
        for name in adapters.paths:
            adapters.load(self, name)

    @wraps(chat)
    def adapted_chat(self: Llama, *args: Any, **kwargs: Any) -> Any:
        adapters.select(self, kwargs.get("model"))
        return chat(self, *args, **kwargs)

    cls.create_chat_completion, cls.__init__ = adapted_chat, loading_init


def take_adapters(argv: list[str]) -> dict[str, str]:
    """Remove every `--adapter NAME=PATH` from `argv` and return them by name.

    The other arguments, the server's own, stay in `argv` in their order. A bad `--adapter` value
    ends the process with argparse's usage line and "--adapter takes NAME=PATH" (exit status 2).
    """
    parser = argparse.ArgumentParser(add_help=False, allow_abbrev=False)  # -h is the server's
    parser.add_argument(
        "--adapter", action="append", type=_named_path, default=[], metavar="NAME=PATH"
    )
    known, rest = parser.parse_known_args(argv[1:])
    argv[1:] = rest
    return dict(known.adapter)


def _named_path(value: str) -> tuple[str, str]:
    name, _, path = value.partition("=")
    if not name or not path:
        raise argparse.ArgumentTypeError("--adapter takes NAME=PATH")
    return name, path


class ScoreRequest(BaseModel):
    """A reply to score: `continuation` as the assistant's answer after `messages`."""

    model: str | None = None
    """The model name, selecting an adapter as a chat completion's does."""
    messages: list[llama_cpp.llama_types.ChatCompletionRequestMessage]
    continuation: str


class ScoreResponse(BaseModel):
    """The summed natural-log probability of the continuation's tokens, and their number."""

    logprob: float
    tokens: int
    prompt_tokens: int = 0
    """The tokens of the rendered prompt before the continuation."""
    cached_tokens: int = 0
    """The tokens of prompt and continuation taken from the context, not evaluated."""


class ScoreError(ValueError):
    """A score request that cannot be answered: the client's mistake (HTTP 400)."""


class _Prompt(Exception):
    """Carries the prompt's tokens out of the chat path, where it would start the completion."""

    def __init__(self, tokens: list[int]) -> None:
        super().__init__("prompt rendered")
        self.tokens = tokens


def chat_prompt(llama: Llama, messages: list[Any], model: str | None) -> list[int]:
    """Return the prompt tokens a chat completion of `messages` would evaluate.

    It runs `llama.create_chat_completion` itself, with every patch of this module on it
    (escaping, the adapter `model` names), and stops it where the chat handler hands the
    rendered, tokenized prompt to `create_completion`: nothing is evaluated.
    """

    def capture(*args: Any, **kwargs: Any) -> Any:
        raise _Prompt(list(kwargs["prompt"] if "prompt" in kwargs else args[0]))

    llama.create_completion = capture  # type: ignore[method-assign]  # this instance, this call
    try:
        llama.create_chat_completion(messages=messages, model=model, max_tokens=1)
    except _Prompt as caught:
        if not caught.tokens or not all(isinstance(token, int) for token in caught.tokens):
            raise ScoreError("the chat format did not render a prompt of tokens") from None
        return caught.tokens
    finally:
        del llama.create_completion
    raise ScoreError("the chat format did not ask for a completion")


def _log_softmax_at(row: np.ndarray, token: int) -> float:
    top = float(row.max())
    return float(row[token]) - top - float(np.log(np.exp(row - top).sum()))


def _restore_prefix(llama: Llama, prompt: list[int]) -> None:
    """Load the cached state sharing the longest prefix with `prompt`, if it beats the context's."""
    if not llama.cache:
        return
    try:
        state = llama.cache[prompt]
    except KeyError:
        return
    cached = Llama.longest_token_prefix(state.input_ids.tolist(), prompt)
    if cached > Llama.longest_token_prefix(llama._input_ids.tolist(), prompt):
        llama.load_state(state)


def score_tokens(llama: Llama, prompt: list[int], continuation: list[int]) -> tuple[float, int]:
    """Return the summed log-probability of `continuation` after `prompt`, and the tokens kept.

    The context keeps its longest prefix of `prompt` (those are the tokens kept, not evaluated;
    it takes a longer one from the prefix cache, as a completion would), evaluates the rest up
    to the continuation's last token (whose logits no one reads), and asks llama.cpp for logits
    only at the positions that predict a continuation token. Afterwards the context holds
    exactly the tokens evaluated (`input_ids`, `n_tokens` and the KV cache agree), so a later
    completion reuses what it can and stays correct.
    """
    if not continuation:
        return 0.0, 0
    tokens = prompt + continuation
    if len(tokens) > llama.n_ctx():
        raise ScoreError(
            f"prompt and continuation take {len(tokens)} tokens, over the context's {llama.n_ctx()}"
        )
    _restore_prefix(llama, prompt)
    keep = min(Llama.longest_token_prefix(llama._input_ids.tolist(), tokens), len(prompt) - 1)
    first, end = len(prompt) - 1, len(tokens) - 1  # the positions whose logits are read
    total, vocab = 0.0, llama.n_vocab()
    try:
        llama._ctx.kv_cache_seq_rm(-1, keep, -1)
        llama.n_tokens = keep
        for start in range(keep, end, llama.n_batch):
            batch = tokens[start : min(end, start + llama.n_batch)]
            llama._batch.set_batch(batch=batch, n_past=start, logits_all=False)
            for i in range(len(batch)):
                llama._batch.batch.logits[i] = start + i >= first or i == len(batch) - 1
            llama._ctx.decode(llama._batch)
            llama.input_ids[start : start + len(batch)] = batch
            llama.n_tokens = start + len(batch)
            for i in range(max(first - start, 0), len(batch)):
                pointer = llama._ctx.get_logits_ith(i)
                row = np.ctypeslib.as_array(pointer, shape=(vocab,))
                total += _log_softmax_at(row, tokens[start + i + 1])
    except BaseException:
        llama.reset()  # the next evaluation clears the KV cache from position 0
        raise
    finally:
        llama._requires_eval = True  # a completion of exactly these tokens replays one
    return total, keep


def score(llama: Llama, request: ScoreRequest) -> ScoreResponse:
    """Score `request.continuation` as the reply to `request.messages` (see `ScoreRequest`)."""
    prompt = chat_prompt(llama, list(request.messages), request.model)
    continuation = llama.tokenize(request.continuation.encode("utf-8"), False, False)
    logprob, kept = score_tokens(llama, prompt, continuation)
    return ScoreResponse(
        logprob=logprob, tokens=len(continuation), prompt_tokens=len(prompt), cached_tokens=kept
    )


def serve_route(
    path: str,
    answer: Callable[[Llama, Any], BaseModel],
    request: type[BaseModel],
    response: type[BaseModel],
    summary: str,
) -> None:
    """Add `POST /v1/ideas/{path}` to the routes llama-cpp-python's server app is built with.

    The route answers `answer(llama, body)` for a `request` body, in the server's thread pool,
    and a `ScoreError` as HTTP 400. It must be added before the server creates its app. The
    request waits for the model as a chat completion does (the server answers one request at a
    time), with the adapter its `model` names, and checks the API key too.
    """
    from fastapi import Depends, HTTPException
    from llama_cpp.server import app as server_app
    from starlette.concurrency import run_in_threadpool

    proxy = Depends(server_app.get_llama_proxy)

    async def route(body: Any, llama_proxy: Any = proxy) -> Any:
        llama = llama_proxy(body.model)
        try:
            return await run_in_threadpool(answer, llama, body)
        except ScoreError as exc:
            raise HTTPException(status_code=400, detail=str(exc)) from None

    parameters = inspect.signature(route).parameters
    route.__signature__ = inspect.Signature(  # type: ignore[attr-defined]  # FastAPI reads it
        [parameters["body"].replace(annotation=request), parameters["llama_proxy"]]
    )
    server_app.router.add_api_route(
        f"/v1/ideas/{path}",
        route,
        methods=["POST"],
        response_model=response,
        dependencies=[Depends(server_app.authenticate)],
        summary=summary,
    )


def serve_scores() -> None:
    """Add `POST /v1/ideas/score` (`score`) to the server's routes (`serve_route`)."""
    serve_route("score", score, ScoreRequest, ScoreResponse, "Score a reply")


class GuideRequest(BaseModel):
    """A reply to sample with guidance: `messages` contrasted with `against` (see `guide`)."""

    model: str | None = None
    """The model name, selecting an adapter as a chat completion's does."""
    messages: list[llama_cpp.llama_types.ChatCompletionRequestMessage]
    """The conditioned prompt: the chat whose reply is sampled."""
    against: list[llama_cpp.llama_types.ChatCompletionRequestMessage]
    """The same chat without the condition (the contrast)."""
    guidance: float = Field(default=1.5, ge=0.0, le=10.0)
    """The weight gamma of the condition: 1 samples from `messages` alone, 0 from `against`."""
    max_tokens: int = Field(default=96, ge=1, le=4096)
    temperature: float = Field(default=0.8, ge=0.0, le=2.0)
    top_k: int = Field(default=40, ge=0)
    top_p: float = Field(default=1.0, gt=0.0, le=1.0)
    min_p: float = Field(default=0.02, ge=0.0, le=1.0)
    repeat_penalty: float = Field(default=1.0, ge=1.0, le=2.0)
    """The plausible set (top-k, min-p) is the only truncation by default: top-p and the repeat
    penalty, a completion's defaults, each cut the distribution's tail that guidance already
    sharpens; without them the turns' vocabulary came nearer real users' (docs/results/guidance/,
    section 3)."""
    end: Literal["sampled", "model"] = "sampled"
    """Who decides where the reply ends. "sampled": an end-of-generation token is drawn like any
    other, after truncation (top-k, min-p) and temperature, which cut the continuations' long
    tail but rarely the end token, so its share grows and replies come out shorter than the
    model's own. "model": first the reply ends with the conditioned model's own probability of
    an end token (untruncated, temperature 1, as it was trained), then the next token is drawn
    among the continuations as above (see `guided_choice`)."""
    min_words: int = Field(default=0, ge=0, le=1024)
    """The reply does not end before it has this many (whitespace-separated) words: until then
    the end-of-generation tokens are left out of every draw, so the reply goes on; one that
    reaches one of `whole`, or starts to loop, stops sooner (`Hold`)."""
    whole: list[str] = Field(default_factory=list, max_length=16)
    """Text that completes a reply at any length (a simulator's end marker): held open by
    `min_words`, a reply stops where it has written one."""
    seed: int | None = None
    unboosted: str = ""
    """Text whose words guidance leaves at their conditioned log-probability (the condition
    itself: guidance strengthens what it asks for, not a copy of its words)."""


class GuideResponse(BaseModel):
    """The sampled reply, and what sampling it evaluated."""

    text: str
    tokens: int
    """The reply's tokens."""
    finish_reason: Literal["stop", "length"]
    prompt_tokens: int
    """The tokens of both rendered prompts (the conditioned one alone at weight 1)."""
    cached_tokens: int
    """The prompt tokens taken from the contexts, not evaluated."""


REPEAT_WINDOW = 64
"""The repeat penalty looks at this many of the reply's last tokens (llama.cpp's default)."""


def _log_softmax(row: np.ndarray) -> np.ndarray:
    shifted = row - row.max()
    return shifted - np.log(np.exp(shifted).sum())


def _penalised(logits: np.ndarray, recent: Sequence[int], penalty: float) -> np.ndarray:
    """llama.cpp's repeat penalty: each recent token's logit shrinks towards less likely."""
    if penalty == 1.0 or not recent:
        return logits
    logits = logits.copy()
    seen = np.unique(np.asarray(recent, dtype=np.int64))
    values = logits[seen]
    logits[seen] = np.where(values > 0, values / penalty, values * penalty)
    return logits


def word_tokens(llama: Llama, text: str) -> frozenset[int]:
    """Return the tokens of `text`'s words, spelled as a reply may write them.

    Each word alone or after a space; as written, lower-case or capitalised.
    """
    tokens: set[int] = set()
    for word in set(re.findall(r"[^\W\d_]+", text)):
        for form in {word, word.lower(), word.capitalize()}:
            for spelled in (form, " " + form):
                tokens.update(llama.tokenize(spelled.encode("utf-8"), False, False))
    return frozenset(tokens)


def end_tokens(llama: Llama) -> frozenset[int]:
    """Return the model's end-of-generation tokens (read once per model, ~20 ms for 49k)."""
    if getattr(llama, "_end_tokens", None) is None:
        vocab = llama._model.vocab
        ends = (t for t in range(llama.n_vocab()) if llama_cpp.llama_vocab_is_eog(vocab, t))
        llama._end_tokens = frozenset(ends)
    return llama._end_tokens


def guided_choice(
    conditioned: np.ndarray,
    contrast: np.ndarray,
    recent: Sequence[int],
    request: GuideRequest,
    rng: np.random.Generator,
    unboosted: frozenset[int] = frozenset(),
    ends: frozenset[int] = frozenset(),
    may_end: bool = True,
) -> int:
    """Sample the next token with classifier-free guidance (Sanchez et al., 2023).

    The plausible tokens are the conditioned model's own: its top-k, and those at least `min_p`
    times as likely as its likeliest. Among them each token scores
    `log p(t | against) + gamma * (log p(t | messages) - log p(t | against))`, so a token the
    condition makes likelier than the contrast gains with gamma > 1, and one it makes less likely
    loses; an `unboosted` token (a word of the condition, or an end-of-generation token) keeps its
    `log p(t | messages)`, so guidance neither turns the reply into a copy of the condition nor
    decides where it ends. The scores are then sampled as a completion's are: temperature, then
    top-p (temperature 0: the top score).

    With `request.end` "model", the `ends` (end-of-generation tokens) are decided first: the
    reply ends with their total conditioned probability, untruncated and untempered (at
    temperature 0: when it is at least one half), returning the likeliest of them; otherwise
    the token is drawn as above among the other tokens.

    Unless `may_end` (the reply is shorter than `request.min_words`), the `ends` are left out
    before anything else: the token is drawn among the continuations as if they were all.
    """
    lp_on = _log_softmax(_penalised(conditioned, recent, request.repeat_penalty))
    lp_off = _log_softmax(_penalised(contrast, recent, request.repeat_penalty))
    order = np.argsort(-lp_on, kind="stable")
    if not may_end and ends:
        order = order[~np.isin(order, np.fromiter(ends, dtype=np.int64, count=len(ends)))]
    elif request.end == "model" and ends:
        end_ids = np.fromiter(ends, dtype=np.int64, count=len(ends))
        p_end = float(np.exp(lp_on[end_ids]).sum())
        continues = order[~np.isin(order, end_ids)]
        if not len(continues) or (
            p_end >= 0.5 if request.temperature == 0 else rng.random() < p_end
        ):
            return int(end_ids[np.argmax(lp_on[end_ids])])
        order = continues
    if request.top_k > 0:
        order = order[: request.top_k]
    order = order[lp_on[order] >= lp_on[order[0]] + np.log(max(request.min_p, 1e-30))]
    scores = lp_off[order] + request.guidance * (lp_on[order] - lp_off[order])
    if unboosted:
        kept = np.fromiter((int(t) in unboosted for t in order), dtype=bool, count=len(order))
        scores = np.where(kept, lp_on[order], scores)
    if request.temperature == 0:
        return int(order[int(np.argmax(scores))])
    ranked = np.argsort(-scores, kind="stable")
    order, probabilities = order[ranked], np.exp(_log_softmax(scores[ranked] / request.temperature))
    # top-p 1 keeps every token (the cumulative sum may fall a rounding error short of 1)
    keep = min(int(np.searchsorted(np.cumsum(probabilities), request.top_p)) + 1, len(order))
    probabilities = probabilities[:keep] / probabilities[:keep].sum()
    return int(order[rng.choice(keep, p=probabilities)])


def _decode(
    ctx: Any, batch: Any, n_batch: int, tokens: list[int], start: int, seq: int = 0
) -> np.ndarray:
    """Evaluate `tokens[start:]` after the first `start` in `ctx`; return the last's logits.

    The tokens belong to sequence `seq` (the main context has only 0; the contrast one a slot).
    """
    ctx.kv_cache_seq_rm(seq, start, -1)
    for first in range(start, len(tokens), n_batch):
        chunk = tokens[first : first + n_batch]
        fill = batch.batch
        fill.n_tokens = len(chunk)
        for i, token in enumerate(chunk):
            fill.token[i], fill.pos[i], fill.n_seq_id[i] = token, first + i, 1
            fill.seq_id[i][0], fill.logits[i] = seq, False
        fill.logits[len(chunk) - 1] = True
        ctx.decode(batch)
    pointer = ctx.get_logits_ith(len(chunk) - 1)
    return np.ctypeslib.as_array(pointer, shape=(ctx.model.n_vocab(),)).copy()


class Contrast:
    """A second context on the model, evaluating contrast prompts beside the main one.

    It shares the model's weights and its adapters; only its KV cache is its own. That cache holds
    `SLOTS` sequences, each as long as the main context, so dialogues drafted in turn (a batch's
    concurrency) each keep their own contrast: a contrast prompt extends the sequence it
    continues (`slot_for`) and evaluates only what follows their common prefix.
    """

    SLOTS = 4
    """Sequences kept: a batch's default concurrency (each costs a main context's KV cache)."""

    def __init__(self, llama: Llama) -> None:
        """Open a context like `llama`'s on the same model, with room for `SLOTS` sequences."""
        params = llama_cpp.llama_context_params.from_buffer_copy(llama.context_params)
        params.n_ctx, params.n_seq_max = llama.n_ctx() * self.SLOTS, self.SLOTS
        params.kv_unified = False  # each sequence gets n_ctx / n_seq_max cells of its own
        self.ctx = llama_cpp._internals.LlamaContext(
            model=llama._model, params=params, verbose=llama.verbose
        )
        self.batch = llama_cpp._internals.LlamaBatch(
            n_tokens=llama.n_batch, embd=0, n_seq_max=1, verbose=llama.verbose
        )
        self.n_batch = llama.n_batch
        self.slots: list[list[int]] = [[] for _ in range(self.SLOTS)]
        self.used = list(range(self.SLOTS))
        """Slot indices, the least recently used first."""
        self.adapter: Any = None

    @staticmethod
    def of(llama: Llama) -> Contrast:
        """Return `llama`'s contrast context, opened on first use."""
        if getattr(llama, "_contrast", None) is None:
            llama._contrast = Contrast(llama)
        return llama._contrast

    def use(self, adapter: Any) -> None:
        """Answer with `adapter` (a loaded LoRA adapter, or None: the base model)."""
        if adapter is self.adapter:
            return
        if not set_adapter(self.ctx.ctx, adapter):
            raise RuntimeError("llama.cpp could not switch the contrast context's adapter")
        self.adapter, self.slots = adapter, [[] for _ in range(self.SLOTS)]

    def slot_for(self, tokens: list[int]) -> int:
        """The slot to evaluate `tokens` in: the one they continue, else the least recently used.

        Taking a slot saves the prefix it shares with `tokens` and loses the rest of what it
        holds. `tokens` continue a slot when they repeat at least half of it (`2 * shared -
        held >= 0`, as a state supersedes another in `PrefixCache`; an empty slot qualifies):
        the same dialogue's next contrast, never another dialogue's whose system prompt is all
        they share. The highest `2 * shared - held` wins; ties, and prompts that continue no
        slot, go to the least recently used.
        """
        gain = [2 * Llama.longest_token_prefix(held, tokens) - len(held) for held in self.slots]
        best = max(self.used, key=lambda slot: gain[slot])  # first of equals: least recent
        return best if gain[best] >= 0 else self.used[0]

    def logits(self, tokens: list[int], slot: int | None = None) -> tuple[np.ndarray, int]:
        """Return the logits after `tokens`, and how many of them were already held.

        `slot`: the sequence to extend (a reply's next token extends its prompt's); by default
        `slot_for(tokens)`. The slot becomes the most recently used.
        """
        slot = self.slot_for(tokens) if slot is None else slot
        keep = min(Llama.longest_token_prefix(self.slots[slot], tokens), len(tokens) - 1)
        self.used.remove(slot)
        self.used.append(slot)
        try:
            row = _decode(self.ctx, self.batch, self.n_batch, tokens, keep, seq=slot)
        except BaseException:
            self.slots[slot] = []
            self.ctx.kv_cache_seq_rm(slot, 0, -1)
            raise
        self.slots[slot] = list(tokens)
        return row, keep


def _main_logits(llama: Llama, tokens: list[int]) -> tuple[np.ndarray, int]:
    """Return the logits after `tokens` in `llama`'s own context, keeping its bookkeeping."""
    keep = min(Llama.longest_token_prefix(llama._input_ids.tolist(), tokens), len(tokens) - 1)
    try:
        row = _decode(llama._ctx, llama._batch, llama.n_batch, tokens, keep)
    except BaseException:
        llama.reset()
        raise
    llama.input_ids[keep : len(tokens)] = tokens[keep:]
    llama.n_tokens = len(tokens)
    return row, keep


LOOP_COPIES = 3
"""A reply held open that ends with the same tokens this many times running is looping."""
LOOP_LONGEST = 24
"""The longest run of tokens (`LOOP_COPIES` times over) counted as a loop."""


def looping(reply: Sequence[int]) -> int:
    """Return the length of the run of tokens `reply` ends with `LOOP_COPIES` times running.

    The shortest such run ("that occurred" in "that occurred that occurred that occurred"), up
    to `LOOP_LONGEST` tokens; 0 when the reply ends with none.
    """
    size = len(reply)
    for n in range(1, min(LOOP_LONGEST, size // LOOP_COPIES) + 1):
        last = reply[size - n :]
        if all(reply[size - k * n : size - (k - 1) * n] == last for k in range(2, LOOP_COPIES + 1)):
            return n
    return 0


class Hold:
    """Holds a reply open until it has `min_words` words (`GuideRequest.min_words`).

    Until then the end-of-generation tokens are left out (`may_end` is False). A reply that was
    held has two more ways to stop, before and after it has its words: where it writes one of
    `whole` (a simulator's end marker, alone or after some words: it wanted to end), and after
    the first time round a loop (`looping`: a model held past where it wanted to stop can
    circle there even once it may end, as "injury that occurred that occurred ..." did). A reply
    without a floor is never held nor stopped here.
    """

    def __init__(self, llama: Llama, min_words: int, whole: Sequence[str]) -> None:
        self.llama, self.min_words = llama, min_words
        self.whole = [text.strip() for text in whole if text.strip()]
        self.may_end = not min_words

    def stop(self, reply: list[int]) -> int | None:
        """Return the length `reply` (just grown by a token) stops at now, or None to go on."""
        if not self.min_words:
            return None
        text = self.llama.detokenize(reply).decode("utf-8", errors="ignore")
        if any(marker in text for marker in self.whole):
            return len(reply)
        if not self.may_end and len(text.split()) >= self.min_words:
            self.may_end = True
        loop = looping(reply)
        return len(reply) - (LOOP_COPIES - 1) * loop if loop else None


def guide(llama: Llama, request: GuideRequest, adapters: Adapters) -> GuideResponse:
    """Sample a reply to `request.messages` guided away from `request.against` (`guided_choice`).

    The conditioned prompt runs in `llama`'s context (restored from the prefix cache as a
    completion's is, and cached after it), the contrast in a second context (`Contrast`); each
    sampled token is then evaluated in both; at weight 1 the contrast changes nothing and is not
    evaluated (a reply sampled plainly for its `min_words`). Stops at an end-of-generation token
    (not before `min_words` words, `Hold`), where `Hold` stops it, or at `max_tokens`.
    """
    prompt = chat_prompt(llama, list(request.messages), request.model)
    against = chat_prompt(llama, list(request.against), request.model)
    if max(len(prompt), len(against)) + request.max_tokens > llama.n_ctx():
        raise ScoreError(
            f"prompt and reply may take {max(len(prompt), len(against)) + request.max_tokens} "
            f"tokens, over the context's {llama.n_ctx()}"
        )
    plain = request.guidance == 1.0
    if not plain:
        adapter = adapters.loaded.get(adapters.current) if adapters.current else None
        contrast = Contrast.of(llama)
        contrast.use(adapter)
    _restore_prefix(llama, prompt)
    rng = np.random.default_rng(request.seed)
    # guidance strengthens what the condition asks for; where the reply ends stays the
    # conditioned model's own call
    ends = end_tokens(llama)
    unboosted = word_tokens(llama, request.unboosted) | ends
    reply: list[int] = []
    on, kept = _main_logits(llama, prompt)
    if plain:
        off, kept_off = on, 0
    else:
        slot = contrast.slot_for(against)
        off, kept_off = contrast.logits(against, slot)
    finish: Literal["stop", "length"] = "length"
    hold, stop = Hold(llama, request.min_words, request.whole), None
    try:
        for _ in range(request.max_tokens):
            token = guided_choice(
                on, off, reply[-REPEAT_WINDOW:], request, rng, unboosted, ends, hold.may_end
            )
            if llama_cpp.llama_vocab_is_eog(llama._model.vocab, token):
                finish = "stop"
                break
            reply.append(token)
            if (stop := hold.stop(reply)) is not None:
                finish = "stop"
                break
            on, _ = _main_logits(llama, prompt + reply)
            off = on if plain else contrast.logits(against + reply, slot)[0]
    finally:
        llama._requires_eval = True  # a completion of exactly these tokens replays one
    if llama.cache:  # under the tokens the context holds: not the last one where `Hold` stopped
        llama.cache[prompt + (reply if stop is None else reply[:-1])] = llama.save_state()
    reply = reply if stop is None else reply[:stop]
    return GuideResponse(
        text=llama.detokenize(reply).decode("utf-8", errors="ignore"),
        tokens=len(reply),
        finish_reason=finish,
        prompt_tokens=len(prompt) + (0 if plain else len(against)),
        cached_tokens=kept + kept_off,
    )


def serve_guidance(adapters: Adapters) -> None:
    """Add `POST /v1/ideas/guided` (`guide`) to the server's routes (`serve_route`)."""

    def answer(llama: Llama, body: GuideRequest) -> GuideResponse:
        return guide(llama, body, adapters)

    serve_route("guided", answer, GuideRequest, GuideResponse, "Sample a reply with guidance")


if __name__ == "__main__":
    return_freed_memory()
    instrument()
    guard_special_tokens()
    adapters = Adapters(take_adapters(sys.argv))
    serve_adapters(adapters)
    serve_scores()
    serve_guidance(adapters)
    llama_cpp.LlamaRAMCache = PrefixCache  # the class the server instantiates for --cache
    runpy.run_module("llama_cpp.server", run_name="__main__", alter_sys=True)
