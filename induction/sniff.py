"""Read a JSON or JSON-Lines file (gzip or plain) into records and tell its dialogue format."""

from __future__ import annotations

import gzip
import json
from collections import Counter
from pathlib import Path
from typing import Any

from dialogues.text import parse_json
from induction.records import NotDialogueFile

GZIP_MAGIC = b"\x1f\x8b"

FORMATS = ("sharegpt", "openai", "oasst-tree", "oasst-flat", "hh", "mtbench101")
"""The dialogue formats `load` reads."""


def read_text(path: Path) -> str:
    """Read the file as UTF-8 text, gunzipping it when its content is gzip (whatever its name).

    Raises:
        NotDialogueFile: The file is not UTF-8 text (or not valid gzip).
    """
    data = path.read_bytes()
    try:
        if data.startswith(GZIP_MAGIC):
            data = gzip.decompress(data)
        return data.decode("utf-8-sig")
    except (OSError, EOFError, UnicodeDecodeError) as err:
        raise NotDialogueFile(path, f"not UTF-8 JSON text: {err}") from None


def read_records(path: Path, skipped: Counter[str] | None = None) -> list[tuple[int, Any]]:
    """Parse the file into `(index, record)` pairs.

    A whole-file JSON list gives one record per element (unless it is one OpenAI message list), any
    other JSON value one record; otherwise
    the file is read as JSON Lines, where the index counts non-blank lines, so it stays stable when
    a bad line is skipped (counted in `skipped` as `"invalid JSON"`).

    Raises:
        NotDialogueFile: The file is empty or its first record is not JSON.
    """
    text = read_text(path)
    if not text.strip():
        raise NotDialogueFile(path, "empty file")
    try:
        whole = parse_json(text)
    except json.JSONDecodeError:
        pass
    else:
        if isinstance(whole, list) and not _is_message(whole[:1] and whole[0]):
            return list(enumerate(whole))
        return [(0, whole)]
    records = []
    lines = [line for line in text.splitlines() if line.strip()]
    for index, line in enumerate(lines):
        try:
            records.append((index, parse_json(line)))
        except json.JSONDecodeError:
            if index == 0:
                raise NotDialogueFile(path, "not JSON or JSON Lines") from None
            if skipped is not None:
                skipped["invalid JSON"] += 1
    return records


def _is_message(record: object) -> bool:
    """Whether `record` is one OpenAI chat message (a whole-file list of them is one dialogue)."""
    return isinstance(record, dict) and "role" in record and "content" in record


def _keys(record: object) -> str:
    if isinstance(record, dict):
        return "a record with keys " + ", ".join(sorted(map(str, record))[:8])
    if isinstance(record, list):
        return "a list of " + (type(record[0]).__name__ if record else "nothing")
    return f"a {type(record).__name__}"


def format_of(record: object) -> str | None:
    """The format whose shape `record` has, or `None`."""
    if isinstance(record, list):
        return "openai" if record and _is_message(record[0]) else None
    if not isinstance(record, dict):
        return None
    if isinstance(record.get("conversations"), list):
        return "sharegpt"
    if isinstance(record.get("messages"), list):
        return "openai"
    if isinstance(record.get("prompt"), dict) and "replies" in record["prompt"]:
        return "oasst-tree"
    if "role" in record and "text" in record and any(k.startswith("parent") for k in record):
        return "oasst-flat"
    if isinstance(record.get("chosen"), str) and "Human:" in record["chosen"]:
        return "hh"
    history = record.get("history")
    if isinstance(history, list) and history and isinstance(history[0], dict):
        return "mtbench101" if "user" in history[0] else None
    return None


def detect(path: Path, records: list[tuple[int, Any]]) -> str:
    """The format of the file's first record.

    Raises:
        NotDialogueFile: The first record has no dialogue shape (single questions included).
    """
    if not records:
        raise NotDialogueFile(path, "no records")
    first = records[0][1]
    found = format_of(first)
    if found is None:
        raise NotDialogueFile(path, f"first record is {_keys(first)}")
    return found
