"""Load real dialogues from any supported file and list their (history, follow-up) pairs.

`load` sniffs the format from the first record (`detect_format`), reads every record, skips and
counts the bad ones, and returns the dialogues with their pairs deduplicated by `Pair.key`. A file
with no dialogue shape at all (a CSV, single questions, unrelated JSON) raises `NotDialogueFile`.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from induction.formats import LINEAR
from induction.records import (
    BadRecord,
    Dialogue,
    LoadResult,
    NotDialogueFile,
    Pair,
    Turn,
    pairs_of,
)
from induction.sniff import FORMATS, detect, read_records
from induction.trees import flat_dialogues, nested_dialogues

__all__ = [
    "FORMATS",
    "Dialogue",
    "LoadResult",
    "NotDialogueFile",
    "Pair",
    "Turn",
    "detect_format",
    "load",
    "pairs_of",
]


def detect_format(path: Path) -> str:
    """Tell the dialogue format of a file from its content (gzip or plain JSON / JSON Lines).

    Raises:
        NotDialogueFile: The file's first record has no dialogue shape.
    """
    path = Path(path)
    return detect(path, read_records(path))


def _linear(
    reader: Any, records: list[tuple[int, Any]], skipped: Counter[str], repaired: Counter[str]
) -> Iterator[Dialogue]:
    for index, record in records:
        try:
            yield reader(record, index, repaired)
        except BadRecord as bad:
            skipped[str(bad)] += 1


def _unique_ids(dialogues: list[Dialogue], repaired: Counter[str]) -> list[Dialogue]:
    """Suffix repeated dialogue ids with `#<n>` so that every pair key stays unique."""
    seen: Counter[str] = Counter()
    unique = []
    for dialogue in dialogues:
        seen[dialogue.record_id] += 1
        if seen[dialogue.record_id] > 1:
            repaired["duplicate id renamed"] += 1
            dialogue = Dialogue(f"{dialogue.record_id}#{seen[dialogue.record_id]}", dialogue.turns)
        unique.append(dialogue)
    return unique


def load(path: str | Path, format: str | None = None) -> LoadResult:
    """Read every dialogue of a file and its follow-up pairs.

    Args:
        path: A JSON or JSON Lines file, optionally gzip-compressed.
        format: One of `FORMATS`; sniffed from the first record when `None`.

    Raises:
        NotDialogueFile: The file holds no dialogue shape (only when the format is sniffed).
        ValueError: `format` is not one of `FORMATS`.
    """
    path = Path(path)
    if format is not None and format not in FORMATS:
        raise ValueError(
            f"unknown dialogue format {format!r}; expected one of {', '.join(FORMATS)}"
        )
    skipped: Counter[str] = Counter()
    repaired: Counter[str] = Counter()
    records = read_records(path, skipped)
    format = format or detect(path, records)
    if format == "oasst-tree":
        dialogues = list(nested_dialogues(records, skipped, repaired))
    elif format == "oasst-flat":
        dialogues = list(flat_dialogues(records, skipped, repaired))
    else:
        dialogues = list(_linear(LINEAR[format], records, skipped, repaired))
    dialogues = _unique_ids(dialogues, repaired)
    pairs: dict[tuple[str, str, int], Pair] = {}
    for dialogue in dialogues:
        for pair in pairs_of(dialogue, path.name):
            pairs.setdefault(pair.key, pair)
    return LoadResult(path, format, dialogues, list(pairs.values()), skipped, repaired)
