"""The End F1 benchmark's pure parts: labelled positions, scores, the summary line."""

from __future__ import annotations

import asyncio
import json

import pytest

from benchmarks.ending import (
    by_source,
    card_held_out,
    end_scores,
    f1_interval,
    length_distances,
    positions,
    predict,
    summary_line,
)
from induction.records import Dialogue, Turn
from training.pairs import TrainingPair, held_out_dialogues, split_by_dialogue


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
        "ending: End F1 0.41 (prompted 0.00); length distance learned/never n/a"
    )


def test_f1_interval_resamples_whole_dialogues():
    found = positions([dialogue("e", 2, ended=True), dialogue("f", 2, ended=True)])
    right = [p.ends for p in found]  # a simulator that is right everywhere: F1 1 in every resample
    assert f1_interval(found, right) == (1.0, 1.0)
    # right in "e" only (ends there at its last reply), never ends in "f": resamples of e alone
    # give 1, of f alone 0, so the interval spans both
    half = [p.ends and p.dialogue == "e" for p in found]
    assert f1_interval(found, half) == (0.0, 1.0)


def test_length_distances_put_the_batch_nearer_the_real_lengths_first():
    real = [1, 2, 2, 3, 6]
    found = length_distances([2, 2, 3, 3], [6, 6, 6, 6], real, resamples=200)
    # W1 of a constant 6 to the real lengths is the mean gap: (5+4+4+3+0)/5
    assert found.never.value == pytest.approx(3.2)
    assert found.never.low == found.never.high == pytest.approx(3.2)
    assert found.learned.value < found.never.value
    assert found.ratio.value == pytest.approx(found.learned.value / 3.2)
    assert found.ratio.low <= found.ratio.value <= found.ratio.high < 1


def test_held_out_dialogues_do_not_depend_on_order_and_match_the_trainer_split():
    names = [f"src\x1f{i}" for i in range(40)]
    held = held_out_dialogues(names, 0.1, 0)
    assert len(held) == 4
    assert held == held_out_dialogues(reversed(names), 0.1, 0)
    pairs = [TrainingPair(("src", n, 1), n, [], "t", None) for n in names for _ in range(2)]
    _, held_pairs = split_by_dialogue(pairs, 0.1, 0)
    assert {p.dialogue for p in held_pairs} == held


def test_the_length_part_runs_on_two_batches_and_prints_the_ratio(tmp_path, capsys):
    from benchmarks import ending

    runs = {"learned": [2, 3], "never": [6, 6]}
    lengths = {tmp_path / name: value for name, value in runs.items()}
    reference = tmp_path / "real.jsonl"
    reference.write_text(
        "".join(
            json.dumps(
                {
                    "messages": [
                        {"role": "user", "content": "q"},
                        {"role": "assistant", "content": "a"},
                    ]
                    * n
                }
            )
            + "\n"
            for n in (1, 2, 3)
        )
    )
    asked = []

    def fake_run_lengths(run_dir):
        asked.append(run_dir)
        return lengths[run_dir]

    ending.run_lengths, saved = fake_run_lengths, ending.run_lengths
    try:
        code = ending.main(
            [
                "--learned",
                str(tmp_path / "learned"),
                "--never",
                str(tmp_path / "never"),
                "--reference",
                str(reference),
            ]
        )
    finally:
        ending.run_lengths = saved
    out = capsys.readouterr().out.splitlines()
    assert code == 0 and asked == [tmp_path / "learned", tmp_path / "never"]
    assert out[0].startswith(
        "user turns per dialogue: learned 2.50 (n=2), never 6.00 (n=2), real 2.00"
    )
    assert out[-1].startswith(
        "ending: End F1 n/a (prompted n/a); length distance learned/never x0."
    )


def test_held_out_names_come_from_the_simulator_card_and_an_older_card_has_none(tmp_path):
    (tmp_path / "card.json").write_text(json.dumps({"counts": {"held_out_names": ["a", "b"]}}))
    assert card_held_out(str(tmp_path)) == {"a", "b"}
    (tmp_path / "card.json").write_text(json.dumps({"counts": {"held_out": 3}}))
    assert card_held_out(str(tmp_path)) is None
    assert card_held_out(str(tmp_path / "missing")) is None


def test_positions_name_their_source_and_the_counts_are_per_source():
    found = positions(
        [("sa.json", dialogue("e", 2, ended=True)), ("oa.jsonl", dialogue("c", 3, ended=False))]
    )
    assert [(p.source, p.ends) for p in found] == [
        ("sa.json", False),
        ("sa.json", True),
        ("oa.jsonl", False),
        ("oa.jsonl", False),
    ]
    said = by_source(found, [False, True, True, False])
    assert said == (
        "oa.jsonl 1 of 2 positions (0 of 0 real endings); "
        "sa.json 1 of 2 positions (1 of 1 real endings)"
    )


def test_ranking_auc_is_the_share_of_ending_continuation_pairs_in_order():
    from benchmarks.ending import ranking_auc

    found = positions([dialogue("e", 3, ended=True)])  # continue, continue, end
    assert ranking_auc(found, [0.1, 0.2, 0.3]) == 1.0
    assert ranking_auc(found, [0.1, 0.4, 0.3]) == 0.5  # above one continuation of two
    assert ranking_auc(found, [0.3, 0.2, 0.3]) == 0.75  # a tie counts half
