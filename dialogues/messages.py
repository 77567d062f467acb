"""Views of a dialogue held as LangChain messages: texts by speaker, swapped roles, OpenAI form.

Roles see the dialogue as chat history followed by their turn's request (`with_request`): the
history renders the same from turn to turn, so each role's request extends its previous one and a
model server can reuse that prefix.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, SystemMessage

_ROLE = {"human": "user", "ai": "assistant", "system": "system"}


def to_langchain(messages: Iterable[dict[str, str]]) -> list[BaseMessage]:
    """Turn OpenAI-style `{"role", "content"}` dicts into LangChain messages."""
    kinds = {"user": HumanMessage, "assistant": AIMessage, "system": SystemMessage}
    return [kinds[m["role"]](content=m["content"]) for m in messages]


def to_openai(messages: Iterable[BaseMessage]) -> list[dict[str, str]]:
    """Turn LangChain messages into OpenAI-style `{"role", "content"}` dicts."""
    return [{"role": _ROLE[m.type], "content": m.text} for m in messages]


def last_answer(messages: Sequence[BaseMessage]) -> str:
    """Return the text of the last assistant message ('' when there is none)."""
    return next((m.text for m in reversed(messages) if isinstance(m, AIMessage)), "")


def user_texts(messages: Sequence[BaseMessage]) -> list[str]:
    """Return the text of every user message, in order."""
    return [m.text for m in messages if isinstance(m, HumanMessage)]


def swap_roles(messages: Sequence[BaseMessage]) -> list[BaseMessage]:
    """Return the dialogue as the user simulator sees it: its own turns as AI, answers as human.

    System messages are dropped: they belonged to the assistant.
    """
    swapped: list[BaseMessage] = []
    for m in messages:
        if isinstance(m, HumanMessage):
            swapped.append(AIMessage(content=m.text))
        elif isinstance(m, AIMessage):
            swapped.append(HumanMessage(content=m.text))
    return swapped


def conversation(messages: Sequence[BaseMessage]) -> list[BaseMessage]:
    """Return the user and assistant messages, without the assistant's system prompt."""
    return [m for m in messages if isinstance(m, HumanMessage | AIMessage)]


def with_request(history: Sequence[BaseMessage], request: str) -> list[BaseMessage]:
    """Return `history` followed by this turn's `request` to the role, as a user message.

    After a user message the request joins it (below a blank line) rather than following as a
    second user message, which chat templates that insist on alternating roles reject. Either
    way every message before it is unchanged, and so is the text of the message it joins.
    """
    if history and isinstance(history[-1], HumanMessage):
        joined = HumanMessage(content=f"{history[-1].text}\n\n{request}")
        return [*history[:-1], joined]
    return [*history, HumanMessage(content=request)]
