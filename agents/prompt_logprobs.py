"""Scoring a reply on a server that returns prompt log-probabilities (vLLM's OpenAI server).

The embedded server scores a reply in one request (`POST /v1/ideas/score`). vLLM has no such
endpoint, but its chat completions return the log-probability of every prompt token when asked
(`prompt_logprobs`), render an assistant message as an unfinished reply
(`continue_final_message`), and tokenize a chat (`POST /tokenize`, at the server's root). A reply's
log-probability is then the sum over its own tokens:

1. tokenize the history with the generation prompt: the reply starts at that count;
2. tokenize history + reply as an unfinished assistant message: the token ids;
3. ask for one completion token of the same chat with `prompt_logprobs: 0` and add up, from the
   first reply token on, the log-probability each prompt token was given.

If the server's chat template does not render the history as a prefix of the continued chat, the
boundary is unknown and the reply is not scored (`ScoringUnsupported`).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from pydantic import BaseModel, Field, ValidationError

from dialogues.errors import ServiceError

Post = Callable[[str, dict[str, Any]], Awaitable[object]]
"""POST a JSON body to a URL (absolute) and return the decoded JSON reply."""


class ScoringUnsupported(ServiceError):
    """The server cannot score this way (say why in one line)."""


class InvalidScore(ServiceError):
    """The server answered something that is no tokenization or no prompt log-probabilities."""


class _Tokenized(BaseModel):
    tokens: list[int]


class _Logprob(BaseModel):
    logprob: float = Field(allow_inf_nan=False)


class _PromptLogprobs(BaseModel):
    prompt_logprobs: list[dict[str, _Logprob] | None] | None = None


def server_root(base_url: str) -> str:
    """The server's root from its OpenAI base URL (`http://h:8000/v1` -> `http://h:8000`)."""
    root = base_url.rstrip("/")
    return root.removesuffix("/v1")


def tokenize_body(model: str, messages: list[dict[str, str]], *, reply: bool) -> dict[str, Any]:
    """The `/tokenize` request: the history with the generation prompt, or with the reply."""
    if reply:
        return {"model": model, "messages": messages, "add_generation_prompt": False,
                "continue_final_message": True}  # fmt: skip
    return {"model": model, "messages": messages, "add_generation_prompt": True}


def logprobs_body(model: str, messages: list[dict[str, str]]) -> dict[str, Any]:
    """The chat completion that returns the prompt's log-probabilities (one sampled token)."""
    return {"model": model, "messages": messages, "add_generation_prompt": False,
            "continue_final_message": True, "max_tokens": 1, "temperature": 0,
            "prompt_logprobs": 0}  # fmt: skip


def reply_logprob(
    prefix: list[int], full: list[int], logprobs: list[dict[str, float] | None]
) -> float:
    """Sum the log-probabilities of the reply's tokens: `full` after `prefix`.

    Raises:
        ScoringUnsupported: `prefix` is not a prefix of `full` (the template rewrites the history
            when it continues a reply), or the reply has no token.
        InvalidScore: `logprobs` does not cover `full`, or lacks a reply token's own entry.
    """
    if full[: len(prefix)] != prefix or len(full) <= len(prefix):
        raise ScoringUnsupported("its chat template does not continue the history as a prefix")
    if len(logprobs) != len(full):
        raise InvalidScore(f"{len(logprobs)} prompt log-probabilities for {len(full)} tokens")
    total = 0.0
    for position in range(len(prefix), len(full)):
        entry = logprobs[position] or {}
        if str(full[position]) not in entry:
            raise InvalidScore(f"no log-probability for prompt token {position}")
        total += entry[str(full[position])]
    return total


async def score_with_prompt_logprobs(
    post: Post, base_url: str, model: str, history: list[dict[str, str]], reply: str
) -> tuple[float, int]:
    """Return (log-probability of `reply` after `history`, prompt tokens of the scoring call).

    Raises:
        ScoringUnsupported: The server's template cannot continue the reply as a prefix.
        InvalidScore: A reply is no tokenization or no prompt log-probabilities.
    """
    root = server_root(base_url)
    continued = [*history, {"role": "assistant", "content": reply}]
    try:
        prefix = _Tokenized.model_validate(
            await post(f"{root}/tokenize", tokenize_body(model, history, reply=False))
        ).tokens
        full = _Tokenized.model_validate(
            await post(f"{root}/tokenize", tokenize_body(model, continued, reply=True))
        ).tokens
        found = _PromptLogprobs.model_validate(
            await post(f"{base_url.rstrip('/')}/chat/completions", logprobs_body(model, continued))
        )
    except ValidationError as exc:
        raise InvalidScore(str(exc).splitlines()[0]) from None
    if found.prompt_logprobs is None:
        raise ScoringUnsupported("it returns no prompt log-probabilities")
    logprobs = [
        {token: value.logprob for token, value in entry.items()} if entry else None
        for entry in found.prompt_logprobs
    ]
    return reply_logprob(prefix, full, logprobs), len(full)
