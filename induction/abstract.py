"""Induction step 3: turn one cluster of strategies into a single higher-level strategy.

An `Abstractor` gets a cluster's member phrases and their embeddings and returns one phrase. Two
implementations: `CentroidAbstractor` keeps the member nearest the cluster's centre (no model), and
`LLMAbstractor` asks a chat model for the principle the members share, validates it with the same
rules as an extracted strategy, retries once with the reason, and falls back to the centroid member.
A cluster with a single distinct text keeps that text and costs no call.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import cached_property
from typing import Literal, Protocol

import numpy as np
from langchain_core.messages import HumanMessage
from pydantic import BaseModel, Field, field_validator

from agents.chat import ChatClient, model_name
from dialogues.models import Usage
from induction.strategy_check import MAX_WORDS, validate_strategy
from prompts import render
from runtime.pool import run_pool

TEMPLATE = "abstractor"
Method = Literal["singleton", "centroid", "llm", "fallback"]
"""How a text was chosen: the one distinct member, the centroid member, the LLM, or the centroid
member after the LLM failed."""


@dataclass(frozen=True)
class Abstraction:
    """The higher-level strategy of one cluster, and how it was made."""

    text: str
    method: Method
    usage: Usage = field(default_factory=Usage)
    note: str | None = None
    """Why the LLM's phrase was not used (method `fallback` only)."""


class Abstractor(Protocol):
    """Turns a cluster's member strategies into one higher-level strategy."""

    @property
    def name(self) -> str:
        """How abstractions are made, for the library metadata (`centroid`, `llm:<model>`)."""
        ...

    async def abstract(self, members: Sequence[str], embeddings: np.ndarray) -> Abstraction:
        """Return the cluster's strategy; `embeddings` has one row per member."""
        ...


def centroid_index(embeddings: np.ndarray) -> int:
    """Return the row nearest (by cosine) the mean of the L2-normalised rows; the first on ties."""
    x = np.asarray(embeddings, dtype=np.float32)
    x = x / np.clip(np.linalg.norm(x, axis=1, keepdims=True), 1e-12, None)
    return int(np.argmax(x @ x.mean(axis=0)))


def nearest_to_centre(members: Sequence[str], embeddings: np.ndarray, limit: int) -> list[str]:
    """Return up to `limit` distinct member texts, the one nearest the cluster's centre first."""
    x = np.asarray(embeddings, dtype=np.float32)
    x = x / np.clip(np.linalg.norm(x, axis=1, keepdims=True), 1e-12, None)
    order = np.argsort(-(x @ x.mean(axis=0)), kind="stable")
    shown: dict[str, None] = {}
    for i in order:
        shown.setdefault(members[i], None)
        if len(shown) == limit:
            break
    return list(shown)


class CentroidAbstractor:
    """Represent a cluster by its member nearest the centre: model-free and deterministic."""

    name = "centroid"

    async def abstract(self, members: Sequence[str], embeddings: np.ndarray) -> Abstraction:
        """Return the centroid member (`singleton` when the cluster has one distinct text)."""
        if len(set(members)) == 1:
            return Abstraction(members[0], "singleton")
        return Abstraction(members[centroid_index(embeddings)], "centroid")


class AbstractionOutput(BaseModel):
    """The high-level strategy that a group of follow-up strategies shares."""

    strategy: str = Field(
        description=f"One imperative phrase of at most {MAX_WORDS} words: the general principle "
        "behind the group's follow-ups, with no topic, names, numbers or quotations.",
        max_length=300,
    )

    @field_validator("strategy")
    @classmethod
    def _tidy(cls, value: str) -> str:
        text = " ".join(value.split())
        if text[:9].lower() == "strategy:":
            text = text[9:].strip()
        if len(text) > 1 and text[0] == text[-1] and text[0] in "\"'":
            text = text[1:-1].strip()
        return text.rstrip(".").strip()


def check_abstraction(text: str) -> str | None:
    """Return why `text` is not a usable high-level strategy, or None when it is.

    The rules of an extracted strategy apply (non-empty, at most 20 words, starts with an
    imperative verb, no numbers, quotations or stutter); a reply that merely echoes the output
    field's description is refused too, as small models sometimes do.
    """
    description = AbstractionOutput.model_fields["strategy"].description or ""
    if text and text.lower() in description.lower():
        return "the strategy repeats the instructions; state the shared principle"
    return validate_strategy(text, "")


class LLMAbstractor:
    """Ask a chat model for the principle a cluster shares, with validation and a fallback.

    Args:
        chat: The model client (the `abstractor` role).
        attempts: Phrases requested per cluster before falling back to the centroid member; each
            retry shows the model why its last phrase was refused.
        max_members: Distinct members shown, those nearest the cluster's centre first.
    """

    def __init__(self, chat: ChatClient, *, attempts: int = 2, max_members: int = 30) -> None:
        self.chat = chat
        self.attempts = attempts
        self.max_members = max_members

    @cached_property
    def model_name(self) -> str:
        """The model's name as the server knows it (the class name for fakes)."""
        return model_name(self.chat.model)

    @property
    def name(self) -> str:
        """`llm:<model>`."""
        return f"llm:{self.model_name}"

    def prompt(self, members: Sequence[str], embeddings: np.ndarray, feedback: str = "") -> str:
        """Render the abstractor prompt for a cluster."""
        shown = nearest_to_centre(members, embeddings, self.max_members)
        return render(TEMPLATE, strategies=shown, feedback=feedback)

    async def abstract(self, members: Sequence[str], embeddings: np.ndarray) -> Abstraction:
        """Return the LLM's validated phrase, or the centroid member with the reason it failed."""
        if len(set(members)) == 1:
            return Abstraction(members[0], "singleton")
        usage, feedback, reason = Usage(), "", "no attempt made"
        for _ in range(self.attempts):
            messages = [HumanMessage(content=self.prompt(members, embeddings, feedback))]
            result = await self.chat.structured(AbstractionOutput, messages)
            usage += result.usage
            if result.value is None:
                reason = f"no valid output ({result.error})"
                feedback = "Your last reply was not valid: fill in the strategy."
                continue
            text = result.value.strategy
            reason = check_abstraction(text)
            if reason is None:
                return Abstraction(text, "llm", usage)
            feedback = f"Your last strategy {text!r} was rejected: {reason}."
        return Abstraction(members[centroid_index(embeddings)], "fallback", usage, reason)


async def abstract_all(
    abstractor: Abstractor,
    clusters: Sequence[np.ndarray],
    texts: Sequence[str],
    embeddings: np.ndarray,
    concurrency: int = 4,
) -> list[Abstraction]:
    """Abstract every cluster with `concurrency` concurrent workers, keeping the clusters' order.

    Args:
        abstractor: Makes each cluster's strategy.
        clusters: Each cluster's member indices into `texts` and `embeddings`.
        texts: Every item's strategy text.
        embeddings: Every item's embedding, one row per text.
        concurrency: Clusters in flight at once (1 keeps the calls in cluster order).

    Returns:
        One abstraction per cluster.
    """
    results: list[Abstraction | None] = [None] * len(clusters)

    async def abstract(i: int) -> None:
        members = [texts[j] for j in clusters[i]]
        results[i] = await abstractor.abstract(members, embeddings[clusters[i]])

    await run_pool(range(len(clusters)), concurrency, abstract)
    return [r for r in results if r is not None]
