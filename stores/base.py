"""The strategy library interface: records, retrieval candidates and the store protocol."""

from __future__ import annotations

from collections.abc import Collection, Sequence
from typing import Any, Literal, Protocol, runtime_checkable

from pydantic import BaseModel, Field

from dialogues.errors import InputError, ServiceError

Level = Literal["high", "intermediate", "extracted"]
"""`high`: an abstract, high-level strategy (the top tier, what deduction retrieves);
`intermediate`: an abstraction of a lower tier of an induced library; `extracted`: one extracted
from a real follow-up."""


class StoreError(InputError, ValueError):
    """A strategy store that cannot be used as configured (bad name or path); one line."""


class StoreUnavailable(ServiceError, RuntimeError):
    """The configured Chroma server could not be reached or is not a Chroma server; one line."""


class Provenance(BaseModel):
    """Where a strategy came from."""

    source: str = Field(description="Source file path, or a label such as 'starter'.")
    record_id: str | None = Field(default=None, description="Record id inside the source.")
    turn: int | None = Field(default=None, description="Index of the real follow-up turn.")
    note: str | None = None


class StrategyRecord(BaseModel):
    """One strategy in a library."""

    id: str
    text: str
    level: Level = "high"
    parent_id: str | None = None
    provenance: list[Provenance] = Field(default_factory=list)
    support: int = 1


class Candidate(BaseModel):
    """A strategy retrieved for the current dialogue, with its similarity score."""

    id: str
    text: str
    score: float = Field(description="Cosine similarity to the query; higher is closer.")
    rank: int = Field(description="0-based rank among the retrieved candidates.")


@runtime_checkable
class StrategyStore(Protocol):
    """A named strategy library that can be searched by text."""

    library: str

    def add(self, records: Sequence[StrategyRecord]) -> None:
        """Insert or update records (by id)."""
        ...

    def get(self, strategy_id: str) -> StrategyRecord | None:
        """Return one record, or None when the id is unknown."""
        ...

    def records(self, level: Level | None = None) -> list[StrategyRecord]:
        """Return all records, optionally of one level."""
        ...

    def count(self, level: Level | None = None) -> int:
        """Count records, optionally of one level."""
        ...

    def search(
        self, text: str, k: int, *, level: Level = "high", exclude: Collection[str] = ()
    ) -> list[Candidate]:
        """Return up to k records of `level` most similar to `text`, skipping `exclude` ids."""
        ...

    def metadata(self) -> dict[str, Any]:
        """Return the library's metadata (version, origin, models, sources...)."""
        ...

    def set_metadata(self, metadata: dict[str, Any]) -> None:
        """Replace the library's metadata."""
        ...
