"""The loaders' data model: turns, dialogues, (history, follow-up) pairs and load results.

A `Dialogue` always alternates user/assistant turns and starts with the user. Every user turn
after the first that follows an assistant answer yields one `Pair`: the material induction
extracts a strategy from. The opener yields none: it is not a follow-up.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from dialogues.formats import BadRecord, Chat, Message

Turn = Message
"""One message of a dialogue (`dialogues.formats.Message`): in a `Dialogue`, never a system one."""


@dataclass(frozen=True)
class Dialogue:
    """A linear conversation: turns alternate and the first is the user's."""

    record_id: str
    """Stable id of this dialogue within its source file."""
    turns: tuple[Turn, ...]
    """The turns; the last may be a user turn left without an answer."""
    ended_by_user: bool = False
    """The user ended the conversation after its last turn (`Chat.ended_by_user`); False where
    the source cut it or does not say."""


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


def make_dialogue(chat: Chat, repaired: Counter[str] | None = None) -> Dialogue:
    """Make a read chat (without system messages) a `Dialogue`.

    Consecutive turns of one role are merged (their texts joined by a blank line, the first id
    kept), which is counted in `repaired`.

    Raises:
        BadRecord: There are no turns, or the assistant speaks first.
    """
    turns: list[Turn] = []
    merged = False
    for turn in chat.messages:
        if turns and turns[-1].role == turn.role:
            last = turns[-1]
            turns[-1] = Turn(turn.role, f"{last.text}\n\n{turn.text}", last.id)
            merged = True
        else:
            turns.append(turn)
    if not turns:
        raise BadRecord("no turns")
    if turns[0].role != "user":
        raise BadRecord("starts with assistant")
    if merged and repaired is not None:
        repaired["merged consecutive same-role turns"] += 1
    return Dialogue(str(chat.id), tuple(turns), chat.ended_by_user)


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
