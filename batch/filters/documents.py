"""Dialogue documents: comparing their text, cutting their turns and recording each cut."""

from __future__ import annotations

from dialogues.models import DialogueDocument, FilterCut, FilterInfo


def normalise_text(text: str) -> str:
    """Case-fold and collapse whitespace (how repeats and contamination are compared)."""
    return " ".join(text.casefold().split())


def instructions(document: DialogueDocument) -> list[str]:
    """Return the generated user turns of `document`, in order."""
    return [turn.instruction for turn in document.turns]


def truncate(
    document: DialogueDocument, keep: int, by: str, *, drop_opening: bool = False
) -> DialogueDocument:
    """Return a copy of `document` with only its first `keep` generated turns.

    Args:
        document: A dialogue document; it is not modified.
        keep: Generated turns to keep (0 keeps only the seed and the opening answer).
        by: The filter that cuts (`refusal`, `dedup`, `contamination`), recorded in `filters`.
        drop_opening: Also remove the opening answer (only with `keep=0`).

    Returns:
        A new document whose `messages`, `turns` and `summary.turns` agree.
    """
    turns, messages = document.turns, document.messages
    keep = max(0, min(keep, len(turns)))
    start = document.generated_start
    update: dict[str, object] = {
        "turns": turns[:keep],
        "messages": messages[: start + 2 * keep],
        "unfinished_turn": None,
    }
    opening_removed = False
    if drop_opening and keep == 0 and document.opening and start > 0:
        if messages[start - 1].role == "assistant":
            update |= {"messages": messages[: start - 1], "opening": None}
            opening_removed = True
    if document.summary is not None:
        update["summary"] = document.summary.model_copy(update={"turns": keep})
    filters = filter_record(document)
    cut = FilterCut(by=by, at=keep, removed=len(turns) - keep)
    update["filters"] = filters.model_copy(
        update={
            "truncated_at": keep,
            "by": by,
            "cuts": [*filters.cuts, cut],
            "opening_removed": filters.opening_removed or opening_removed,
        }
    )
    return document.model_copy(update=update)


def filter_record(document: DialogueDocument) -> FilterInfo:
    """Return a fresh copy of the document's filter record, every field set."""
    old = document.filters or FilterInfo()
    return FilterInfo(
        generated_turns=len(document.turns) if old.generated_turns is None else old.generated_turns,
        truncated_at=old.truncated_at,
        by=old.by,
        cuts=list(old.cuts),
        opening_removed=old.opening_removed,
        contaminated_turns=list(old.contaminated_turns),
    )
