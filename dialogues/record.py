"""The output document of one generated dialogue and its usage summary."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from typing import Any, Literal

from dialogues.messages import to_openai
from dialogues.models import Usage

FORMAT = "ideas-dialogue/1"
RunStatus = Literal["complete", "ended_early", "interrupted", "failed"]


def usage_by_agent(usages: Iterable[Mapping[str, Mapping[str, float]]]) -> dict[str, Usage]:
    """Sum per-agent usage dicts (as stored in turn records) into one Usage per agent."""
    totals: dict[str, Usage] = {}
    for usage in usages:
        for agent, spent in usage.items():
            totals[agent] = totals.get(agent, Usage()) + Usage.from_dict(dict(spent))
    return totals


def summarize(state: Mapping[str, Any], wall_seconds: float) -> dict[str, Any]:
    """Return turn, rejection, call, token and time counts for a (possibly partial) run."""
    turns = state.get("turns", [])
    usages = [t["usage"] for t in turns]
    if state.get("opening"):
        usages.append(state["opening"]["usage"])
    if state.get("usage"):
        usages.append(state["usage"])  # the unfinished turn's spending
    per_agent = usage_by_agent(usages)
    total = sum(per_agent.values(), Usage())
    rejected = sum(1 for t in turns for d in t["drafts"] if not d["accepted"])
    rejected += sum(1 for d in state.get("drafts", []) if not d["accepted"])  # unfinished turn
    return {
        "turns": len(turns),
        "target_turns": state.get("target_turns"),
        "rejections": rejected,
        "llm_calls": total.calls,
        "input_tokens": total.input_tokens,
        "cached_tokens": total.cached_tokens,
        "output_tokens": total.output_tokens,
        "llm_seconds": round(total.seconds, 3),
        "wall_seconds": round(wall_seconds, 3),
        "per_agent": {agent: u.as_dict() for agent, u in sorted(per_agent.items())},
    }


def selection_summary(selection: Mapping[str, Any]) -> dict[str, Any]:
    """Return how a turn's strategy was chosen: method, note and, for a drawn one, the draw."""
    summary = {"method": selection.get("method"), "note": selection.get("note")}
    if selection.get("draw") is not None:
        summary["draw"] = selection["draw"]
    return summary


def unfinished_turn(state: Mapping[str, Any]) -> dict[str, Any] | None:
    """Return the decisions of a turn that started but did not finish (None if there is none)."""
    selection = state.get("selection")
    if not state.get("drafts") or not selection:
        return None
    return {
        "index": state.get("turn", 0) + 1,
        "candidates": selection.get("candidates", []),
        "strategy": selection.get("strategy"),
        "selection": selection_summary(selection),
        "drafts": state["drafts"],
        "usage": state.get("usage", {}),
    }


def dialogue_document(
    state: Mapping[str, Any],
    *,
    status: RunStatus,
    reason: str | None,
    wall_seconds: float,
    settings: dict[str, Any],
    seed_source: str,
    library: dict[str, Any],
) -> dict[str, Any]:
    """Assemble the JSON document written by `--out`."""
    return {
        "format": FORMAT,
        "status": status,
        "reason": reason,
        "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "seed": {"source": seed_source},
        "messages": to_openai(state.get("messages", [])),
        "opening": state.get("opening"),
        "turns": state.get("turns", []),
        "unfinished_turn": unfinished_turn(state),
        "summary": summarize(state, wall_seconds),
        "library": library,
        "settings": settings,
    }
