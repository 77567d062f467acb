"""Load real dialogues from any supported file and list their (history, follow-up) pairs.

`load` reads the file with the one chat reader (`dialogues.formats.read_chats`: format sniffed
from the first record, system messages dropped, bad records skipped and counted), makes each chat
an alternating `Dialogue` (merging same-role runs, skipping one the assistant opens) and returns
the dialogues with their pairs deduplicated by `Pair.key`. A file with no dialogue shape at all
(a CSV, single questions, unrelated JSON) raises `NotDialogueFile`.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import replace
from pathlib import Path

from dialogues.formats import (
    FORMATS,
    BadRecord,
    NotDialogueFile,
    detect,
    read_chats,
    read_records,
)
from induction.records import Dialogue, LoadResult, Pair, Turn, make_dialogue, pairs_of

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


def _unique_ids(dialogues: list[Dialogue], repaired: Counter[str]) -> list[Dialogue]:
    """Suffix repeated dialogue ids with `#<n>` so that every pair key stays unique."""
    seen: Counter[str] = Counter()
    unique = []
    for dialogue in dialogues:
        seen[dialogue.record_id] += 1
        if seen[dialogue.record_id] > 1:
            repaired["duplicate id renamed"] += 1
            renamed = f"{dialogue.record_id}#{seen[dialogue.record_id]}"
            dialogue = replace(dialogue, record_id=renamed)
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
    chats = read_chats(path, format, keep_system=False)
    repaired: Counter[str] = Counter()
    dialogues = []
    for chat in chats.chats:
        try:
            dialogues.append(make_dialogue(chat, repaired))
        except BadRecord as bad:
            chats.skipped[bad.reason] += 1
    dialogues = _unique_ids(dialogues, repaired)
    pairs: dict[tuple[str, str, int], Pair] = {}
    for dialogue in dialogues:
        for pair in pairs_of(dialogue, path.name):
            pairs.setdefault(pair.key, pair)
    return LoadResult(path, chats.format, dialogues, list(pairs.values()), chats.skipped, repaired)
