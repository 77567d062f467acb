"""Export a batch's (filtered) dialogues as training data: ShareGPT, OpenAI chat or simulator SFT.

Formats:

- `sharegpt`: one JSON list of `{"id": job, "conversations": [{"from": "system"|"human"|"gpt",
  "value": ...}], "ideas": {...}}`, one record per line inside the list.
- `openai`: JSON Lines, one `{"messages": [{"role", "content"}, ...], "ideas": {...}}` per dialogue.
- `simulator-sft`: the paper's user-simulator training data, JSON Lines with one record per
  generated turn: `{"id": "<job>#<turn>", "history": [messages before the instruction, OpenAI
  form], "strategy": text or null, "instruction": text, "ideas": {...}}`. Turns without a strategy
  are kept with `strategy: null` and counted. A dialogue its user ended (status `ended_by_user`,
  not cut by a filter since) adds one record after its last turn whose `instruction` is the end
  marker (`dialogues.ending.END_MARKER`) and whose `history` is the whole dialogue: it teaches
  the ending.

`ideas` is the decision record (omitted entirely with `plain=True`): `job`, `seed`, `seed_index`,
`repeat`, `status`, `reason`, `library`, `library_version`, `generated_turns` (before filters),
`truncated_by` (the filter that cut the dialogue), and per generated turn (`turns`, a list, for a
dialogue; `turn`, one, for a simulator-sft record) the strategy (`strategy_id`, `strategy`), the
`candidates` (`id`, `score`, `rank`), the `selection` (`method`, `note`), every draft with the
critic's verdict (`drafts`; the last is the accepted one), `rejections`, `usage` per agent and the
`contamination` match the contamination filter flagged.

The `ideas` record is schema-stable, so that `datasets.load_dataset("json", ...)` loads it
whatever the mix of records. Arrow fixes each column's type from the first chunk (10 MB) it
reads, so a value absent (null) throughout that chunk and present later fails to load. Hence
every key is always present and never null: absent texts are `""` (`reason`, `strategy_id` and
`strategy` of a turn without one, `selection.note`, a draft's `feedback`, `truncated_by`, a turn's
`contamination.match`), absent numbers `0` (`depth` and `insight` of a draft the LLM critic did
not score, whose `scored` is then false), absent booleans `false`; usage is a list of
`{"agent", "calls", ...}` rows instead of a mapping keyed by agent; scores are always floats. Two
things remain that a first chunk could leave untyped: an empty list (`candidates`, as with
`--strategist none`, or `turns`) and simulator-sft's top-level `strategy: null`. Within one batch
these are empty or null either throughout or rarely, never only at the start.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

from dialogues.ending import END_MARKER, ENDED_BY_USER
from dialogues.models import (
    BatchInfo,
    ChatMessage,
    ContaminationMatch,
    DialogueDocument,
    FilterInfo,
    Scores,
    TurnRecord,
    UsageByAgent,
    Verdict,
)
from dialogues.output import StagedWrites

ExportFormat = Literal["sharegpt", "openai", "simulator-sft"]
FORMATS: tuple[str, ...] = ("sharegpt", "openai", "simulator-sft")
SHAREGPT_ROLES = {"system": "system", "user": "human", "assistant": "gpt"}
"""ShareGPT's name of each message role (`ChatMessage.role` is one of these)."""


@dataclass
class ExportResult:
    """What an export wrote."""

    format: str
    path: str
    plain: bool
    dialogues: int = 0
    """Dialogues exported."""
    turns: int = 0
    """Generated turns exported."""
    records: int = 0
    """Records written (dialogues, or turns for simulator-sft)."""
    turns_without_strategy: int = 0

    def as_dict(self) -> dict[str, Any]:
        """Return plain JSON data."""
        return asdict(self)


def _text(value: str | None) -> str:
    return "" if value is None else value


def _int(value: Any) -> int:
    """Return a number the metadata may spell as text (a library's `"version": "2"`), or 0."""
    try:
        return int(value)
    except (TypeError, ValueError):
        return 0


def draft_record(draft: Verdict) -> dict[str, Any]:
    """Return a draft (or the critic's verdict) in the export's fixed shape."""
    scores = draft.verdict_scores() or Scores()
    return {
        "text": draft.text,
        "accepted": draft.accepted,
        "reason": draft.reason,
        "similarity": draft.similarity,
        "scored": draft.verdict_scores() is not None,
        "correct": bool(scores.correct),
        "coherent": bool(scores.coherent),
        "depth": scores.depth or 0,
        "insight": scores.insight or 0,
        "feedback": _text(draft.verdict_feedback()),
    }


def usage_rows(usage: UsageByAgent) -> list[dict[str, Any]]:
    """Return per-agent usage as rows sorted by agent (a stable schema, unlike a mapping)."""
    return [
        {
            "agent": agent,
            "calls": spent.calls,
            "input_tokens": spent.input_tokens,
            "cached_tokens": spent.cached_tokens,
            "output_tokens": spent.output_tokens,
            "seconds": spent.seconds,
        }
        for agent, spent in sorted(usage.items())
    ]


def turn_record(turn: TurnRecord, contamination: ContaminationMatch | None = None) -> dict:
    """Return the decision record of one generated turn.

    The critic's verdict on every draft is in `drafts`; the last one is the accepted draft, the
    turn's `critic` record (kept as the only draft when a turn has a verdict but no drafts).
    """
    strategy = turn.strategy
    drafts = turn.all_drafts()
    return {
        "index": turn.index or 0,
        "strategy_id": strategy.id if strategy else "",
        "strategy": strategy.text if strategy else "",
        "candidates": [{"id": c.id, "score": c.score, "rank": c.rank} for c in turn.candidates],
        "selection": {
            "method": _text(turn.selection.method),
            "note": _text(turn.selection.note),
        },
        "drafts": [draft_record(d) for d in drafts],
        "rejections": sum(1 for d in drafts if not d.accepted),
        "usage": usage_rows(turn.usage),
        "contamination": {
            "match": _text(contamination.match) if contamination else "",
            "score": (contamination.score or 0.0) if contamination else 0.0,
            "source": _text(contamination.source) if contamination else "",
        },
    }


def dialogue_info(document: DialogueDocument) -> dict[str, Any]:
    """Return the dialogue-level part of the decision record (job, seed, status, filters)."""
    batch = document.batch or BatchInfo()
    filters = document.filters or FilterInfo()
    generated = filters.generated_turns
    return {
        "job": _text(batch.job),
        "seed": document.seed.source,
        "seed_index": batch.seed_index or 0,
        "repeat": batch.repeat or 0,
        "status": _text(document.status),
        "reason": _text(document.reason),
        "library": _text(document.library.name),
        "library_version": _int(document.library.version),
        "generated_turns": len(document.turns) if generated is None else generated,
        "truncated_by": _text(filters.by),
    }


def _contamination(document: DialogueDocument, index: int) -> ContaminationMatch | None:
    """Return the contamination filter's match for turn number `index` (the last one found)."""
    flagged = document.filters.contaminated_turns if document.filters else []
    return next((m for m in reversed(flagged) if m.turn == index), None)


def _index(turn: TurnRecord, k: int) -> int:
    """Return the turn's number (its position `k` + 1 in records that never carried one)."""
    return k + 1 if turn.index is None else turn.index


def decision_record(document: DialogueDocument) -> dict[str, Any]:
    """Return the whole dialogue's `ideas` record: `dialogue_info` plus every turn's decisions."""
    return dialogue_info(document) | {
        "turns": [
            turn_record(t, _contamination(document, _index(t, k)))
            for k, t in enumerate(document.turns)
        ]
    }


def openai_messages(messages: Iterable[ChatMessage]) -> list[dict[str, str]]:
    """Return messages as plain `{"role", "content"}` dicts."""
    return [{"role": m.role, "content": m.content} for m in messages]


def sharegpt_record(document: DialogueDocument, *, plain: bool = False) -> dict[str, Any]:
    """Return one dialogue as a ShareGPT record."""
    record: dict[str, Any] = {
        "id": _text(document.job),
        "conversations": [
            {"from": SHAREGPT_ROLES[m.role], "value": m.content} for m in document.messages
        ],
    }
    if not plain:
        record["ideas"] = decision_record(document)
    return record


def openai_record(document: DialogueDocument, *, plain: bool = False) -> dict[str, Any]:
    """Return one dialogue as an OpenAI chat fine-tuning record."""
    record: dict[str, Any] = {"messages": openai_messages(document.messages)}
    if not plain:
        record["ideas"] = decision_record(document)
    return record


def simulator_records(
    document: DialogueDocument, *, plain: bool = False
) -> Iterator[dict[str, Any]]:
    """Yield one user-simulator training record per generated turn, and one for an ending."""
    messages = openai_messages(document.messages)
    start = document.generated_start
    job = _text(document.job)
    info = None if plain else dialogue_info(document)
    for k, turn in enumerate(document.turns):
        index = _index(turn, k)
        record: dict[str, Any] = {
            "id": f"{job}#{index}",
            "history": messages[: start + 2 * k],
            "strategy": turn.strategy.text if turn.strategy else None,
            "instruction": messages[start + 2 * k]["content"],
        }
        if info is not None:
            record["ideas"] = info | {"turn": turn_record(turn, _contamination(document, index))}
        yield record
    end = ending_turn(document)
    if end is not None:
        record = {
            "id": f"{job}#{_index(end, len(document.turns))}",
            "history": messages,
            "strategy": end.strategy.text if end.strategy else None,
            "instruction": END_MARKER,
        }
        if info is not None:
            record["ideas"] = info | {"turn": turn_record(end)}
        yield record


def ending_turn(document: DialogueDocument) -> TurnRecord | None:
    """The turn at which the user ended the dialogue, with the end marker as its instruction.

    None unless the dialogue ended by the user's choice and still ends where it did: a filter that
    cut it drops its unfinished turn (`batch.filters.documents.truncate`), and with it the ending.
    """
    end = document.unfinished_turn
    if document.status != ENDED_BY_USER or end is None or not end.drafts:
        return None
    last = end.drafts[-1]
    if not (last.ending and last.accepted):
        return None
    return TurnRecord(
        index=end.index,
        candidates=end.candidates,
        strategy=end.strategy,
        selection=end.selection,
        drafts=end.drafts,
        critic=last,
        instruction=END_MARKER,
        usage=end.usage,
    )


def _dumps(record: dict[str, Any]) -> str:
    return json.dumps(record, ensure_ascii=False, allow_nan=False)


def _json_list(records: Iterable[dict[str, Any]]) -> Iterator[str]:
    """Yield the lines of a JSON list holding one compact record per line."""
    yield "["
    previous = None
    for record in records:
        if previous is not None:
            yield previous + ","
        previous = _dumps(record)
    if previous is not None:
        yield previous
    yield "]"


def export(
    documents: Sequence[DialogueDocument],
    format: str,
    out_path: str | Path,
    *,
    plain: bool = False,
    staged: StagedWrites | None = None,
) -> ExportResult:
    """Write `documents` in `format` to `out_path` atomically.

    Args:
        documents: Dialogue documents (already filtered), in the order to write them.
        format: One of `FORMATS`.
        out_path: The file to write (replaced atomically if it exists).
        plain: Leave out the `ideas` decision records.
        staged: Stage the file there (renamed into place with the others it commits) instead
            of writing it now.

    Returns:
        What was written.

    Raises:
        ValueError: Unknown format.
        OutputError: The file cannot be written.
    """
    if format not in FORMATS:
        raise ValueError(f"unknown export format {format!r}; expected one of {', '.join(FORMATS)}")
    result = ExportResult(format=format, path=str(out_path), plain=plain)
    result.dialogues = len(documents)
    for doc in documents:
        result.turns += len(doc.turns)
        result.turns_without_strategy += sum(1 for t in doc.turns if not t.strategy)
    if staged is None:
        with StagedWrites() as now:
            _write(documents, format, out_path, plain, now, result)
    else:
        _write(documents, format, out_path, plain, staged, result)
    return result


def _write(
    documents: Sequence[DialogueDocument],
    format: str,
    out_path: str | Path,
    plain: bool,
    staged: StagedWrites,
    result: ExportResult,
) -> None:
    if format == "sharegpt":
        records: Iterable[dict[str, Any]] = (sharegpt_record(d, plain=plain) for d in documents)
        staged.write_lines(out_path, _json_list(records))
        result.records = result.dialogues
    elif format == "openai":
        staged.write_lines(out_path, (_dumps(openai_record(d, plain=plain)) for d in documents))
        result.records = result.dialogues
    else:
        records = [r for d in documents for r in simulator_records(d, plain=plain)]
        staged.write_lines(out_path, (_dumps(r) for r in records))
        result.records = len(records)
