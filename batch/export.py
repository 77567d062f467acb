"""Export a batch's (filtered) dialogues as training data: ShareGPT, OpenAI chat or simulator SFT.

Formats:

- `sharegpt`: one JSON list of `{"id": job, "conversations": [{"from": "system"|"human"|"gpt",
  "value": ...}], "ideas": {...}}`, one record per line inside the list.
- `openai`: JSON Lines, one `{"messages": [{"role", "content"}, ...], "ideas": {...}}` per dialogue.
- `simulator-sft`: the paper's user-simulator training data, JSON Lines with one record per
  generated turn: `{"id": "<job>#<turn>", "history": [messages before the instruction, OpenAI
  form], "strategy": text or null, "instruction": text, "ideas": {...}}`. Turns without a strategy
  are kept with `strategy: null` and counted.

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

from dialogues.output import StagedWrites

ExportFormat = Literal["sharegpt", "openai", "simulator-sft"]
FORMATS: tuple[str, ...] = ("sharegpt", "openai", "simulator-sft")
SHAREGPT_ROLES = {"system": "system", "user": "human", "assistant": "gpt"}

Document = dict[str, Any]


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


def generated_start(document: Document) -> int:
    """Return the index in `messages` of the first generated user message."""
    return len(document.get("messages") or []) - 2 * len(document.get("turns") or [])


def _text(value: Any) -> str:
    return "" if value is None else str(value)


def _float(value: Any) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return 0.0


def _int(value: Any) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        return 0


def draft_record(draft: dict[str, Any]) -> dict[str, Any]:
    """Return a draft (or the critic's verdict) in the export's fixed shape."""
    scores = draft.get("scores")
    if not isinstance(scores, dict):
        # Older or flattened records carry the scores beside the verdict.
        has = any(draft.get(k) is not None for k in ("depth", "insight", "correct", "coherent"))
        scores = draft if has else None
    return {
        "text": _text(draft.get("text")),
        "accepted": bool(draft.get("accepted")),
        "reason": _text(draft.get("reason")),
        "similarity": _float(draft.get("similarity")),
        "scored": scores is not None,
        "correct": bool((scores or {}).get("correct")),
        "coherent": bool((scores or {}).get("coherent")),
        "depth": _int((scores or {}).get("depth")),
        "insight": _int((scores or {}).get("insight")),
        "feedback": _text((scores or {}).get("feedback", draft.get("feedback"))),
    }


def usage_rows(usage: dict[str, Any] | None) -> list[dict[str, Any]]:
    """Return per-agent usage as rows sorted by agent (a stable schema, unlike a mapping)."""
    return [
        {
            "agent": agent,
            "calls": _int(spent.get("calls")),
            "input_tokens": _int(spent.get("input_tokens")),
            "cached_tokens": _int(spent.get("cached_tokens")),
            "output_tokens": _int(spent.get("output_tokens")),
            "seconds": _float(spent.get("seconds")),
        }
        for agent, spent in sorted((usage or {}).items())
        if isinstance(spent, dict)
    ]


def turn_record(turn: dict[str, Any], contamination: dict[str, Any] | None = None) -> dict:
    """Return the decision record of one generated turn.

    The critic's verdict on every draft is in `drafts`; the last one is the accepted draft, the
    turn's `critic` record (kept as the only draft when a turn has a verdict but no drafts).
    """
    strategy = turn.get("strategy") or {}
    selection = turn.get("selection") or {}
    drafts = list(turn.get("drafts") or [])
    if not drafts and turn.get("critic"):
        drafts = [turn["critic"]]
    contamination = contamination or {}
    return {
        "index": _int(turn.get("index")),
        "strategy_id": _text(strategy.get("id")),
        "strategy": _text(strategy.get("text")),
        "candidates": [
            {"id": _text(c.get("id")), "score": _float(c.get("score")), "rank": _int(c.get("rank"))}
            for c in turn.get("candidates") or []
        ],
        "selection": {
            "method": _text(selection.get("method")),
            "note": _text(selection.get("note")),
        },
        "drafts": [draft_record(d) for d in drafts],
        "rejections": sum(1 for d in drafts if not d.get("accepted")),
        "usage": usage_rows(turn.get("usage")),
        "contamination": {
            "match": _text(contamination.get("match")),
            "score": _float(contamination.get("score")),
            "source": _text(contamination.get("source")),
        },
    }


def dialogue_info(document: Document) -> dict[str, Any]:
    """Return the dialogue-level part of the decision record (job, seed, status, filters)."""
    batch = document.get("batch") or {}
    library = document.get("library") or {}
    filters = document.get("filters") or {}
    turns = document.get("turns") or []
    return {
        "job": _text(batch.get("job")),
        "seed": _text((document.get("seed") or {}).get("source")),
        "seed_index": _int(batch.get("seed_index")),
        "repeat": _int(batch.get("repeat")),
        "status": _text(document.get("status")),
        "reason": _text(document.get("reason")),
        "library": _text(library.get("name")),
        "library_version": _int(library.get("version")),
        "generated_turns": _int(filters.get("generated_turns", len(turns))),
        "truncated_by": _text(filters.get("by")),
    }


def _contamination_by_turn(document: Document) -> dict[int, dict[str, Any]]:
    flagged = (document.get("filters") or {}).get("contaminated_turns") or []
    return {m["turn"]: m for m in flagged if isinstance(m, dict) and "turn" in m}


def decision_record(document: Document) -> dict[str, Any]:
    """Return the whole dialogue's `ideas` record: `dialogue_info` plus every turn's decisions."""
    flagged = _contamination_by_turn(document)
    turns = document.get("turns") or []
    return dialogue_info(document) | {
        "turns": [turn_record(t, flagged.get(t.get("index", k + 1))) for k, t in enumerate(turns)]
    }


def openai_messages(messages: Iterable[dict[str, Any]]) -> list[dict[str, str]]:
    """Return messages as plain `{"role", "content"}` dicts."""
    return [{"role": _text(m.get("role")), "content": _text(m.get("content"))} for m in messages]


def sharegpt_record(document: Document, *, plain: bool = False) -> dict[str, Any]:
    """Return one dialogue as a ShareGPT record."""
    record: dict[str, Any] = {
        "id": _text((document.get("batch") or {}).get("job")),
        "conversations": [
            {"from": SHAREGPT_ROLES.get(m["role"], m["role"]), "value": m["content"]}
            for m in openai_messages(document.get("messages") or [])
        ],
    }
    if not plain:
        record["ideas"] = decision_record(document)
    return record


def openai_record(document: Document, *, plain: bool = False) -> dict[str, Any]:
    """Return one dialogue as an OpenAI chat fine-tuning record."""
    record: dict[str, Any] = {"messages": openai_messages(document.get("messages") or [])}
    if not plain:
        record["ideas"] = decision_record(document)
    return record


def simulator_records(document: Document, *, plain: bool = False) -> Iterator[dict[str, Any]]:
    """Yield one user-simulator training record per generated turn of a dialogue."""
    messages = openai_messages(document.get("messages") or [])
    start = generated_start(document)
    job = _text((document.get("batch") or {}).get("job"))
    info = None if plain else dialogue_info(document)
    flagged = _contamination_by_turn(document)
    for k, turn in enumerate(document.get("turns") or []):
        strategy = turn.get("strategy")
        index = turn.get("index", k + 1)
        record: dict[str, Any] = {
            "id": f"{job}#{index}",
            "history": messages[: start + 2 * k],
            "strategy": _text(strategy.get("text")) if strategy else None,
            "instruction": messages[start + 2 * k]["content"],
        }
        if info is not None:
            record["ideas"] = info | {"turn": turn_record(turn, flagged.get(index))}
        yield record


def _dumps(record: dict[str, Any]) -> str:
    return json.dumps(record, ensure_ascii=False)


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
    documents: Sequence[Document],
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
        turns = doc.get("turns") or []
        result.turns += len(turns)
        result.turns_without_strategy += sum(1 for t in turns if not t.get("strategy"))
    if staged is None:
        with StagedWrites() as now:
            _write(documents, format, out_path, plain, now, result)
    else:
        _write(documents, format, out_path, plain, staged, result)
    return result


def _write(
    documents: Sequence[Document],
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
        records = (r for d in documents for r in simulator_records(d, plain=plain))
        staged.write_lines(out_path, (_dumps(r) for r in records))
        result.records = result.turns
