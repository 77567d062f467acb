"""Linear chat formats: ShareGPT, OpenAI message lists, HH-RLHF transcripts and MT-Bench-101.

Each reader turns one record into one `Dialogue` or raises `BadRecord` with the reason to count.
"""

from __future__ import annotations

import re
from collections import Counter
from typing import Any

from induction.records import BadRecord, Dialogue, make_dialogue, role_of

HH_SPEAKER = re.compile(r"\n\n(Human|Assistant):[ \t]?")
"""A speaker tag of an HH-RLHF transcript (`"\\n\\nHuman: ..."`)."""


def _record_id(record: dict[str, Any], index: int) -> str:
    value = record.get("id")
    return (
        str(value) if isinstance(value, str | int) and not isinstance(value, bool) else str(index)
    )


def sharegpt(record: Any, index: int, repaired: Counter[str]) -> Dialogue:
    """Read `{id, conversations: [{from, value}]}`; the id defaults to the record's index."""
    if not isinstance(record, dict) or not isinstance(record.get("conversations"), list):
        raise BadRecord("missing fields")
    raw = []
    for msg in record["conversations"]:
        if not isinstance(msg, dict) or "from" not in msg:
            raise BadRecord("missing fields")
        raw.append((role_of(msg["from"]), msg.get("value"), None))
    return make_dialogue(_record_id(record, index), raw, repaired)


def _content(value: Any) -> Any:
    """Message content as text; a list of content parts keeps only its text parts."""
    if isinstance(value, list):
        parts = [p.get("text") for p in value if isinstance(p, dict) and p.get("type") == "text"]
        return "\n".join(p for p in parts if isinstance(p, str))
    return value


def openai(record: Any, index: int, repaired: Counter[str]) -> Dialogue:
    """Read a message list, bare or as `{"messages": [...]}`; tool messages are not supported."""
    messages = record.get("messages") if isinstance(record, dict) else record
    if not isinstance(messages, list):
        raise BadRecord("missing fields")
    raw = []
    for msg in messages:
        if not isinstance(msg, dict) or "role" not in msg:
            raise BadRecord("missing fields")
        raw.append((role_of(msg["role"]), _content(msg.get("content")), None))
    record_id = _record_id(record, index) if isinstance(record, dict) else str(index)
    return make_dialogue(record_id, raw, repaired)


def hh(record: Any, index: int, repaired: Counter[str]) -> Dialogue:
    """Read the `chosen` transcript of an HH-RLHF row; the id is the row index."""
    chosen = record.get("chosen") if isinstance(record, dict) else None
    if not isinstance(chosen, str):
        raise BadRecord("missing fields")
    parts = HH_SPEAKER.split("\n\n" + chosen.lstrip(" \t\r\n"))
    if parts[0].strip() or len(parts) < 3:
        raise BadRecord("not a Human/Assistant transcript")
    speakers, texts = parts[1::2], parts[2::2]
    raw = [(role_of(s), t, None) for s, t in zip(speakers, texts, strict=True)]
    return make_dialogue(str(index), raw, repaired)


def mtbench101(record: Any, index: int, repaired: Counter[str]) -> Dialogue:
    """Read `{task, id, history: [{user, bot}]}`; the id is `"<task>-<id>"`."""
    if not isinstance(record, dict) or not isinstance(record.get("history"), list):
        raise BadRecord("missing fields")
    if "task" not in record or "id" not in record:
        raise BadRecord("missing fields")
    raw: list[tuple[Any, Any, None]] = []
    for step in record["history"]:
        if not isinstance(step, dict) or "user" not in step:
            raise BadRecord("missing fields")
        raw.append(("user", step["user"], None))
        if "bot" in step:
            raw.append(("assistant", step["bot"], None))
    return make_dialogue(f"{record['task']}-{record['id']}", raw, repaired)


LINEAR = {"sharegpt": sharegpt, "openai": openai, "hh": hh, "mtbench101": mtbench101}
"""Format name -> reader of one record."""
