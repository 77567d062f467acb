"""Ending by a calibrated threshold on p_end: the simulator's decision, calibration, the card."""

from __future__ import annotations

import asyncio
import json
import math

import pytest
from langchain_core.messages import AIMessage, HumanMessage

from agents.chat import ChatClient, Scored
from agents.simulator import StrategySimulator
from dialogues.ending import END_MARKER, EndingRule
from dialogues.models import Usage
from induction.records import Dialogue, Turn
from runtime import adapters
from tests.fakes import ScriptedChatModel, SeedRecordingModel, text_reply
from training.endings import (
    Threshold,
    calibrate,
    calibrate_rule,
    per_turn_slope,
    positions,
    trained_positions,
    write_threshold,
)

DIALOGUE = [
    HumanMessage(content="Draft a cover letter for a lab job."),
    AIMessage(content="Here is a draft: Dear committee, ..."),
]
STRATEGY = "Ask for a shorter version."
FOLLOW_UP = "Make it half as long."
SCORE_USAGE = Usage(1, 100, 0, 0.25, 90)


class EndScores(ChatClient):
    """Scripted drafts; scoring answers `log(p_end)` for the end marker and records each ask."""

    def __init__(self, p_end: float, *replies: str, model: ScriptedChatModel | None = None):
        super().__init__(model or ScriptedChatModel(script=[text_reply(r) for r in replies]))
        self.p_end = p_end
        self.asked: list[tuple[list, str]] = []

    async def score(self, messages, continuation):
        self.asked.append((list(messages), continuation))
        return Scored(math.log(self.p_end), SCORE_USAGE)


def draft(simulator, feedback=None):
    return asyncio.run(simulator.draft(DIALOGUE, STRATEGY, feedback, candidates=[STRATEGY]))


def test_at_or_above_the_threshold_the_user_ends_without_drafting():
    chat = EndScores(0.4, FOLLOW_UP)
    result = draft(StrategySimulator(chat, trained=True, ending=EndingRule(0.3)))

    assert result.text == END_MARKER
    assert result.end_probability == pytest.approx(0.4)
    assert chat.model.prompts == [] and chat.model.unused == 1  # nothing drafted
    # It scored the marker as the reply to exactly what a draft would have sent.
    sent = StrategySimulator(chat).messages(DIALOGUE, STRATEGY, None)
    assert [(m.type, m.text) for m in chat.asked[0][0]] == [(m.type, m.text) for m in sent]
    assert [c for _, c in chat.asked] == [END_MARKER]
    assert result.usage == SCORE_USAGE


def test_below_the_threshold_it_drafts_and_a_sampled_marker_is_drawn_again():
    model = SeedRecordingModel(script=[text_reply(END_MARKER), text_reply(FOLLOW_UP)])
    chat = EndScores(0.1, model=model).seeded(5)
    result = draft(StrategySimulator(chat, trained=True, ending=EndingRule(0.3)))

    assert result.text == FOLLOW_UP
    assert result.end_probability == pytest.approx(0.1)
    assert len(model.prompts) == 2 and len(set(model.seeds)) == 2  # redrawn with another seed
    assert result.usage.calls == 1 + 2  # the score and both samples


def test_a_marker_sampled_every_time_below_the_threshold_is_kept_for_the_rules():
    replies = [END_MARKER] * (StrategySimulator.END_REDRAWS + 1)
    chat = EndScores(0.1, *replies)
    result = draft(StrategySimulator(chat, trained=True, ending=EndingRule(0.3)))

    assert result.text == END_MARKER and chat.model.unused == 0


def test_without_a_threshold_a_sampled_marker_ends_and_nothing_is_scored():
    chat = EndScores(0.9, END_MARKER)
    result = draft(StrategySimulator(chat, trained=True))

    assert result.text == END_MARKER and result.end_probability is None
    assert chat.asked == []


def test_a_redraft_after_feedback_is_never_an_ending_by_threshold():
    chat = EndScores(0.9, FOLLOW_UP)
    result = draft(
        StrategySimulator(chat, trained=True, ending=EndingRule(0.3)), "too early to end"
    )

    assert result.text == FOLLOW_UP and chat.asked == []


@pytest.mark.parametrize(
    ("threshold", "per_turn"), [(0.0, 0), (-0.1, 0), (float("inf"), 0), (0.1, -1)]
)
def test_a_rule_outside_its_range_is_refused(threshold, per_turn):
    with pytest.raises(ValueError, match="ending threshold"):
        EndingRule(threshold, per_turn)


def test_the_threshold_falls_with_the_user_turns_so_far():
    rule = EndingRule(0.8, per_turn=1.0)
    assert rule.at(0) == 0.8 and rule.at(2) == pytest.approx(0.8 * math.exp(-2))
    # DIALOGUE has one user turn: the threshold is 0.8 / e = 0.29, and p_end 0.4 ends.
    chat = EndScores(0.4, FOLLOW_UP)
    assert draft(StrategySimulator(chat, trained=True, ending=rule)).text == END_MARKER
    fixed = EndScores(0.4, FOLLOW_UP)
    assert draft(StrategySimulator(fixed, trained=True, ending=EndingRule(0.8))).text == FOLLOW_UP


def test_calibration_takes_the_threshold_of_the_best_f1_between_two_positions():
    # Endings at 0.5 and 0.2; continuations at 0.3, 0.1, 0.05, 0.01.
    found = calibrate([0.3, 0.5, 0.1, 0.2, 0.05, 0.01], [False, True, False, True, False, False])
    # Top 1: F1 2/3; top 3 (0.5, 0.3, 0.2): 2*2/(3+2) = 0.8; top 4: 4/6. The best: 3 predicted.
    assert (found.f1, found.predicted, found.positions, found.endings) == (0.8, 3, 6, 2)
    assert found.threshold == pytest.approx(math.sqrt(0.2 * 0.1))  # between 0.2 and the next
    assert 0.1 < found.threshold < 0.2


def test_calibration_predicts_equal_probabilities_together_and_needs_an_ending():
    found = calibrate([0.4, 0.4, 0.1], [True, False, False])
    assert found.predicted == 2 and found.f1 == pytest.approx(2 / 3)
    with pytest.raises(ValueError, match="no position is an ending"):
        calibrate([0.4, 0.1], [False, False])


def test_the_per_turn_slope_follows_a_hazard_that_rises_with_the_turns():
    # p_end alone does not tell the endings apart; they come late in their dialogues.
    turns = [1, 2, 3, 4, 5, 6] * 20
    ends = [k == 6 and (i // 6) % 2 == 0 for i, k in enumerate(turns)]
    p = [0.05 + 0.02 * ((i * 7) % 5) + 0.03 * e for i, e in enumerate(ends)]
    rule = calibrate_rule(p, turns, ends)
    assert rule.per_turn > 0.5 and rule.f1 == pytest.approx(10 / 13)
    assert rule.f1 > calibrate(p, ends).f1  # better than a fixed threshold
    # When turns say nothing (the same spread in endings and continuations), no slope.
    flat = [1 + (i // 2) % 6 for i in range(120)]
    by_p = [i % 2 == 0 for i in range(120)]
    assert per_turn_slope([0.5 if e else 0.05 for e in by_p], flat, by_p) == pytest.approx(
        0.0, abs=0.05
    )


def card_folder(tmp_path, held_out):
    """A copy of the shipped `ideas` card (without its ending) holding out `held_out`."""
    folder = tmp_path / "sim"
    folder.mkdir()
    card = json.loads((adapters.SHIPPED / "ideas" / "card.json").read_text())
    card.pop("ending", None)
    card["counts"]["held_out_names"] = held_out
    (folder / "card.json").write_text(json.dumps(card))
    return folder


def test_the_threshold_is_written_into_the_card_and_read_back_beside_the_adapter(tmp_path):
    folder = card_folder(tmp_path, [])
    assert adapters.ending_rule(folder / "adapter.gguf") is None  # not calibrated yet
    write_threshold(folder, Threshold(0.125, 0.5, 100, 4, 6), ["a.json"], "Go on.")

    card = json.loads((folder / "card.json").read_text())
    assert card["ending"]["threshold"] == 0.125 and card["ending"]["sources"] == ["a.json"]
    assert card["counts"]["held_out_names"] == [] and "epochs" in card  # the rest kept
    assert adapters.ending_rule(folder / "adapter.gguf") == EndingRule(0.125)
    assert "0.125" in (folder / "CARD.md").read_text()


@pytest.mark.parametrize("value", [0, -2, "0.1", True, None, float("nan")])
def test_a_card_without_a_usable_threshold_gives_none(tmp_path, value):
    folder = card_folder(tmp_path, [])
    card = json.loads((folder / "card.json").read_text())
    (folder / "card.json").write_text(json.dumps(card | {"ending": {"threshold": value}}))
    assert adapters.ending_rule(folder / "adapter.gguf") is None


def test_calibration_positions_leave_out_the_held_out_dialogues(tmp_path):
    from training.pairs import ended_dialogue_name

    def dialogue(record_id, users):
        turns = []
        for i in range(users):
            turns += [Turn("user", f"q{i}"), Turn("assistant", f"a{i}")]
        return Dialogue(record_id, tuple(turns), ended_by_user=True)

    data = tmp_path / "chats.jsonl"
    rows = [
        {"messages": [{"role": t.role, "content": t.text} for t in dialogue(n, u).turns]}
        for n, u in (("one", 2), ("two", 3))
    ]
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    from cli.induce import load_sources

    loaded = load_sources([data], None)
    names = [ended_dialogue_name(data.name, d) for d in loaded[0].dialogues]
    folder = card_folder(tmp_path, names[:1])

    kept = trained_positions(folder, [data])
    assert {p.dialogue for p in kept} == {loaded[0].dialogues[1].record_id}
    assert len(kept) == len(positions([loaded[0].dialogues[1]]))


@pytest.mark.parametrize("mode", ["learned", "never"])
def test_the_cards_threshold_reaches_the_simulator_with_learned_endings_only(
    wiring, tmp_path, mode
):
    from shutil import copyfile

    from agents.registry import SIMULATORS

    folder = card_folder(tmp_path, [])
    copyfile(adapters.SHIPPED / "ideas" / "adapter.gguf", folder / "adapter.gguf")
    write_threshold(folder, Threshold(0.2, 0.5, 10, 2, 2, per_turn=0.5), ["a.json"], "Go on.")
    w = wiring({}, simulator={"adapter": str(folder)}, ending=mode)

    expected = EndingRule(0.2, 0.5) if mode == "learned" else None
    assert SIMULATORS["strategy"](w).ending == expected
    assert SIMULATORS["plain"](w).ending == expected
    untrained = wiring({}, simulator={"adapter": "none"}, ending=mode)
    assert SIMULATORS["strategy"](untrained).ending is None


class PEndSequence(EndScores):
    """Scores the marker with the next p_end of a list, one per turn."""

    def __init__(self, p_ends: list[float], *replies: str):
        super().__init__(0.0, *replies)
        self.p_ends = iter(p_ends)

    async def score(self, messages, continuation):
        self.asked.append((list(messages), continuation))
        return Scored(math.log(next(self.p_ends)), SCORE_USAGE)


def test_the_dialogue_ends_where_p_end_reaches_the_threshold_and_the_trace_shows_it(
    wiring, seed_messages
):
    from dataclasses import replace

    from rich.console import Console

    from agents.registry import build_agents
    from cli.tracer import Tracer
    from graphs.deduction import build_graph
    from graphs.state import Deps, initial_state
    from tests.fakes import tool_reply
    from wiring.generation import Growth

    good = tool_reply(
        "CriticScores", correct=True, coherent=True, depth=4, insight=4, feedback="Fine."
    )
    w = wiring(
        {
            "strategist": [tool_reply("StrategyChoice", choice="1") for _ in range(2)],
            "critic": [good],
            "assistant": [text_reply("Memory B cells.")],
        }
    )
    chat = PEndSequence([0.1, 0.5], "Which cells remember it?")
    agents = replace(build_agents(w), simulator=StrategySimulator(chat, ending=EndingRule(0.3)))
    console = Console(record=True, width=120)
    events = []
    tracer = Tracer(console)

    def seen(event):
        events.append(event)
        tracer.event(event)

    growth = Growth(build_graph(), Deps(agents, min_turns=1), seen)
    outcome = asyncio.run(growth.run(initial_state(seed_messages, 5)))

    assert outcome.status == "ended_by_user" and len(outcome.state["turns"]) == 1
    first = outcome.state["turns"][0]["drafts"][0]
    assert first["accepted"] and first["end_probability"] == pytest.approx(0.1)
    verdicts = [e for e in events if e.event == "verdict"]
    assert [v.ending for v in verdicts] == [False, True]
    assert verdicts[1].end_probability == pytest.approx(0.5)
    shown = console.export_text()  # export_text clears the record
    assert "p_end=0.10" in shown and "ending accepted  similarity=0.00  p_end=0.50" in shown
    assert len(chat.asked) == 2 and chat.model.unused == 0
