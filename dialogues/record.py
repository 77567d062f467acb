"""The output document of one generated dialogue and its usage summary."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from typing import Any, Literal

from dialogues.messages import to_openai
from dialogues.models import (
    FORMAT,
    DialogueDocument,
    StrategySelection,
    Summary,
    TurnRecord,
    UnfinishedTurn,
    Usage,
    Verdict,
    total_usage,
)

RunStatus = Literal["complete", "ended_early", "ended_by_user", "interrupted", "failed"]


def usage_by_agent(usages: Iterable[Mapping[str, Mapping[str, float]]]) -> dict[str, Usage]:
    """Sum per-agent usage dicts (as stored in turn records) into one Usage per agent."""
    totals: dict[str, Usage] = {}
    for usage in usages:
        for agent, spent in usage.items():
            totals[agent] = totals.get(agent, Usage()) + Usage.from_dict(dict(spent))
    return totals


def summarize(state: Mapping[str, Any], wall_seconds: float) -> dict[str, Any]:
    """Return turn, rejection, call, token and time counts for a (possibly partial) run."""
    return _summary(state, wall_seconds).dump()


def _summary(state: Mapping[str, Any], wall_seconds: float) -> Summary:
    turns = [TurnRecord.model_validate(t) for t in state.get("turns", [])]
    usages = [t.usage for t in turns]
    if state.get("opening"):
        usages.append(state["opening"]["usage"])
    if state.get("usage"):
        usages.append(state["usage"])  # the unfinished turn's spending
    per_agent = usage_by_agent(usages)
    total = total_usage(per_agent)
    rejected = sum(1 for t in turns for d in t.drafts if not d.accepted)
    rejected += sum(1 for d in state.get("drafts", []) if not d["accepted"])  # unfinished turn
    return Summary(
        turns=len(turns),
        target_turns=state.get("target_turns"),
        rejections=rejected,
        llm_calls=total.calls,
        input_tokens=total.input_tokens,
        cached_tokens=total.cached_tokens,
        output_tokens=total.output_tokens,
        llm_seconds=round(total.seconds, 3),
        wall_seconds=round(wall_seconds, 3),
        per_agent=dict(sorted(per_agent.items())),
    )


def unfinished_turn(state: Mapping[str, Any]) -> dict[str, Any] | None:
    """Return the decisions of a turn that started but did not finish (None if there is none)."""
    turn = _unfinished(state)
    return turn.dump() if turn else None


def _unfinished(state: Mapping[str, Any]) -> UnfinishedTurn | None:
    if not state.get("drafts") or not state.get("selection"):
        return None
    selection = StrategySelection.model_validate(state["selection"])
    return UnfinishedTurn(
        index=state.get("turn", 0) + 1,
        candidates=selection.candidates,
        strategy=selection.strategy,
        selection=selection.summary(),
        drafts=[Verdict.model_validate(d) for d in state["drafts"]],
        usage={a: Usage.from_dict(spent) for a, spent in state.get("usage", {}).items()},
    )


def dialogue_document(
    state: Mapping[str, Any],
    *,
    status: RunStatus,
    reason: str | None,
    wall_seconds: float,
    settings: dict[str, Any],
    seed_source: str,
    library: dict[str, Any],
) -> DialogueDocument:
    """Assemble the document written by `--out` and stored by a batch."""
    opening = state.get("opening")
    document = DialogueDocument(
        format=FORMAT,
        status=status,
        reason=reason,
        created_at=datetime.now(UTC).isoformat(timespec="seconds"),
        seed={"source": seed_source},
        messages=to_openai(state.get("messages", [])),
        opening=opening,
        turns=state.get("turns", []),
        unfinished_turn=_unfinished(state),
        summary=_summary(state, wall_seconds),
        library=library,
        settings=settings,
    )
    return document
