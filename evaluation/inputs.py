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
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError

from batch.store import DIALOGUES, MANIFEST, Skipped, iter_dialogues, validation_reason
from dialogues.errors import InputError
from dialogues.formats import (
    LINEAR_FORMATS,
    ChatFileError,
    NotDialogueFile,
    Record,
    format_of,
    parse_record,
    read_records,
)
from dialogues.models import (
    FORMAT,
    ChatMessage,
    DialogueDocument,
    TurnRecord,
    UnfinishedTurn,
    Usage,
    Verdict,
)
from induction.records import Pair

if TYPE_CHECKING:
    from evaluation.judge import JudgeScores

Message = ChatMessage
"""One message: its canonical role (`system`, `user`, `assistant`) and its text (`content`)."""


class EvalInputError(InputError, ValueError):
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
    verdict: Verdict | None = None
    """The critic's record of the accepted draft (reason, similarity, scores)."""
    drafts: tuple[Verdict, ...] = ()
    """Every draft of the turn with its verdict, rejected ones included."""
    judge: JudgeScores | None = None
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
    reason: str | None = None
    """Why our document's run ended early or failed, for the sample pages."""

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
    # .get: a record of any format (foreign JSON); only the format tag is looked at here
    if isinstance(record, DialogueDocument) or (
        isinstance(record, dict) and record.get("format") == FORMAT
    ):
        return from_document(record, where)
    format = format_of(record)
    if format not in LINEAR_FORMATS:
        raise ValueError(
            "neither an ideas-dialogue/1 document nor a chat record "
            "(OpenAI messages, ShareGPT, HH-RLHF or MT-Bench-101)"
        )
    chat = parse_record(record, format)
    system = [Message(role="system", content=chat.system)] if chat.system else []
    messages = system + [Message(role=m.role, content=m.text) for m in chat.messages]
    return _foreign(messages, format, where, chat.id)


def from_document(
    document: DialogueDocument | Mapping[str, Any], where: str = "document"
) -> EvalDialogue:
    """Normalise one of our `ideas-dialogue/1` documents.

    Raises:
        ValueError: It is not one (`pydantic.ValidationError`), or its turns do not match the end
            of its messages.
    """
    document = DialogueDocument.of(dict(document) if isinstance(document, Mapping) else document)
    messages = _document_messages(document.messages)
    start = len(messages) - 2 * len(document.turns)
    turns = []
    for number, record in enumerate(document.turns):
        position = start + 2 * number
        if position < 0 or messages[position].role != "user":
            raise ValueError(f"turn {number + 1} does not match the messages")
        turns.append(_turn_from_record(record, messages, position))
    return EvalDialogue(
        id=where,
        source="ideas",
        messages=messages,
        turns=tuple(turns),
        key=document.job,
        cost=_cost(document.turns, document.unfinished_turn),
        library_size=document.library.size(),
        status=document.status,
        reason=document.reason or None,
    )


def reference_dialogues(pairs: Iterable[Pair]) -> list[EvalDialogue]:
    """Turn real (history, follow-up) pairs into one-turn dialogues (the real users' column)."""
    dialogues = []
    for pair in pairs:
        history = [Message(role=t.role, content=t.text) for t in pair.history]
        messages = (*history, Message(role="user", content=pair.followup))
        turn = EvalTurn(len(history), pair.followup, pair.answer)
        where = f"{pair.source}:{pair.record_id}:{pair.turn}"
        dialogues.append(EvalDialogue(where, "reference", messages, (turn,)))
    return dialogues


def _turn_from_record(record: TurnRecord, messages: Sequence[Message], position: int) -> EvalTurn:
    strategy, critic = record.strategy, record.critic
    scores = critic.verdict_scores() if critic else None
    retrieved = [c.id for c in record.candidates]
    rank = retrieved.index(strategy.id) if strategy and strategy.id in retrieved else None
    return EvalTurn(
        position=position,
        instruction=messages[position].content,
        previous_answer=_previous_answer(messages, position),
        answer=_next_answer(messages, position),
        strategy_id=strategy.id if strategy else None,
        strategy_text=strategy.text if strategy else None,
        selection=record.selection.method,
        strategy_rank=rank,
        candidates=tuple((c.id, c.text) for c in record.candidates if c.text),
        depth=scores.depth if scores else None,
        insight=scores.insight if scores else None,
        verdict=critic,
        drafts=tuple(record.drafts),
    )


def _cost(records: Sequence[TurnRecord], unfinished: UnfinishedTurn | None) -> Cost:
    spent = [u for r in [*records, *filter(None, [unfinished])] for u in r.usage.values()]
    total = sum(spent, Usage())
    drafts = [d for r in [*records, *filter(None, [unfinished])] for d in r.drafts]
    return Cost(
        calls=total.calls,
        input_tokens=total.input_tokens,
        evaluated_tokens=total.evaluated_tokens,
        output_tokens=total.output_tokens,
        seconds=total.seconds,
        drafts=len(drafts),
        rejected=sum(1 for d in drafts if not d.accepted),
        accepted=len(records),
    )


def _foreign(messages: list[Message], source: str, where: str, key: str | None) -> EvalDialogue:
    users = [i for i, m in enumerate(messages) if m.role == "user"]
    turns = tuple(
        EvalTurn(
            i,
            messages[i].content,
            _previous_answer(messages, i),
            _next_answer(messages, i),
        )
        for i in users[1:]
    )
    return EvalDialogue(where, source, tuple(messages), turns, key)


def _previous_answer(messages: Sequence[Message], position: int) -> str | None:
    if position > 0 and messages[position - 1].role == "assistant":
        return messages[position - 1].content
    return None


def _next_answer(messages: Sequence[Message], position: int) -> str | None:
    if position + 1 < len(messages) and messages[position + 1].role == "assistant":
        return messages[position + 1].content
    return None


def _document_messages(messages: Sequence[ChatMessage]) -> tuple[Message, ...]:
    """Our own document's messages, as written (canonical roles, texts kept whole)."""
    return tuple(Message(role=m.role, content=m.content) for m in messages)


def _read_batch(run_dir: Path, skipped: Skipped | None) -> list[DialogueDocument]:
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
    if isinstance(exc, ValidationError):
        return validation_reason(exc)
    return " ".join(str(exc).split()) or type(exc).__name__
