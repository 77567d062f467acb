"""Scripted fake chat models: replies come from a script; every prompt is recorded."""

from __future__ import annotations

from typing import Any

from langchain_core.language_models.fake_chat_models import GenericFakeChatModel
from langchain_core.messages import AIMessage, BaseMessage
from langchain_core.outputs import ChatResult
from pydantic import Field

from agents.chat import ChatClient
from dialogues.models import Usage


def tool_reply(name: str, **args: Any) -> AIMessage:
    """A reply carrying one tool call, as a server answers a structured-output request."""
    usage = {"input_tokens": 50, "output_tokens": 10, "total_tokens": 60}
    return AIMessage(
        content="", tool_calls=[{"name": name, "args": args, "id": "call-1"}], usage_metadata=usage
    )


def text_reply(text: str) -> AIMessage:
    """A plain text reply with token usage."""
    usage = {"input_tokens": 40, "output_tokens": 20, "total_tokens": 60}
    return AIMessage(content=text, usage_metadata=usage)


class ScriptedChatModel(GenericFakeChatModel):
    """Answers from `script` in order; `prompts` records what each call was sent."""

    script: list[Any] = Field(default_factory=list)
    prompts: list[list[BaseMessage]] = Field(default_factory=list)
    messages: Any = None

    def model_post_init(self, context: Any) -> None:
        self.messages = iter(self.script)

    def bind_tools(self, tools: Any, **kwargs: Any) -> ScriptedChatModel:
        return self

    def _generate(self, messages: list[BaseMessage], *args: Any, **kwargs: Any) -> ChatResult:
        self.prompts.append(list(messages))
        try:
            return super()._generate(messages, *args, **kwargs)
        except StopIteration:
            raise AssertionError(f"script exhausted after {len(self.script)} replies") from None

    @property
    def unused(self) -> int:
        return len(self.script) - len(self.prompts)


class SeedRecordingModel(ScriptedChatModel):
    """A scripted model with a `seed` field (like ChatOpenAI); `seeds` records each call's."""

    seed: int | None = None
    seeds: list[int | None] = Field(default_factory=list)

    def _generate(self, messages: list[BaseMessage], *args: Any, **kwargs: Any) -> ChatResult:
        self.seeds.append(self.seed)
        return super()._generate(messages, *args, **kwargs)


def scripted(*replies: AIMessage | str, history_tokens: int = 2400) -> ChatClient:
    """A ChatClient around a fresh ScriptedChatModel (reachable as `.model`)."""
    return ChatClient(ScriptedChatModel(script=list(replies)), history_tokens=history_tokens)


def recorded_client(
    handler: Any, *, seed: int | None = None, **model: Any
) -> tuple[ChatClient, list[dict]]:
    """A ChatClient on a ChatOpenAI model whose HTTP requests `handler` answers, recorded.

    Every request is recorded as `{"url", "body"}`; `model` sets ChatOpenAI's fields (its
    `base_url` defaults to `http://scores.test/v1`, its model name to `simulator`).
    """
    import json

    import httpx
    from langchain_openai import ChatOpenAI

    requests: list[dict] = []

    def respond(request: httpx.Request) -> httpx.Response:
        requests.append({"url": str(request.url), "body": json.loads(request.content)})
        return handler(request)

    fields = {"base_url": "http://scores.test/v1", "api_key": "x", "model": "simulator"}
    chat_model = ChatOpenAI(
        **(fields | model),
        max_retries=0,
        http_async_client=httpx.AsyncClient(transport=httpx.MockTransport(respond)),
    )
    return ChatClient(chat_model, seed=seed), requests


class ScriptedGuidance(ChatClient):
    """A chat client that records the guided requests it gets and answers them from a script."""

    def __init__(self, *replies: str, guides: bool = True, history_tokens: int = 2400) -> None:
        super().__init__(
            ScriptedChatModel(script=[text_reply("plain reply")] * 4),
            history_tokens=history_tokens,
        )
        self.replies = list(replies)
        self.guides = guides
        self.asked: list[tuple[list, list, float]] = []

    async def guided(self, messages, against, guidance, *, unboosted="", min_words=0, whole=()):
        if not self.guides:
            self._guiding.available = False  # as the client does on a 404
            return None
        self.asked.append((list(messages), list(against), guidance))
        self.unboosted, self.min_words, self.whole = unboosted, min_words, tuple(whole)
        return self.replies.pop(0), Usage(1, 10, 2, 0.1, 0)
