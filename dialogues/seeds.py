"""Seed dialogues: load a file in one of the common chat shapes and validate it.

Accepted shapes: an OpenAI message list (bare or under `"messages"`), a ShareGPT record
(`"conversations"` with `from`/`value`, optionally wrapped in a one-element list), or a bare
opening question (a JSON string or a plain-text file). Messages are read by the one chat reader
(`dialogues.formats`: its role aliases, its joining of content parts). Every failure is a
`SeedError` whose message is one line that starts with the file name, fit to show a user as is.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Annotated, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationError,
    model_validator,
)

from dialogues.errors import InputError
from dialogues.formats import BadRecord, parse_record
from dialogues.text import display_path, is_blank, parse_json

Role = Literal["user", "assistant"]

TEXT_SUFFIXES = frozenset({".txt", ".md"})
"""Files with these suffixes are always read as a plain-text opening question."""

MAX_SEED_BYTES = 1_048_576
"""Largest seed file `load_seed` reads (1 MiB); a larger one is refused before reading."""

MAX_MESSAGE_CHARS = 32_000
"""Longest seed message, in characters (about 8k tokens); a longer one is refused."""

SHAPES_HINT = (
    'expected an OpenAI message list, {"messages": [...]}, '
    'a ShareGPT {"conversations": [...]} or an opening question'
)


class SeedError(InputError, ValueError):
    """A seed that cannot be used; `str()` is a one-line message starting with the source."""

    def __init__(self, source: str, reason: str) -> None:
        """Build the message `"<source>: <reason>"`, folded onto one line."""
        self.source = source
        self.reason = " ".join(reason.split())
        super().__init__(f"{source}: {self.reason}")


class SeedMessage(BaseModel):
    """One turn of a seed dialogue."""

    model_config = ConfigDict(frozen=True)

    role: Role
    content: Annotated[str, StringConstraints(strip_whitespace=True, min_length=1)]


class Seed(BaseModel):
    """A validated seed: user/assistant turns that alternate, starting with the user."""

    model_config = ConfigDict(frozen=True)

    messages: list[SeedMessage] = Field(min_length=1)
    """The dialogue turns, without any system message."""
    system: str | None = None
    """The leading system message's text, if the seed had one."""
    source: str
    """Where the seed came from (its file path, or a label such as `seeds.jsonl:12`)."""

    @model_validator(mode="after")
    def _roles_alternate(self) -> Seed:
        bad = first_misplaced_turn([m.role for m in self.messages])
        if bad is not None:
            raise ValueError(_alternation_reason(bad, self.messages[bad].role, bad + 1))
        return self

    @property
    def ends_with_user(self) -> bool:
        """Whether the last turn is the user's, so the next turn is the assistant's."""
        return self.messages[-1].role == "user"

    def to_openai_messages(self, *, include_system: bool = True) -> list[dict[str, str]]:
        """Return the seed as OpenAI-style `{"role", "content"}` dicts."""
        turns = [{"role": m.role, "content": m.content} for m in self.messages]
        if include_system and self.system:
            return [{"role": "system", "content": self.system}, *turns]
        return turns


def first_misplaced_turn(roles: list[str]) -> int | None:
    """Return the 0-based index of the first role breaking user/assistant alternation, or None."""
    for i, role in enumerate(roles):
        if role != ("user" if i % 2 == 0 else "assistant"):
            return i
    return None


def _alternation_reason(index: int, role: str, number: int) -> str:
    if index == 0:
        return f"message {number} has role '{role}'; a seed must start with a user message"
    expected = "user" if index % 2 == 0 else "assistant"
    return (
        f"message {number} has role '{role}' but '{expected}' was expected "
        "(turns must alternate user/assistant)"
    )


def load_seed(path: str | Path) -> Seed:
    r"""Read and validate a seed file.

    Args:
        path: A `.json` seed in any accepted shape, or a plain-text file holding one question.

    Returns:
        The validated seed; `source` is the path, bytes that are not UTF-8 shown as `\xNN`.

    Raises:
        SeedError: The file cannot be read, is larger than `MAX_SEED_BYTES`, is not valid JSON,
            or is not a usable seed.
    """
    source = display_path(path)
    text = _read_text(Path(path), source)
    stripped = text.strip()
    if is_blank(stripped):
        raise SeedError(source, "the seed is empty")
    if Path(path).suffix.lower() in TEXT_SUFFIXES:
        return parse_seed(stripped, source)
    try:
        data = parse_json(stripped)
    except json.JSONDecodeError as exc:
        if stripped[0] in "{[":
            raise SeedError(
                source, f"invalid JSON at line {exc.lineno} column {exc.colno}: {exc.msg}"
            ) from None
        data = stripped
    return parse_seed(data, source)


def _read_text(path: Path, source: str) -> str:
    try:
        size = os.stat(path).st_size
        if size > MAX_SEED_BYTES and path.is_file():
            raise SeedError(
                source,
                f"{size} bytes; a seed file holds at most {MAX_SEED_BYTES} (1 MiB); "
                "use `run.py batch` for many seeds",
            )
        raw = path.read_bytes()
    except FileNotFoundError:
        raise SeedError(source, "file not found") from None
    except IsADirectoryError:
        raise SeedError(source, "is a directory, not a seed file") from None
    except PermissionError:
        raise SeedError(source, "permission denied") from None
    except OSError as exc:
        raise SeedError(source, f"cannot read file: {exc.strerror or exc}") from None
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise SeedError(source, f"not UTF-8 text (bad byte at offset {exc.start})") from None
    if "\x00" in text:
        raise SeedError(source, "binary file, not a seed (contains NUL bytes)")
    return text


def parse_seed(data: object, source: str) -> Seed:
    """Validate an already-parsed seed object (for batches read from JSONL or a dataset).

    Args:
        data: A message list, a `{"messages"}` or `{"conversations"}` record, a one-element list
            holding such a record, or a string holding an opening question.
        source: A label for messages, such as `"seeds.jsonl:12"`.

    Returns:
        The validated seed. Message numbers in errors are 1-based positions in the input list.

    Raises:
        SeedError: The object is not a usable seed.
    """
    if isinstance(data, str):
        if is_blank(data):
            raise SeedError(source, "the seed is empty")
        data = [{"role": "user", "content": data}]
    record, format = _record(data, source)
    try:
        chat = parse_record(record, format)
    except BadRecord as bad:
        raise SeedError(source, str(bad)) from None
    system = chat.system
    messages: list[dict[str, str]] = []
    numbers: list[int] = []
    for number, message in enumerate(chat.messages, start=1):
        if len(message.text) > MAX_MESSAGE_CHARS:
            raise SeedError(
                source,
                f"message {number} is {len(message.text)} characters; "
                f"the limit is {MAX_MESSAGE_CHARS}",
            )
        if message.role == "system":
            if number != 1 or system is not None:
                raise SeedError(
                    source, f"message {number} has role 'system'; only the first message may be one"
                )
            system = message.text or None
            continue
        messages.append({"role": message.role, "content": message.text})
        numbers.append(number)
    if not messages:
        raise SeedError(source, "the seed has no user or assistant messages")
    bad = first_misplaced_turn([m["role"] for m in messages])
    if bad is not None:
        raise SeedError(source, _alternation_reason(bad, messages[bad]["role"], numbers[bad]))
    try:
        return Seed(messages=messages, system=system, source=source)
    except ValidationError as exc:
        raise SeedError(source, _condense(exc, numbers)) from None


def _record(data: object, source: str) -> tuple[object, str]:
    """Find the record and its format (`openai` or `sharegpt`) inside any accepted shape."""
    if isinstance(data, list) and len(data) == 1 and isinstance(data[0], dict):
        if "conversations" in data[0] or "messages" in data[0]:
            data = data[0]
    format = "openai"
    items = data
    if isinstance(data, dict):
        key = next((k for k in ("messages", "conversations") if k in data), None)
        if key is None:
            raise SeedError(source, f"not a seed: {SHAPES_HINT}")
        format = "sharegpt" if key == "conversations" else "openai"
        items = data[key]
        if not isinstance(items, list):
            raise SeedError(source, f"'{key}' must be a list of messages")
    if not isinstance(items, list):
        raise SeedError(source, f"not a seed: {SHAPES_HINT}")
    if not items:
        raise SeedError(source, "the seed is empty")
    return data, format


def _condense(exc: ValidationError, numbers: list[int]) -> str:
    """Turn the first pydantic error into a short phrase naming the message it concerns."""
    error = exc.errors()[0]
    loc = error.get("loc", ())
    where = ".".join(str(p) for p in loc) or "seed"
    if len(loc) >= 2 and loc[0] == "messages" and isinstance(loc[1], int) and loc[1] < len(numbers):
        where = f"message {numbers[loc[1]]}" + "".join(f" {p}" for p in loc[2:])
    return f"{where}: {error.get('msg', 'invalid')}"
