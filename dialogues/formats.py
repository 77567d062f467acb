"""Foreign chat files read into neutral dialogues: the one reader of seeds, induction and eval.

Formats (`FORMATS`): OpenAI message lists (bare or `{"messages": [...]}`), ShareGPT
(`{"conversations": [{"from", "value"}]}`), OpenAssistant message trees (nested `replies`) and flat
lists (`parent_message_id`), HH-RLHF transcripts (`chosen`), MT-Bench-101 (`history`),
SimulatorArena (`user_queries`, `ai_responses`, `why_stop`) and MirrorBench (`turns` of
`{role, content}`), in JSON or JSON Lines, optionally gzip-compressed. A record becomes a `Chat`
of `Message`s: a canonical role (one `ROLE_ALIASES` table for every format), the text (content
parts joined by `join_content`, stripped, lone surrogates replaced) and, in OpenAssistant files,
the message id.

Where its users differ, the reader takes a parameter:
- `on_bad_record`: `"skip"` counts a bad line or record in `skipped` under its reason and goes on
  (the loaders, seed sources); `"raise"` stops at it with a `ChatFileError`, one line naming the
  file and the line (evaluation inputs).
- `keep_system`: system messages stay where they are (seeds, evaluation) or are dropped (induction).

Who ended a dialogue (`Chat.ended_by_user`): only SimulatorArena says the user did (its people
stopped by themselves and said why, `why_stop`); every other format's dialogue ends where its source
cut it (an OpenAssistant tree where the tree stops, MirrorBench's OpenAssistant paths likewise, an
HH-RLHF or RealHumanEval transcript where the collection ended it) and is not counted as an ending.

An OpenAssistant tree gives one chat per path: it branches into every user reply, since each is a
real follow-up. Among the assistant replies to one message it follows every reply some user
followed up on (a follow-up only makes sense after the answer its author actually saw), and when
none was followed up, only the best-ranked one (lowest `rank`; unranked replies come after ranked
ones, in file order). So every user follow-up in the file is on exactly one path, and dead-end
alternative answers add no near-duplicate dialogues.
"""

from __future__ import annotations

import gzip
import json
import re
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal, NamedTuple

from dialogues.errors import InputError
from dialogues.text import is_blank, parse_json, scrub

Role = Literal["user", "assistant", "system"]
OnBadRecord = Literal["skip", "raise"]

ROLE_ALIASES: dict[str, Role] = {
    "user": "user",
    "human": "user",
    "prompter": "user",
    "assistant": "assistant",
    "gpt": "assistant",
    "chatgpt": "assistant",
    "bing": "assistant",
    "bard": "assistant",
    "model": "assistant",
    "bot": "assistant",
    "system": "system",
    "developer": "system",
}
"""Role (OpenAI), speaker (ShareGPT `from`, HH-RLHF tag) and OASST role names, lower-cased."""

FORMATS = (
    "sharegpt",
    "openai",
    "oasst-tree",
    "oasst-flat",
    "hh",
    "mtbench101",
    "simulatorarena",
    "mirrorbench",
)
"""The chat formats `read_chats` reads."""

LINEAR_FORMATS = ("sharegpt", "openai", "hh", "mtbench101", "simulatorarena", "mirrorbench")
"""The formats with one dialogue per record, which `parse_record` reads."""

GZIP_MAGIC = b"\x1f\x8b"

HH_SPEAKER = re.compile(r"\n\n(Human|Assistant):[ \t]?")
"""A speaker tag of an HH-RLHF transcript (`"\\n\\nHuman: ..."`)."""

ID_FIELDS = ("message_id", "user_message_id", "task_message_id", "id")
"""Candidate own-id fields of a flat OASST message; the one the parent ids point at wins."""

PARENT_FIELDS = ("parent_message_id", "parent_id")
"""Candidate parent-id fields of a flat OASST message."""


@dataclass(frozen=True)
class Message:
    """One message of a dialogue."""

    role: Role
    """Who speaks."""
    text: str
    """What was said, stripped; never empty, except for a system message."""
    id: str | None = None
    """The message's own id in formats that have one (OpenAssistant), else `None`."""


@dataclass(frozen=True)
class Chat:
    """One dialogue of a file, as written: roles are canonical, turns need not alternate."""

    id: str | None
    """The record's own id (`"<task>-<id>"` in MT-Bench-101, `"<tree>/<leaf>"` for a tree path);
    `None` when it has none (`read_chats` then uses the record's index)."""
    messages: tuple[Message, ...]
    """The messages in order, system messages included when kept."""
    system: str | None = None
    """The record's own `system` field (a system prompt written beside the messages), if any."""
    ended_by_user: bool = False
    """The data says the user ended the conversation here (SimulatorArena's `why_stop`); False
    where the source cut it or does not say (see the module's notes)."""


class Record(NamedTuple):
    """One record of a file, and where it stands."""

    index: int
    """Position among the file's records (JSON Lines: among its non-blank lines, bad ones too)."""
    line: int | None
    """The 1-based line of a JSON Lines record; `None` in a whole JSON document."""
    data: Any
    """The parsed JSON value."""


@dataclass
class ChatFile:
    """What `read_chats` read from one file."""

    path: Path
    format: str
    """One of `FORMATS`."""
    chats: list[Chat]
    """The readable dialogues, in file order (a tree gives one per path)."""
    skipped: Counter[str] = field(default_factory=Counter)
    """Reason -> bad lines, records or tree messages skipped for it."""


class BadRecord(InputError, ValueError):
    """A record (or message) that cannot be read; `str()` is one line naming the message at fault.

    `reason` is the short phrase the loaders count it under (`"unknown role"`, `"empty text"`...).
    """

    def __init__(self, reason: str, detail: str | None = None) -> None:
        """Keep `reason`; the message is `detail` (default: the reason)."""
        self.reason = reason
        super().__init__(" ".join((detail or reason).split()))


class NotDialogueFile(InputError, ValueError):
    """A file that holds no dialogues at all; `str()` is one line starting with the path."""

    def __init__(self, path: str | Path, reason: str) -> None:
        """Build the message `"<path>: not a dialogue file (<reason>)"`, folded onto one line."""
        self.path = Path(path)
        self.reason = " ".join(reason.split())
        super().__init__(f"{path}: not a dialogue file ({self.reason})")


class ChatFileError(InputError, ValueError):
    """A bad line or record met with `on_bad_record="raise"`.

    `str()` is one line: `"<path>: line <n>: <reason>"`, or `record <n>` in a whole JSON document.
    """

    def __init__(self, path: str | Path, record: Record, reason: str) -> None:
        """Name the file and where in it `record` stands."""
        where = f"line {record.line}" if record.line is not None else f"record {record.index + 1}"
        super().__init__(f"{path}: {where}: {' '.join(reason.split())}")


# --- messages -----------------------------------------------------------------------------------


def role_of(name: object, number: int | None = None) -> Role:
    """Map a role or speaker name to its canonical role.

    Raises:
        BadRecord: The name is not in `ROLE_ALIASES` (reason `"unknown role"`).
    """
    key = name.strip().lower() if isinstance(name, str) else None
    if key not in ROLE_ALIASES:
        raise BadRecord(
            "unknown role",
            f"{_message_name(number)} has role {name!r} (unknown role {name!r}): expected user, "
            "assistant or system (ShareGPT: human, gpt or system)",
        )
    return ROLE_ALIASES[key]


def join_content(content: object) -> str | None:
    """Return message content as text: a string, or the texts of a content-part list.

    Parts are strings or objects with a `text` string (OpenAI `{"type": "text", "text": ...}`);
    others (images...) are left out and blank texts dropped; the rest are joined by newlines.
    `None` when the content is neither a string nor such a list.
    """
    if isinstance(content, str):
        return content
    if not isinstance(content, list):
        return None
    texts = []
    for part in content:
        if isinstance(part, str):
            texts.append(part)
        elif isinstance(part, dict):
            if isinstance(part.get("text"), str):
                texts.append(part["text"])
        else:
            return None
    return "\n".join(t for t in texts if not is_blank(t))


def _message_text(content: object, role: Role, number: int | None = None) -> str:
    """Return a message's text, stripped and scrubbed ('' for a blank system message).

    Raises:
        BadRecord: The content is not text (`"missing text"`), or blank (`"empty text"`).
    """
    text = join_content(content)
    if text is None:
        raise BadRecord(
            "missing text",
            f"{_message_name(number)} content must be text or a list of text parts",
        )
    if is_blank(text):
        if role == "system":
            return ""
        raise BadRecord("empty text", f"{_message_name(number)} ({role}) has empty content")
    return scrub(text.strip())


def _parse_messages(items: list[Any], *, keep_system: bool = True) -> tuple[Message, ...]:
    """Read a list of OpenAI `{role, content}` or ShareGPT `{from, value}` messages.

    Errors name the message by its 1-based position in `items`.

    Raises:
        BadRecord: A message is not an object, has no or an unknown role, or no text.
    """
    messages = []
    for number, item in enumerate(items, start=1):
        if not isinstance(item, dict):
            raise BadRecord(
                "missing fields",
                f"message {number} is not an object: expected an OpenAI message list "
                "or ShareGPT conversations",
            )
        name = item.get("role", item.get("from"))
        if name is None:
            raise BadRecord(
                "missing fields", f"message {number} has no 'role' (or ShareGPT 'from')"
            )
        role = role_of(name, number)
        text = _message_text(item.get("content", item.get("value")), role, number)
        if keep_system or role != "system":
            messages.append(Message(role, text))
    return tuple(messages)


def _message_name(number: int | None) -> str:
    return f"message {number}" if number is not None else "a message"


# --- linear records -----------------------------------------------------------------------------


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
    if isinstance(record.get("user_queries"), list) and "ai_responses" in record:
        return "simulatorarena"
    turns = record.get("turns")
    if isinstance(turns, list) and turns and isinstance(turns[0], dict) and "role" in turns[0]:
        return "mirrorbench"
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


def parse_record(record: Any, format: str, *, keep_system: bool = True) -> Chat:
    """Read one record of a linear format (one of `LINEAR_FORMATS`) into a `Chat`.

    Raises:
        BadRecord: The record has not that format's shape, or a message is unreadable.
    """
    if format == "openai" and isinstance(record, list):
        return Chat(None, _parse_messages(record, keep_system=keep_system))
    if format in ("sharegpt", "openai"):
        key = "conversations" if format == "sharegpt" else "messages"
        if not isinstance(record, dict) or not isinstance(record.get(key), list):
            raise BadRecord("missing fields", f"no '{key}' list")
        messages = _parse_messages(record[key], keep_system=keep_system)
        system = record.get("system")
        system = scrub(system.strip()) if isinstance(system, str) and not is_blank(system) else None
        return Chat(_own_id(record), messages, system)
    if format == "hh":
        return Chat(None, _hh(record))
    if format == "mtbench101":
        return _mtbench101(record)
    if format == "simulatorarena":
        return _simulatorarena(record)
    if format == "mirrorbench":
        if not isinstance(record, dict) or not isinstance(record.get("turns"), list):
            raise BadRecord("missing fields", "no 'turns' list")
        messages = _parse_messages(record["turns"], keep_system=keep_system)
        own = record.get("conversation_id")
        return Chat(str(own) if isinstance(own, str | int) else None, messages)
    raise ValueError(f"{format!r} is not one of {', '.join(LINEAR_FORMATS)}")


def _own_id(record: dict[str, Any]) -> str | None:
    value = record.get("id")
    return str(value) if isinstance(value, str | int) and not isinstance(value, bool) else None


def _hh(record: Any) -> tuple[Message, ...]:
    """The `chosen` transcript of an HH-RLHF row."""
    chosen = record.get("chosen") if isinstance(record, dict) else None
    if not isinstance(chosen, str):
        raise BadRecord("missing fields", "no 'chosen' transcript")
    parts = HH_SPEAKER.split("\n\n" + chosen.lstrip(" \t\r\n"))
    if parts[0].strip() or len(parts) < 3:
        raise BadRecord("not a Human/Assistant transcript")
    messages = []
    for number, (speaker, text) in enumerate(zip(parts[1::2], parts[2::2], strict=True), start=1):
        role = role_of(speaker, number)
        messages.append(Message(role, _message_text(text, role, number)))
    return tuple(messages)


def _simulatorarena(record: Any) -> Chat:
    """Read `{user_queries, ai_responses, why_stop}`: reply i answers query i; the user ended it.

    A conversation whose person gave a reason for stopping (`why_stop`) is marked as ended by the
    user; without one it is a cut like any other.
    """
    if not isinstance(record, dict):
        raise BadRecord("missing fields", "not an object")
    queries, replies = record.get("user_queries"), record.get("ai_responses")
    if not isinstance(queries, list) or not isinstance(replies, list):
        raise BadRecord("missing fields", "no 'user_queries' and 'ai_responses' lists")
    if len(replies) > len(queries):
        raise BadRecord("missing fields", "more 'ai_responses' than 'user_queries'")
    items: list[dict[str, Any]] = []
    for number, query in enumerate(queries):
        items.append({"role": "user", "content": query})
        if number < len(replies):
            items.append({"role": "assistant", "content": replies[number]})
    why = record.get("why_stop")
    own = record.get("workerId")
    return Chat(
        str(own) if isinstance(own, str) else None,
        _parse_messages(items),
        ended_by_user=isinstance(why, str) and not is_blank(why),
    )


def _mtbench101(record: Any) -> Chat:
    """`{task, id, history: [{user, bot}]}`; the id is `"<task>-<id>"`."""
    if not isinstance(record, dict) or not isinstance(record.get("history"), list):
        raise BadRecord("missing fields", "no 'history' list")
    if "task" not in record or "id" not in record:
        raise BadRecord("missing fields", "no 'task' and 'id'")
    messages = []
    for step in record["history"]:
        if not isinstance(step, dict) or "user" not in step:
            raise BadRecord("missing fields", "a history step has no 'user'")
        turns = [("user", step["user"])] + ([("assistant", step["bot"])] if "bot" in step else [])
        for role, content in turns:
            messages.append(Message(role, _message_text(content, role, len(messages) + 1)))
    return Chat(f"{record['task']}-{record['id']}", tuple(messages))


# --- OpenAssistant trees ------------------------------------------------------------------------


@dataclass
class _Node:
    """One message of a tree, validated."""

    message: Message
    rank: float | None
    children: list[_Node] = field(default_factory=list)

    def rank_key(self, order: int) -> tuple[bool, float, int]:
        """Sort key: ranked before unranked, lower rank first, then file order."""
        return (self.rank is None, self.rank or 0.0, order)


def _node(msg: Any, id_fields: tuple[str, ...] = ID_FIELDS) -> _Node:
    """Validate one tree message's own fields (not its replies), its id read from `id_fields`.

    Raises:
        BadRecord: The message is deleted, has no id or text, or an unknown role.
    """
    if not isinstance(msg, dict):
        raise BadRecord("missing fields", "a tree message is not an object")
    if msg.get("deleted") is True:
        raise BadRecord("deleted message")
    msg_id = next((msg[f] for f in id_fields if msg.get(f) is not None), None)
    role = role_of(msg.get("role"))
    if msg_id is None or role == "system" or not isinstance(msg.get("text"), str):
        raise BadRecord("missing fields", "a tree message has no id, user role or text")
    rank = msg.get("rank")
    rank = float(rank) if isinstance(rank, int | float) and not isinstance(rank, bool) else None
    return _Node(Message(role, _message_text(msg["text"], role), str(msg_id)), rank)


def _leads_to_user(node: _Node) -> bool:
    return any(c.message.role == "user" or _leads_to_user(c) for c in node.children)


def _followed(node: _Node) -> list[_Node]:
    """The children the path rule keeps, in file order."""
    answers = [c for c in node.children if c.message.role == "assistant"]
    kept = [c for c in answers if _leads_to_user(c)]
    if not kept and answers:
        kept = [min(enumerate(answers), key=lambda ia: ia[1].rank_key(ia[0]))[1]]
    return [c for c in node.children if c.message.role == "user" or c in kept]


def _paths(node: _Node, prefix: tuple[Message, ...] = ()) -> Iterator[tuple[Message, ...]]:
    path = (*prefix, node.message)
    children = _followed(node)
    if not children:
        yield path
    for child in children:
        yield from _paths(child, path)


def _tree_chats(root: _Node, tree_id: str) -> list[Chat]:
    """One chat per root-to-leaf path of the pruned tree, with id `"<tree id>/<leaf id>"`.

    Raises:
        BadRecord: The tree starts with an assistant message.
    """
    if root.message.role != "user":
        raise BadRecord("starts with assistant")
    return [Chat(f"{tree_id}/{path[-1].id}", path) for path in _paths(root)]


# --- files --------------------------------------------------------------------------------------


def _read_text(path: Path) -> str:
    """Read the file as UTF-8 text, gunzipping it when its content is gzip (whatever its name).

    Raises:
        NotDialogueFile: The file is not UTF-8 text (or not valid gzip).
        OSError: The file cannot be read.
    """
    data = path.read_bytes()
    try:
        if data.startswith(GZIP_MAGIC):
            data = gzip.decompress(data)
        return data.decode("utf-8-sig")
    except (OSError, EOFError, UnicodeDecodeError) as err:
        raise NotDialogueFile(path, f"not UTF-8 JSON text: {err}") from None


def read_records(
    path: Path, *, on_bad_record: OnBadRecord = "skip", skipped: Counter[str] | None = None
) -> list[Record]:
    """Parse a JSON or JSON Lines file (gzip or plain) into records.

    A whole-file JSON list gives one record per element (unless it is one OpenAI message list),
    any other JSON value one record; otherwise the file is read as JSON Lines. A line that is not
    JSON is counted in `skipped` as `"invalid JSON"` (`"skip"`), or raises `ChatFileError`
    (`"raise"`), except a partial last line after complete ones (a writer killed mid-line).

    Raises:
        NotDialogueFile: The file is empty or not text, or (`"skip"`) its first line is not JSON.
        ChatFileError: A line is not JSON (`"raise"`).
        OSError: The file cannot be read.
    """
    text = _read_text(path)
    if not text.strip():
        raise NotDialogueFile(path, "empty file")
    try:
        whole = parse_json(text)
    except json.JSONDecodeError:
        pass
    else:
        if isinstance(whole, list) and not _is_message(whole[:1] and whole[0]):
            return [Record(i, None, r) for i, r in enumerate(whole)]
        return [Record(0, None, whole)]
    records: list[Record] = []
    lines = text.splitlines()
    index = 0
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            records.append(Record(index, number, parse_json(line)))
        except json.JSONDecodeError as exc:
            if on_bad_record == "raise":
                if number == len(lines) and not text.endswith("\n") and records:
                    break
                where = Record(index, number, None)
                raise ChatFileError(path, where, f"invalid JSON ({exc.msg})") from None
            if index == 0:
                raise NotDialogueFile(path, "not JSON or JSON Lines") from None
            if skipped is not None:
                skipped["invalid JSON"] += 1
        index += 1
    return records


def detect(path: Path, records: list[Record]) -> str:
    """The format of the file's first record.

    Raises:
        NotDialogueFile: The first record has no dialogue shape (single questions included).
    """
    if not records:
        raise NotDialogueFile(path, "no records")
    first = records[0].data
    found = format_of(first)
    if found is None:
        raise NotDialogueFile(path, f"first record is {_keys(first)}")
    return found


def read_chats(
    path: str | Path,
    format: str | None = None,
    *,
    keep_system: bool = True,
    on_bad_record: OnBadRecord = "skip",
    skipped: Counter[str] | None = None,
) -> ChatFile:
    """Read every dialogue of a chat file; an OpenAssistant tree gives one per path.

    Args:
        path: A JSON or JSON Lines file, optionally gzip-compressed.
        format: One of `FORMATS`; sniffed from the first record when `None`.
        keep_system: Keep system messages in place, or drop them.
        on_bad_record: `"skip"`: count a bad line, record or tree message in `skipped` under its
            reason and go on; `"raise"`: stop at it with a `ChatFileError`.
        skipped: Where to count; a new counter when `None` (`ChatFile.skipped` is this one).

    Raises:
        NotDialogueFile: The file holds no dialogue shape (only when the format is sniffed).
        ChatFileError: A bad line or record, with `on_bad_record="raise"`.
        ValueError: `format` is not one of `FORMATS`.
        OSError: The file cannot be read.
    """
    path = Path(path)
    if format is not None and format not in FORMATS:
        raise ValueError(
            f"unknown dialogue format {format!r}; expected one of {', '.join(FORMATS)}"
        )
    skipped = Counter() if skipped is None else skipped
    records = read_records(path, on_bad_record=on_bad_record, skipped=skipped)
    format = format or detect(path, records)

    def bad(record: Record, error: BadRecord) -> None:
        if on_bad_record == "raise":
            raise ChatFileError(path, record, str(error)) from None
        skipped[error.reason] += 1

    if format == "oasst-tree":
        chats = list(_nested_chats(records, bad))
    elif format == "oasst-flat":
        chats = list(_flat_chats(records, bad))
    else:
        chats = []
        for record in records:
            try:
                chat = parse_record(record.data, format, keep_system=keep_system)
            except BadRecord as error:
                bad(record, error)
                continue
            chats.append(chat if chat.id is not None else replace(chat, id=str(record.index)))
    return ChatFile(path, format, chats, skipped)


def _nested_chats(records: list[Record], bad: Any) -> Iterator[Chat]:
    """Read OASST tree rows `{message_tree_id, prompt: {message_id, text, role, rank, replies}}`."""

    def build(msg: Any, record: Record) -> _Node | None:
        """A node and its valid replies; an invalid message is counted, its subtree dropped."""
        try:
            node = _node(msg)
        except BadRecord as error:
            bad(record, error)
            return None
        replies = msg.get("replies") or []
        for reply in replies if isinstance(replies, list) else []:
            child = build(reply, record)
            if child is not None:
                node.children.append(child)
        return node

    for record in records:
        row = record.data
        prompt = row.get("prompt") if isinstance(row, dict) else None
        if not isinstance(prompt, dict):
            bad(record, BadRecord("missing fields", "no 'prompt' tree"))
            continue
        root = build(prompt, record)
        if root is None:
            continue
        try:
            yield from _tree_chats(root, str(row.get("message_tree_id") or root.message.id))
        except BadRecord as error:
            bad(record, error)


def _own_id_field(messages: list[Any]) -> str:
    """Pick the field holding a flat message's own id: the one most parent ids point at."""
    parents = {m.get(f) for m in messages if isinstance(m, dict) for f in PARENT_FIELDS} - {None}
    present = [f for f in ID_FIELDS if any(isinstance(m, dict) and f in m for m in messages)]
    if not present:
        return ID_FIELDS[0]
    return max(
        present, key=lambda f: len(parents & {m.get(f) for m in messages if isinstance(m, dict)})
    )


def _flat_chats(records: list[Record], bad: Any) -> Iterator[Chat]:
    """Read flat messages `{<id>, parent_message_id, text, role}`, rebuilding trees by parent id.

    A message below a skipped one is dropped with it; one whose parent is absent from the file is
    counted as `"missing parent"`.
    """
    id_field = _own_id_field([r.data for r in records])
    nodes: dict[str, _Node] = {}
    parent_of: dict[str, tuple[str | None, Record]] = {}
    dropped: set[str] = set()
    for record in records:
        msg = record.data
        try:
            node = _node(msg, (id_field,))
        except BadRecord as error:
            bad(record, error)
            if isinstance(msg, dict) and msg.get(id_field) is not None:
                dropped.add(str(msg[id_field]))
            continue
        parent = next((msg[f] for f in PARENT_FIELDS if msg.get(f) is not None), None)
        nodes[str(node.message.id)] = node
        parent_of[str(node.message.id)] = (None if parent is None else str(parent), record)
    roots = []
    for node_id, (parent, record) in parent_of.items():
        if parent is None:
            roots.append((nodes[node_id], record))
        elif parent in nodes:
            nodes[parent].children.append(nodes[node_id])
        elif parent not in dropped:
            missing = f"parent message {parent!r} is not in the file"
            bad(record, BadRecord("missing parent", missing))
    for root, record in roots:
        try:
            yield from _tree_chats(root, str(root.message.id))
        except BadRecord as error:
            bad(record, error)


def _is_message(record: object) -> bool:
    """Whether `record` is one OpenAI chat message (a whole-file list of them is one dialogue)."""
    return isinstance(record, dict) and "role" in record and "content" in record


def _keys(record: object) -> str:
    if isinstance(record, dict):
        return "a record with keys " + ", ".join(sorted(map(str, record))[:8])
    if isinstance(record, list):
        return "a list of " + (type(record[0]).__name__ if record else "nothing")
    return f"a {type(record).__name__}"
