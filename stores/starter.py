"""The team-written starter library, used until a library induced from real dialogues ships."""

from __future__ import annotations

import json
from importlib import resources
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from dialogues.errors import InputError
from stores.base import StrategyRecord, StrategyStore
from stores.packaged import load_packaged, packaged_path, read_metadata

STARTER = "starter"
"""Name of the starter library."""


class LibraryNotFound(InputError, LookupError):
    """A named (non-starter) strategy library is empty or missing; the message is one line."""


class StarterLibrary(BaseModel):
    """The contents of `starter_library.json`."""

    library: str
    version: str
    origin: str
    strategies: list[StrategyRecord]


def read_starter() -> StarterLibrary:
    """Read and validate the starter library shipped with the package."""
    text = resources.files("stores").joinpath("starter_library.json").read_text("utf-8")
    return StarterLibrary.model_validate(json.loads(text))


def starter_metadata(starter: StarterLibrary) -> dict[str, Any]:
    """Return the library metadata recorded when the starter library is loaded."""
    return {
        "origin": starter.origin,
        "version": starter.version,
        "induced": False,
        "count": len(starter.strategies),
    }


def load_starter(store: StrategyStore) -> int:
    """Fill an empty store with the starter strategies and set its metadata.

    Args:
        store: The store to fill; left untouched if it already holds records.

    Returns:
        The number of strategies added (0 when the store was not empty).
    """
    if store.count() > 0:
        return 0
    starter = read_starter()
    store.add(starter.strategies)
    store.set_metadata(starter_metadata(starter))
    return len(starter.strategies)


def _stale_copy(store: StrategyStore, packaged: Path) -> bool:
    """Whether the store holds an older copy of a shipped library (a new version was installed).

    Only a copy loaded from the package is replaced; a library of the same name that the user
    built with `induce` is theirs and stays.
    """
    held = store.metadata()
    if not str(held.get("loaded_from", "")).startswith("packaged library"):
        return False
    shipped = read_metadata(packaged)
    keys = ("version", "created_at")
    return any(held.get(k) != shipped.get(k) for k in keys) and hasattr(store, "clear")


def ensure_library(store: StrategyStore) -> None:
    """Make sure the store's library can be used: load a shipped library into an empty one.

    A copy of a shipped library left in the store by an older release is replaced by the shipped
    one.

    Args:
        store: The opened library.

    Raises:
        LibraryNotFound: If a library other than the starter one is empty.
    """
    packaged = packaged_path(store.library)
    if store.count() > 0:
        if packaged is not None and _stale_copy(store, packaged):
            store.clear()
            load_packaged(store, packaged)
        return
    if store.library == STARTER:
        load_starter(store)
        return
    if packaged is not None:
        load_packaged(store, packaged)
        return
    where = getattr(store, "location", "the store")
    raise LibraryNotFound(
        f"strategy library {store.library!r} is empty or missing in {where}; "
        "build it with `python run.py induce ...`"
    )
