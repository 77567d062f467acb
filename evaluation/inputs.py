"""Dialogues to evaluate, normalised from our own documents or other tools' chat records.

Every input becomes an `EvalDialogue`: the whole message list plus one `EvalTurn` per *generated*
user instruction. In our `ideas-dialogue/1` documents those are the turns the graph grew (the last
`2 * len(turns)` messages) with their strategy, critic verdict and usage. A foreign dialogue
(OpenAI messages, ShareGPT, HH-RLHF or MT-Bench-101, read by the one chat reader,
`dialogues.formats`) has every user turn after the first counted as a generated follow-up and no
strategy, critic or usage data, so the metrics needing them report n/a, not zero.
Real follow-ups from `induction.loaders.load` become one-turn dialogues via `reference_dialogues`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from batch.store import DIALOGUES, MANIFEST, Skipped, iter_dialogues
from dialogues.formats import (
    LINEAR_FORMATS,
    ChatFileError,
    NotDialogueFile,
    Record,
    format_of,
    parse_record,
    read_records,
)
from dialogues.record import FORMAT
from dialogues.strategy_use import library_size
from induction.records import Pair

Message = dict[str, str]
"""One message as `{"role": "system" | "user" | "assistant", "content": str}`."""


class EvalInputError(ValueError):
    """A file with no dialogues we can evaluate; `str()` is one line starting with the path."""


@dataclass(frozen=True)
class Cost:
    """What the generated turns of one of our dialogues spent (the opening answer excluded)."""

    calls: int
    """LLM calls of every agent, in finished turns and in an unfinished last turn."""
    input_tokens: int
    """Prompt tokens of those calls."""
    evaluated_tokens: int
    """Prompt tokens the server evaluated: sent minus those it reported reused from its cache."""
    output_tokens: int
    """Completion tokens of those calls."""
    seconds: float
    """Seconds spent waiting for those calls."""
    drafts: int
    """Drafts judged by the critic, accepted or not."""
    rejected: int
    """Drafts the critic rejected."""
    accepted: int
    """Turns that were accepted and answered."""


@dataclass(frozen=True)
class EvalTurn:
    """One generated user instruction and what is known about how it was made."""

    position: int
    """Index of the instruction in `EvalDialogue.messages` (its history is everything before)."""
    instruction: str
    """The user instruction."""
    previous_answer: str | None
    """The assistant answer just before the instruction (None when a user message precedes it)."""
    answer: str | None = None
    """The assistant answer to the instruction (None when the dialogue ends without one)."""
    strategy_id: str | None = None
    """Id of the strategy applied (None: no strategy, or a foreign dialogue)."""
    strategy_text: str | None = None
    """Text of the strategy applied."""
    selection: str | None = None
    """How the strategy was chosen (`llm`, `random`, `fallback`, ...)."""
    strategy_rank: int | None = None
    """Position of the applied strategy among the turn's retrieved candidates (0 = the best
    match); None without a strategy or a recorded candidate list."""
    candidates: tuple[tuple[str, str], ...] = ()
    """`(id, text)` of each strategy retrieved for the turn, in retrieval order (empty when none
    was recorded)."""
    depth: int | None = None
    """The critic's depth score (1-5) of the accepted draft; None when the critic gave none."""
    insight: int | None = None
    """The critic's insight score (1-5) of the accepted draft; None when the critic gave none."""
    verdict: Mapping[str, Any] | None = None
    """The critic's record of the accepted draft (reason, similarity, scores)."""
    drafts: tuple[Mapping[str, Any], ...] = ()
    """Every draft of the turn with its verdict, rejected ones included."""
    judge: Mapping[str, Any] | None = None
    """A separate judge's scores (`depth`, `insight`, `coherence`, 1-10), filled by `Judge`."""


@dataclass(frozen=True)
class EvalDialogue:
    """One dialogue to evaluate."""

    id: str
    """Where it came from, for people: `file.jsonl#3`."""
    source: str
    """`ideas`, `sharegpt`, `openai` or `reference`."""
    messages: tuple[Message, ...]
    """The whole dialogue, seed included."""
    turns: tuple[EvalTurn, ...]
    """The generated user instructions, in order."""
    key: str | None = None
    """Pairing key: dialogues of two variants with the same key grew from the same seed."""
    cost: Cost | None = None
    """Spending of the generated turns (our documents only)."""
    library_size: int | None = None
    """Number of strategies the strategist could choose from, when the document records it."""
    status: str | None = None
    """Run status of our documents (`complete`, `ended_early`, ...)."""
    extra: Mapping[str, Any] = field(default_factory=dict)
    """Anything else worth showing (the run's end reason)."""

    @property
    def instructions(self) -> list[str]:
        """The generated instructions' texts."""
        return [t.instruction for t in self.turns]

    def history(self, turn: EvalTurn) -> list[Message]:
        """Return the messages before `turn`'s instruction."""
        return list(self.messages[: turn.position])


def load_dialogues(path: str | Path, skipped: Skipped | None = None) -> list[EvalDialogue]:
    """Read every dialogue of a file (JSON, JSON Lines, optionally gzip) or a batch directory.

    A file may hold one document, a list of documents, one document per line, or a single OpenAI
    message list. A directory is read as a batch run (its `dialogues.jsonl`); one with a batch
    manifest is read the way every reader of a batch does (`batch.store.iter_dialogues`): each
    job once, damaged lines passed over and counted in `skipped`.

    Raises:
        EvalInputError: The file is missing or unreadable, or a line or record is bad: one line
            naming the file and the line (`record <n>` in a whole JSON document or a batch).
    """
    path = Path(path)
    if path.is_dir() and (path / MANIFEST).is_file():
        records = [Record(i, None, r) for i, r in enumerate(_read_batch(path, skipped))]
        path = path / DIALOGUES
    else:
        path = path / DIALOGUES if path.is_dir() else path
        records = _read_records(path)
    if not records:
        raise EvalInputError(f"{path}: no dialogues")
    dialogues = []
    for number, record in enumerate(records, start=1):
        try:
            dialogues.append(dialogue_from_record(record.data, f"{path.name}#{number}"))
        except (KeyError, TypeError, ValueError) as exc:
            raise EvalInputError(str(ChatFileError(path, record, _one_line(exc)))) from None
    return dialogues


def dialogue_from_record(record: Any, where: str = "record") -> EvalDialogue:
    """Normalise one record: one of our documents, or a chat record of a linear format.

    Foreign records are read by the one chat reader (`dialogues.formats.parse_record`), system
    messages kept in place (a record's own `system` field first).

    Raises:
        ValueError: The record is not a dialogue of a supported shape.
    """
    if isinstance(record, dict) and record.get("format") == FORMAT:
        return from_document(record, where)
    format = format_of(record)
    if format not in LINEAR_FORMATS:
        raise ValueError(
            "neither an ideas-dialogue/1 document nor a chat record "
            "(OpenAI messages, ShareGPT, HH-RLHF or MT-Bench-101)"
        )
    chat = parse_record(record, format)
    system = [{"role": "system", "content": chat.system}] if chat.system else []
    messages = system + [{"role": m.role, "content": m.text} for m in chat.messages]
    return _foreign(messages, format, where, chat.id)


def from_document(document: Mapping[str, Any], where: str = "document") -> EvalDialogue:
    """Normalise one of our `ideas-dialogue/1` documents.

    Raises:
        ValueError: Its turns do not match the end of its messages.
    """
    messages = _document_messages(document["messages"])
    records = document.get("turns") or []
    start = len(messages) - 2 * len(records)
    turns = []
    for number, record in enumerate(records):
        position = start + 2 * number
        if position < 0 or messages[position]["role"] != "user":
            raise ValueError(f"turn {number + 1} does not match the messages")
        turns.append(_turn_from_record(record, messages, position))
    batch = document.get("batch") or {}
    key = batch.get("job") if isinstance(batch, dict) else None
    unfinished = document.get("unfinished_turn") or {}
    extra = {"reason": document["reason"]} if document.get("reason") else {}
    return EvalDialogue(
        id=where,
        source="ideas",
        messages=messages,
        turns=tuple(turns),
        key=str(key) if key is not None else None,
        cost=_cost(records, unfinished),
        library_size=library_size(document.get("library") or {}),
        status=document.get("status"),
        extra=extra,
    )


def reference_dialogues(pairs: Iterable[Pair]) -> list[EvalDialogue]:
    """Turn real (history, follow-up) pairs into one-turn dialogues (the real users' column)."""
    dialogues = []
    for pair in pairs:
        history = [{"role": t.role, "content": t.text} for t in pair.history]
        messages = (*history, {"role": "user", "content": pair.followup})
        turn = EvalTurn(len(history), pair.followup, pair.answer)
        where = f"{pair.source}:{pair.record_id}:{pair.turn}"
        dialogues.append(EvalDialogue(where, "reference", messages, (turn,)))
    return dialogues


def _turn_from_record(
    record: Mapping[str, Any], messages: Sequence[Message], position: int
) -> EvalTurn:
    strategy = record.get("strategy") or {}
    critic = record.get("critic")
    scores = (critic.get("scores") or critic) if isinstance(critic, dict) else {}
    selection = record.get("selection") or {}
    retrieved = [c for c in record.get("candidates") or () if isinstance(c, dict)]
    candidates = [c.get("id") for c in retrieved]
    rank = candidates.index(strategy.get("id")) if strategy.get("id") in candidates else None
    texts = tuple(
        (str(c["id"]), c["text"])
        for c in retrieved
        if c.get("id") is not None and isinstance(c.get("text"), str)
    )
    return EvalTurn(
        position=position,
        instruction=messages[position]["content"],
        previous_answer=_previous_answer(messages, position),
        answer=_next_answer(messages, position),
        strategy_id=strategy.get("id"),
        strategy_text=strategy.get("text"),
        selection=selection.get("method"),
        strategy_rank=rank,
        candidates=texts,
        depth=_score(scores.get("depth")),
        insight=_score(scores.get("insight")),
        verdict=critic if isinstance(critic, dict) else None,
        drafts=tuple(record.get("drafts") or ()),
    )


def _score(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _cost(records: Sequence[Mapping[str, Any]], unfinished: Mapping[str, Any]) -> Cost:
    usages = [r.get("usage") or {} for r in records] + [unfinished.get("usage") or {}]
    spent = [agent for usage in usages for agent in usage.values()]
    drafts = [d for r in [*records, unfinished] for d in r.get("drafts") or ()]
    return Cost(
        calls=sum(int(a.get("calls", 0)) for a in spent),
        input_tokens=sum(int(a.get("input_tokens", 0)) for a in spent),
        evaluated_tokens=sum(
            int(a.get("input_tokens", 0)) - int(a.get("cached_tokens", 0)) for a in spent
        ),
        output_tokens=sum(int(a.get("output_tokens", 0)) for a in spent),
        seconds=sum(float(a.get("seconds", 0.0)) for a in spent),
        drafts=len(drafts),
        rejected=sum(1 for d in drafts if not d.get("accepted")),
        accepted=len(records),
    )


def _foreign(messages: list[Message], source: str, where: str, key: str | None) -> EvalDialogue:
    users = [i for i, m in enumerate(messages) if m["role"] == "user"]
    turns = tuple(
        EvalTurn(
            i,
            messages[i]["content"],
            _previous_answer(messages, i),
            _next_answer(messages, i),
        )
        for i in users[1:]
    )
    return EvalDialogue(where, source, tuple(messages), turns, key)


def _previous_answer(messages: Sequence[Message], position: int) -> str | None:
    if position > 0 and messages[position - 1]["role"] == "assistant":
        return messages[position - 1]["content"]
    return None


def _next_answer(messages: Sequence[Message], position: int) -> str | None:
    if position + 1 < len(messages) and messages[position + 1]["role"] == "assistant":
        return messages[position + 1]["content"]
    return None


def _document_messages(messages: Any) -> tuple[Message, ...]:
    """Our own document's messages, as written (canonical roles, texts kept whole)."""
    if not isinstance(messages, list):
        raise ValueError("messages is not a list")
    for message in messages:
        if message["role"] not in ("system", "user", "assistant"):
            raise ValueError(f"unknown role {message['role']!r}")
        if not isinstance(message["content"], str):
            raise ValueError("a message has no text")
    return tuple({"role": m["role"], "content": m["content"]} for m in messages)


def _read_batch(run_dir: Path, skipped: Skipped | None) -> list[Any]:
    if not (run_dir / DIALOGUES).is_file():
        raise EvalInputError(f"{run_dir / DIALOGUES}: no such file")
    try:
        return list(iter_dialogues(run_dir, skipped))
    except OSError as exc:
        raise EvalInputError(f"{run_dir / DIALOGUES}: unreadable ({_one_line(exc)})") from None


def _read_records(path: Path) -> list[Record]:
    try:
        return read_records(path, on_bad_record="raise")
    except FileNotFoundError:
        raise EvalInputError(f"{path}: no such file") from None
    except OSError as exc:
        raise EvalInputError(f"{path}: unreadable ({_one_line(exc)})") from None
    except (ChatFileError, NotDialogueFile) as exc:
        raise EvalInputError(str(exc)) from None


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__
