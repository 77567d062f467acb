"""The End F1 benchmark's pure parts: labelled positions, scores, the summary line."""

from __future__ import annotations

import asyncio

from benchmarks.ending import end_scores, positions, predict, summary_line
from induction.records import Dialogue, Turn


def dialogue(record_id: str, users: int, *, ended: bool) -> Dialogue:
    turns = []
    for i in range(users):
        turns += [Turn("user", f"q{i}"), Turn("assistant", f"a{i}")]
    return Dialogue(record_id, tuple(turns), ended_by_user=ended)


def test_positions_label_the_last_reply_of_an_ended_dialogue_and_skip_a_cut_one():
    found = positions([dialogue("e", 3, ended=True), dialogue("c", 2, ended=False)])
    assert [(p.dialogue, len(p.history), p.ends) for p in found] == [
        ("e", 2, False),
        ("e", 4, False),
        ("e", 6, True),
        ("c", 2, False),
    ]


def test_end_f1_and_a_simulator_that_never_ends():
    found = positions([dialogue("e", 3, ended=True), dialogue("f", 2, ended=True)])

    async def never(history):
        return "And what about the second part?"

    async def at_a1(history):
        return "<|endconversation|>" if history[-1]["content"] in ("a1",) else "more?"

    truth = [p.ends for p in found]
    assert end_scores(truth, asyncio.run(predict(found, never))).f1 == 0.0
    scores = end_scores(truth, asyncio.run(predict(found, at_a1)))
    # ends after a1 in both: right in "f" (its last reply), wrong in "e"; misses e's a2
    assert (scores.tp, scores.fp, scores.fn, scores.tn) == (1, 1, 1, 2)
    assert scores.f1 == 0.5


def test_summary_line_format():
    assert summary_line(0.4123, 0.0, None) == (
        "ending: End F1 0.41 (prompted 0.00); length distance learned/never xn/a"
    )
