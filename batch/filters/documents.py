"""Dialogue documents: comparing their text, cutting their turns and recording each cut."""

from __future__ import annotations

from typing import Any

Document = dict[str, Any]


def normalise_text(text: str) -> str:
    """Case-fold and collapse whitespace (how repeats and contamination are compared)."""
    return " ".join(text.casefold().split())


def truncate(document: Document, keep: int, by: str, *, drop_opening: bool = False) -> Document:
    """Return a copy of `document` with only its first `keep` generated turns.

    Args:
        document: A dialogue document; it is not modified.
        keep: Generated turns to keep (0 keeps only the seed and the opening answer).
        by: The filter that cuts (`refusal`, `dedup`, `contamination`), recorded in `filters`.
        drop_opening: Also remove the opening answer (only with `keep=0`).

    Returns:
        A new document whose `messages`, `turns` and `summary.turns` agree.
    """
    turns = list(document.get("turns") or [])
    messages = list(document.get("messages") or [])
    keep = max(0, min(keep, len(turns)))
    removed = len(turns) - keep
    start = len(messages) - 2 * len(turns)
    new = dict(document)
    new["turns"] = turns[:keep]
    new["messages"] = messages[: start + 2 * keep]
    filters = _filters(document)
    opening = document.get("opening")
    if drop_opening and keep == 0 and opening and start > 0:
        if messages[start - 1].get("role") == "assistant":
            new["messages"] = messages[: start - 1]
            new["opening"] = None
            filters["opening_removed"] = True
    if "summary" in document and isinstance(document["summary"], dict):
        new["summary"] = dict(document["summary"], turns=keep)
    new["unfinished_turn"] = None
    filters["truncated_at"] = keep
    filters["by"] = by
    filters["cuts"] = [*filters["cuts"], {"by": by, "at": keep, "removed": removed}]
    new["filters"] = filters
    return new


def _filters(document: Document) -> dict[str, Any]:
    """Return a fresh copy of the document's filter record, with its defaults."""
    old = document.get("filters") or {}
    return {
        "generated_turns": old.get("generated_turns", len(document.get("turns") or [])),
        "truncated_at": old.get("truncated_at"),
        "by": old.get("by"),
        "cuts": list(old.get("cuts", [])),
        "opening_removed": old.get("opening_removed", False),
        "contaminated_turns": list(old.get("contaminated_turns", [])),
    }
