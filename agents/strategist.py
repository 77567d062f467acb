"""Strategist: retrieve candidate strategies Q(a) for the last answer and choose one.

Retrieval (a Chroma query, the embedder, the learned ranker) blocks, so it runs in a worker thread
(`asyncio.to_thread`), never on the event loop that the graph's async nodes share.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field
from typing import Literal, Protocol

from langchain_core.messages import BaseMessage, SystemMessage
from pydantic import Field, create_model

from agents.chat import ChatClient
from dialogues.messages import conversation, last_answer, with_request
from dialogues.models import Usage
from prompts import render
from stores.base import Candidate
from stores.ranker import Ranked

Method = Literal["llm", "fallback", "random", "learned", "none"]


@dataclass
class Selection:
    """The strategist's decision for one turn."""

    candidates: list[Candidate]
    strategy: Candidate | None
    method: Method
    note: str | None = None
    usage: Usage = field(default_factory=Usage)
    draw: dict | None = None
    """The learned strategist's draw: temperature, the chosen strategy's probability and rank."""

    def as_record(self) -> dict:
        """Return plain data for the state and the output file."""
        record = {
            "candidates": [c.model_dump() | {"score": round(c.score, 4)} for c in self.candidates],
            "strategy": {"id": self.strategy.id, "text": self.strategy.text}
            if self.strategy
            else None,
            "method": self.method,
            "note": self.note,
        }
        if self.draw is not None:
            record["draw"] = self.draw
        return record


class Retriever(Protocol):
    """Finds candidate strategies for an answer: the store itself or a context retriever."""

    def search(self, text: str, k: int, *, exclude: Collection[str] = ()) -> list[Candidate]:
        """Return up to k candidates for `text`, skipping `exclude` ids."""
        ...


class Strategist(Protocol):
    """Chooses the strategy the next user instruction should apply."""

    async def select(self, messages: Sequence[BaseMessage], used: Collection[str]) -> Selection:
        """Return candidates for the last answer and the chosen one (never one in `used`)."""
        ...


def choice_schema(keys: Sequence[str]) -> type:
    """Build the closed-list output model: the model may only answer one of `keys`."""
    return create_model(
        "StrategyChoice",
        __doc__="The number of the chosen follow-up strategy.",
        choice=(Literal[tuple(keys)], Field(description="Number of the chosen strategy.")),
    )


class LLMStrategist:
    """Retrieve the top-k strategies for the last answer; the LLM picks one by number."""

    def __init__(self, retriever: Retriever, chat: ChatClient, k: int = 8) -> None:
        """Retrieve `k` candidates with `retriever` and ask `chat` to choose."""
        self.retriever, self.chat, self.k = retriever, chat, k

    async def select(self, messages: Sequence[BaseMessage], used: Collection[str]) -> Selection:
        """Retrieve, then choose; an invalid pick falls back to the best-ranked candidate.

        The model sees its instructions, the conversation, then this turn's candidates.
        """
        answer = last_answer(messages)
        candidates = await asyncio.to_thread(self.retriever.search, answer, self.k, exclude=used)
        if not candidates:
            return Selection([], None, "none", "no unused strategy left in the library")
        keys = [str(i + 1) for i in range(len(candidates))]
        options = [{"key": key, "text": c.text} for key, c in zip(keys, candidates, strict=True)]
        request = render("strategist_choice", candidates=options)
        prompt = [SystemMessage(content=render("strategist"))]
        prompt += with_request(conversation(messages), request)
        result = await self.chat.structured(choice_schema(keys), prompt)
        if result.value is None:
            note = f"invalid pick ({result.error}); fell back to the best-ranked candidate"
            return Selection(candidates, candidates[0], "fallback", note, result.usage)
        chosen = candidates[keys.index(result.value.choice)]
        return Selection(candidates, chosen, "llm", None, result.usage)


class RandomStrategist:
    """Retrieve like the LLM strategist, then choose uniformly at random (seeded)."""

    def __init__(self, retriever: Retriever, k: int = 8, seed: int = 0) -> None:
        """Retrieve `k` candidates with `retriever`; `seed` makes the choices repeatable."""
        self.retriever, self.k, self.rng = retriever, k, random.Random(seed)

    async def select(self, messages: Sequence[BaseMessage], used: Collection[str]) -> Selection:
        """Retrieve candidates and pick one at random."""
        answer = last_answer(messages)
        candidates = await asyncio.to_thread(self.retriever.search, answer, self.k, exclude=used)
        if not candidates:
            return Selection([], None, "none", "no unused strategy left in the library")
        return Selection(candidates, self.rng.choice(candidates), "random")


class RankingRetriever(Retriever, Protocol):
    """A retriever that also gives the whole ranked distribution (`stores.ranker`)."""

    def rank(
        self, text: str, *, exclude: Collection[str] = (), temperature: float = 1.0
    ) -> list[Ranked]:
        """Return every unused strategy, most likely first, with probabilities."""
        ...


class LearnedStrategist:
    """Draw the strategy from the learned ranker's distribution over the unused strategies.

    Temperature 0 takes the most likely strategy; 1 draws with the ranker's own probabilities,
    so a dataset follows what real users did after such answers and still varies. The record
    lists the top-k as candidates (plus the drawn strategy when it ranked lower) with their
    probabilities, and the draw itself.
    """

    def __init__(
        self, retriever: RankingRetriever, k: int = 8, temperature: float = 1.0, seed: int = 0
    ) -> None:
        """Rank with `retriever`, record `k` candidates, draw at `temperature` (seeded)."""
        self.retriever, self.k, self.temperature = retriever, k, temperature
        self.rng = random.Random(seed)

    async def select(self, messages: Sequence[BaseMessage], used: Collection[str]) -> Selection:
        """Rank every unused strategy and draw one."""
        ranked = await asyncio.to_thread(
            self.retriever.rank, last_answer(messages), exclude=used, temperature=self.temperature
        )
        if not ranked:
            return Selection([], None, "none", "no unused strategy left in the library")
        position = self.rng.choices(range(len(ranked)), weights=[r.probability for r in ranked])[0]
        shown = list(range(min(self.k, len(ranked))))
        if position not in shown:
            shown.append(position)
        candidates = [
            Candidate(id=r.record.id, text=r.record.text, score=r.probability, rank=i)
            for i, r in ((i, ranked[i]) for i in shown)
        ]
        draw = {
            "temperature": self.temperature,
            "probability": round(ranked[position].probability, 4),
            "rank": position,
            "pool": len(ranked),
        }
        chosen = candidates[shown.index(position)]
        return Selection(candidates, chosen, "learned", None, draw=draw)


class NoStrategist:
    """No strategy at all: the simulator writes a plain prompted follow-up (the baseline)."""

    async def select(self, messages: Sequence[BaseMessage], used: Collection[str]) -> Selection:
        """Return an empty selection."""
        return Selection([], None, "none", "strategist disabled")
