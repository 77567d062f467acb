"""Assistant: answers the accepted user instruction."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

from langchain_core.messages import BaseMessage, SystemMessage

from agents.chat import ChatClient
from dialogues.models import Usage
from prompts import render


@dataclass
class Reply:
    """The assistant's answer."""

    text: str
    usage: Usage = field(default_factory=Usage)


class Assistant(Protocol):
    """Answers the last user message."""

    async def respond(self, messages: Sequence[BaseMessage]) -> Reply:
        """Answer the dialogue's last user message."""
        ...


class LLMAssistant:
    """A chat model answering with the seed's system prompt, or a default one."""

    def __init__(self, chat: ChatClient) -> None:
        """Answer with `chat`."""
        self.chat = chat

    async def respond(self, messages: Sequence[BaseMessage]) -> Reply:
        """Answer the last user message."""
        if not messages or not isinstance(messages[0], SystemMessage):
            messages = [SystemMessage(content=render("assistant")), *messages]
        text, usage = await self.chat.text(messages)
        return Reply(text, usage)
