"""llama-cpp-python's OpenAI server, reporting per request the prompt tokens it reused.

llama-cpp-python's server answers `usage.prompt_tokens` (the prompt sent) but not how much of it
was evaluated: with a prefix reused from the context or from its RAM cache (`--cache true`), most
of it is not. This entry point runs the same server with `Llama` instrumented to count the prompt
tokens each chat completion hands to the model for evaluation, and reports the rest as OpenAI's
`usage.prompt_tokens_details.cached_tokens`, the field vLLM, SGLang and llama-server fill in too,
so one reader on the client side serves every server.

It is started as a script (`python runtime/llama_server.py --model ...`, the arguments of
`python -m llama_cpp.server`) and imports nothing from this project.
"""

from __future__ import annotations

import ctypes
import runpy
from collections.abc import Iterator
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
    always re-evaluates at least one token. A saved state holds one zero row instead.
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
    cls.save_state, cls.load_state = without_logits(save), without_logits(load)
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


if __name__ == "__main__":
    return_freed_memory()
    instrument()
    llama_cpp.LlamaRAMCache = PrefixCache  # the class the server instantiates for --cache
    runpy.run_module("llama_cpp.server", run_name="__main__", alter_sys=True)
