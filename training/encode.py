"""Tokenise a training pair with the model's chat template; the loss covers the target only."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

IGNORE = -100
"""Label of a token that takes no part in the loss (PyTorch's cross-entropy ignore index)."""


class ChatTokenizer(Protocol):
    """The part of a Hugging Face tokenizer used here."""

    def apply_chat_template(self, conversation: list[dict[str, str]], **kwargs: Any) -> Any:
        """Render a chat as text (with `tokenize=False`)."""
        ...

    def __call__(self, text: str, **kwargs: Any) -> Any:
        """Tokenise text; the result has `input_ids`."""
        ...


@dataclass(frozen=True)
class Example:
    """Token ids and labels of one pair: the prompt's labels are `IGNORE`."""

    input_ids: list[int]
    labels: list[int]

    @property
    def prompt_length(self) -> int:
        """Number of prompt tokens (the target starts here)."""
        return self.labels.count(IGNORE)

    @property
    def target_length(self) -> int:
        """Number of target tokens."""
        return len(self.labels) - self.prompt_length


def encode(tokenizer: ChatTokenizer, messages: list[dict[str, str]], target: str) -> Example:
    """Tokenise the prompt as the server does, then the reply the model should write after it.

    The prompt is the chat rendered with the generation prompt (what llama.cpp's server feeds
    the model); the target is the rest of the chat with `target` as the assistant's message,
    end-of-turn token included, so the model learns to stop. The two are tokenised apart
    because at run time the model generates the target's tokens after the prompt's.

    Raises:
        ValueError: The template does not render the prompt as a prefix of the full chat.
    """
    prompt = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    full = tokenizer.apply_chat_template(
        [*messages, {"role": "assistant", "content": target}], tokenize=False
    )
    if not full.startswith(prompt):
        raise ValueError("the chat template does not render the prompt as a prefix of the reply")
    prompt_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
    target_ids = tokenizer(full[len(prompt) :], add_special_tokens=False)["input_ids"]
    return Example(prompt_ids + target_ids, [IGNORE] * len(prompt_ids) + target_ids)


def encode_fitting(
    tokenizer: ChatTokenizer,
    messages: list[dict[str, str]],
    target: str,
    max_length: int,
    history_tokens: int,
) -> tuple[Example, bool]:
    """Encode a pair within `max_length` tokens, dropping older history as the run time does.

    A pair over the limit is fitted again with a smaller history budget (`fit_history`, which
    keeps the instructions and the last message, the answer with the request, and drops the
    oldest history in chunks), halving it until the pair fits or no history is left. Long
    dialogues (documents written over many turns) then still teach their last turns instead of
    being left out: at run time a simulator sees at most `history_tokens` of history anyway.

    Returns:
        The example (possibly still over the limit, when even the last message is too long) and
        whether its history was trimmed.
    """
    from agents.chat import fit_history
    from dialogues.messages import to_langchain, to_openai

    example = encode(tokenizer, messages, target)
    budget, trimmed = history_tokens, False
    while len(example.input_ids) > max_length and budget > 1:
        budget //= 2
        fitted = to_openai(fit_history(to_langchain(messages), budget))
        if fitted == messages:
            continue
        messages, trimmed = fitted, True
        example = encode(tokenizer, messages, target)
    return example, trimmed
