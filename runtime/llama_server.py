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

import runpy
from collections.abc import Iterator
from functools import wraps
from typing import Any, NotRequired

import llama_cpp
import llama_cpp.llama_types
import numpy as np
from llama_cpp import Llama, LlamaRAMCache
from llama_cpp.llama import LlamaState


def instrument(cls: type[Llama] = Llama) -> None:
    """Make `cls.create_chat_completion` report the prompt tokens it did not evaluate.

    `Llama.generate` first evaluates the prompt tokens that follow the longest prefix already in
    the context (after `_create_completion` restored the best cached state), then one token per
    sampled token. The first `eval` of each `generate` is therefore the prompt work; an exact
    cache hit evaluates nothing or replays one token.
    """
    generate, evaluate, chat = cls.generate, cls.eval, cls.create_chat_completion
    load = cls.load_state

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

    @wraps(load)
    def light_load(self: Llama, state: LlamaState) -> None:
        if self._logits_all:
            return load(self, state)
        scores, self.scores = self.scores, np.zeros((1, self._n_vocab), dtype=np.single)
        try:  # unread without logits_all; writing them would page in the whole array
            return load(self, state)
        finally:
            self.scores = scores

    cls.generate, cls.eval, cls.create_chat_completion = (
        counting_generate,
        counting_eval,
        reporting_chat,
    )
    cls.load_state = light_load
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
    """The server's RAM cache of model states, without its memory trap and its stale entries.

    `Llama.save_state` copies the whole `n_batch` x vocabulary logits array into every state
    (~100 MB at `n_batch` 512 for a 49,152-token vocabulary), which the byte budget does not count.
    With `logits_all` off that array is never read back: sampling reads llama.cpp's own logits, and
    a restored state always re-evaluates at least one token. One row is kept (for `load_state`,
    which `instrument` also keeps from writing into the array), so the byte budget bounds what the
    cache really holds.

    A new state makes an older one stale when it repeats at least half of the older one's tokens:
    the rest of the older one is a turn-specific tail (a strategy, candidates, a draft) or an
    earlier reply that no later request repeats, so it goes at once instead of by age.
    """

    def __setitem__(self, key: Any, value: LlamaState) -> None:
        """Store `value` under `key`, dropping the logits copy and the states it supersedes."""
        key = tuple(key)
        value.scores = value.scores[-1:].copy()
        for old in list(self.cache_state):
            if 2 * Llama.longest_token_prefix(old, key) >= len(old):
                del self.cache_state[old]
        super().__setitem__(key, value)


if __name__ == "__main__":
    instrument()
    llama_cpp.LlamaRAMCache = PrefixCache  # the class the server instantiates for --cache
    runpy.run_module("llama_cpp.server", run_name="__main__", alter_sys=True)
