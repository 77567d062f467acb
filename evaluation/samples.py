"""A self-contained HTML page of sample dialogues per variant, with every turn's decisions.

All text that came from a model or a file goes through `html.escape`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from html import escape
from typing import Any

from evaluation.inputs import EvalDialogue, EvalTurn
from evaluation.results import EvaluationResult

STYLE = """
body { font: 14px/1.45 system-ui, sans-serif; max-width: 60rem; margin: 2rem auto; color: #222; }
nav a { margin-right: 1rem; }
article { border: 1px solid #ddd; border-radius: 6px; padding: 0.5rem 1rem; margin: 1rem 0; }
.msg { white-space: pre-wrap; padding: 0.4rem 0.6rem; margin: 0.4rem 0; border-radius: 4px;
       max-height: 18rem; overflow: auto; }
.user { background: #eef3ff; } .assistant { background: #f6f6f6; } .system { background: #fff8e6; }
.seed { opacity: 0.65; }
.meta { font-size: 12px; color: #555; margin: 0.2rem 0 0.2rem 0.6rem; }
.meta b { color: #333; } .rejected { color: #a33; }
"""


def pick_samples(
    samples: Mapping[str, Sequence[EvalDialogue]], baseline: str | None, count: int
) -> dict[str, list[EvalDialogue]]:
    """Choose `count` dialogues per variant, the same seeds across variants where keys allow.

    The baseline's first dialogues set the seed keys; another variant shows its dialogues with
    those keys, topped up with its first other dialogues.
    """
    ordered = sorted(samples, key=lambda name: name != baseline)
    keys = [d.key for d in samples[ordered[0]][:count] if d.key is not None] if ordered else []
    chosen = {}
    for name in ordered:
        by_key = {d.key: d for d in samples[name] if d.key is not None}
        picked = [by_key[k] for k in keys if k in by_key]
        rest = [d for d in samples[name] if all(d is not p for p in picked)]
        chosen[name] = (picked + rest)[:count]
    return chosen


def samples_html(
    result: EvaluationResult, samples: Mapping[str, Sequence[EvalDialogue]], count: int = 3
) -> str:
    """Return the page: a few dialogues per variant, each turn with strategy, verdict, scores."""
    chosen = pick_samples(samples, result.baseline, count)
    nav = " ".join(f'<a href="#v-{i}">{escape(name)}</a>' for i, name in enumerate(chosen))
    sections = []
    for i, (name, dialogues) in enumerate(chosen.items()):
        body = "".join(_dialogue(d) for d in dialogues) or "<p>No dialogues.</p>"
        sections.append(f'<section id="v-{i}"><h2>{escape(name)}</h2>{body}</section>')
    empty = "" if chosen else "<p>No sample dialogues were given.</p>"
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>Sample dialogues</title><style>{STYLE}</style></head><body>"
        f"<h1>Sample dialogues</h1><nav>{nav}</nav>{empty}{''.join(sections)}</body></html>\n"
    )


def _dialogue(dialogue: EvalDialogue) -> str:
    status = f" · {escape(dialogue.status)}" if dialogue.status else ""
    reason = dialogue.reason
    ended = f'<p class="meta">ended: {escape(reason)}</p>' if reason else ""
    first = dialogue.turns[0].position if dialogue.turns else len(dialogue.messages)
    seed = "".join(_message(m.role, m.content, "seed") for m in dialogue.messages[:first])
    turns = "".join(_turn(dialogue, t) for t in dialogue.turns)
    title = f"{escape(dialogue.id)} <small>({escape(dialogue.source)}{status})</small>"
    return f"<article><h3>{title}</h3>{seed}{turns}{ended}</article>"


def _turn(dialogue: EvalDialogue, turn: EvalTurn) -> str:
    parts = [_message("user", turn.instruction), _meta(turn)]
    if turn.answer is not None:
        parts.append(_message("assistant", turn.answer))
    return "".join(parts)


def _message(role: str, text: str, extra: str = "") -> str:
    return f'<div class="msg {escape(role)} {extra}"><b>{escape(role)}</b>\n{escape(text)}</div>'


def _meta(turn: EvalTurn) -> str:
    items = []
    if turn.strategy_id is not None:
        method = f" ({escape(turn.selection)})" if turn.selection else ""
        items.append(
            f"<b>strategy</b> {escape(turn.strategy_id)}: {escape(turn.strategy_text or '')}"
            + method
        )
    if turn.verdict is not None:
        found = turn.verdict.verdict_scores()
        scores = _scores(found.dump() if found else {}, ("depth", "insight"), 5)
        items.append(f"<b>critic</b> {escape(turn.verdict.reason)}{scores}")
    if turn.judge is not None:
        scores = _scores(turn.judge.model_dump(), ("depth", "insight", "coherence"), 10)
        items.append(f"<b>judge</b>{scores} {escape(turn.judge.reason)}")
    rejected = [d for d in turn.drafts if not d.accepted]
    lines = "".join(f'<div class="meta">{item}</div>' for item in items)
    if rejected:
        drafts = "".join(
            f'<li>{escape(d.text)} <span class="rejected">({escape(d.reason)})</span></li>'
            for d in rejected
        )
        lines += (
            f'<details class="meta"><summary class="rejected">{len(rejected)} rejected '
            f"draft{'s' if len(rejected) != 1 else ''}</summary><ul>{drafts}</ul></details>"
        )
    return lines


def _scores(scores: Mapping[str, Any], names: tuple[str, ...], top: int) -> str:
    shown = [f"{name} {escape(str(scores[name]))}/{top}" for name in names if name in scores]
    return f" · {', '.join(shown)}" if shown else ""
