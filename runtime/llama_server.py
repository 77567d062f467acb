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

It is started as a script (`python runtime/llama_server.py --model ... [--adapter NAME=PATH]...`,
otherwise the arguments of `python -m llama_cpp.server`) and imports nothing from this project.
"""

from __future__ import annotations

import argparse
import ctypes
import runpy
import sys
from collections.abc import Iterator, Sequence
from functools import wraps
from typing import Any, NotRequired

import llama_cpp
import llama_cpp.llama_types
import numpy as np
from llama_cpp import Llama, LlamaRAMCache
from llama_cpp.llama import LlamaState

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


class Adapters:
    """LoRA adapters loaded once and switched per request by the request's `model` name."""

    def __init__(self, paths: dict[str, str]) -> None:
        """Serve each adapter file of `paths` under its name (loaded on first use)."""
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
            ok = llama_cpp.llama_set_adapters_lora(llama._ctx.ctx, None, 0, None) == 0
            llama.cache = self.base_cache
        else:
            adapters = (llama_cpp.llama_adapter_lora_p_ctypes * 1)(self._load(llama, name))
            scales = (ctypes.c_float * 1)(1.0)
            ok = llama_cpp.llama_set_adapters_lora(llama._ctx.ctx, adapters, 1, scales) == 0
            mark = -1 - sorted(self.paths).index(name)
            llama.cache = AdapterCache(self.base_cache, mark) if self.base_cache else None
        if not ok:
            raise RuntimeError(f"llama.cpp could not switch to adapter {name or 'none'}")
        llama.reset()
        self.current = name

    def _load(self, llama: Llama, name: str) -> Any:
        if name not in self.loaded:
            adapter = llama_cpp.llama_adapter_lora_init(
                llama._model.model, self.paths[name].encode("utf-8")
            )
            if adapter is None:
                raise RuntimeError(f"llama.cpp could not load adapter {self.paths[name]}")
            llama._stack.callback(llama_cpp.llama_adapter_lora_free, adapter)
            self.loaded[name] = adapter
        return self.loaded[name]


def serve_adapters(adapters: Adapters, cls: type[Llama] = Llama) -> None:
    """Make `cls.create_chat_completion` answer with the adapter its `model` argument names."""
    chat = cls.create_chat_completion

    @wraps(chat)
    def adapted_chat(self: Llama, *args: Any, **kwargs: Any) -> Any:
        adapters.select(self, kwargs.get("model"))
        return chat(self, *args, **kwargs)

    cls.create_chat_completion = adapted_chat


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


if __name__ == "__main__":
    return_freed_memory()
    instrument()
    serve_adapters(Adapters(take_adapters(sys.argv)))
    llama_cpp.LlamaRAMCache = PrefixCache  # the class the server instantiates for --cache
    runpy.run_module("llama_cpp.server", run_name="__main__", alter_sys=True)
