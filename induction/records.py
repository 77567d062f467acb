"""The loaders' data model: turns, dialogues, (history, follow-up) pairs and load results.

A `Dialogue` always alternates user/assistant turns and starts with the user. Every user turn
after the first that follows an assistant answer yields one `Pair`: the material induction
extracts a strategy from. The opener yields none: it is not a follow-up.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

Role = Literal["user", "assistant"]

ROLE_ALIASES: dict[str, Role | None] = {
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
    "system": None,
    "developer": None,
}
"""Speaker names (lower-cased) mapped to a role; `None` marks a system message, which is dropped."""


@dataclass(frozen=True)
class Turn:
    """One message of a dialogue."""

    role: Role
    """Who speaks."""
    text: str
    """What was said, stripped of surrounding whitespace; never empty."""
    id: str | None = None
    """The message's own id in formats that have one (OpenAssistant), else `None`."""


@dataclass(frozen=True)
class Dialogue:
    """A linear conversation: turns alternate and the first is the user's."""

    record_id: str
    """Stable id of this dialogue within its source file."""
    turns: tuple[Turn, ...]
    """The turns; the last may be a user turn left without an answer."""


@dataclass(frozen=True)
class Pair:
    """One real follow-up: the history up to an assistant answer and the user's next instruction."""

    source: str
    """The source file's base name, e.g. `"en_100_tree.jsonl"`."""
    record_id: str
    """The follow-up message's own id where the format has message ids, else the dialogue's id."""
    turn: int
    """Index of the follow-up among the dialogue's user turns (the opener is 0)."""
    history: tuple[Turn, ...]
    """The dialogue up to and including the answer the user followed up on."""
    followup: str
    """The user's next instruction."""

    @property
    def answer(self) -> str:
        """The assistant answer the follow-up reacts to."""
        return self.history[-1].text

    @property
    def key(self) -> tuple[str, str, int]:
        """`(source, record_id, turn)`: unique within a load, stable across loads."""
        return (self.source, self.record_id, self.turn)


class NotDialogueFile(ValueError):
    """A file that holds no dialogues at all; `str()` is one line starting with the path."""

    def __init__(self, path: str | Path, reason: str) -> None:
        """Build the message `"<path>: not a dialogue file (<reason>)"`, folded onto one line."""
        self.path = Path(path)
        self.reason = " ".join(reason.split())
        super().__init__(f"{path}: not a dialogue file ({self.reason})")


class BadRecord(ValueError):
    """One record that cannot be used; its message is the reason counted in `skipped`."""


@dataclass
class LoadResult:
    """What `load` read from one file."""

    path: Path
    """The file read."""
    format: str
    """One of `FORMATS`."""
    dialogues: list[Dialogue]
    """The usable dialogues, in file order."""
    pairs: list[Pair]
    """Every dialogue's pairs, deduplicated by `Pair.key` (first occurrence kept)."""
    skipped: Counter[str]
    """Reason -> number of records (or tree messages) skipped for it."""
    repaired: Counter[str] = field(default_factory=Counter)
    """Reason -> number of dialogues kept after a repair (consecutive same-role turns merged)."""


def role_of(name: object) -> Role | None:
    """Map a speaker name to a role (`None` for system messages).

    Raises:
        BadRecord: The name is not a known speaker.
    """
    if not isinstance(name, str) or name.strip().lower() not in ROLE_ALIASES:
        raise BadRecord("unknown role")
    return ROLE_ALIASES[name.strip().lower()]


def make_dialogue(
    record_id: str,
    raw: Iterable[tuple[Role | None, object, str | None]],
    repaired: Counter[str] | None = None,
) -> Dialogue:
    """Validate `(role, text, id)` triples into a `Dialogue`.

    System turns (role `None`) are dropped; consecutive turns of one role are merged (their texts
    joined by a blank line, the first id kept), which is counted in `repaired`.

    Raises:
        BadRecord: A text is missing or empty, there are no turns, or the assistant speaks first.
    """
    turns: list[Turn] = []
    merged = False
    for role, text, msg_id in raw:
        if role is None:
            continue
        if not isinstance(text, str):
            raise BadRecord("missing text")
        if not text.strip():
            raise BadRecord("empty text")
        if turns and turns[-1].role == role:
            last = turns[-1]
            turns[-1] = Turn(role, f"{last.text}\n\n{text.strip()}", last.id)
            merged = True
        else:
            turns.append(Turn(role, text.strip(), msg_id))
    if not turns:
        raise BadRecord("no turns")
    if turns[0].role != "user":
        raise BadRecord("starts with assistant")
    if merged and repaired is not None:
        repaired["merged consecutive same-role turns"] += 1
    return Dialogue(record_id, tuple(turns))


def pairs_of(dialogue: Dialogue, source: str) -> list[Pair]:
    """List the dialogue's follow-up pairs: one per user turn after the opener.

    A user turn yields a pair only when an assistant answer precedes it, so the opener never does.

    Args:
        dialogue: The dialogue (normally alternating and starting with the user).
        source: The source file's base name, stored in each pair.
    """
    pairs = []
    users = 0
    for pos, turn in enumerate(dialogue.turns):
        if turn.role != "user":
            continue
        users += 1
        if users == 1 or dialogue.turns[pos - 1].role != "assistant":
            continue
        pairs.append(
            Pair(
                source=source,
                record_id=turn.id if turn.id is not None else dialogue.record_id,
                turn=users - 1,
                history=dialogue.turns[:pos],
                followup=turn.text,
            )
        )
    return pairs
