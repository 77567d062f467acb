"""The length floor: each turn held open to a length drawn at the real users' shares."""

from __future__ import annotations

import argparse
import asyncio
import json
from collections import Counter

import httpx
import pytest
from langchain_core.messages import HumanMessage

from agents.simulator import PlainSimulator, StrategySimulator
from dialogues.ending import END_MARKER
from dialogues.formats import Message as Turn
from dialogues.lengths import LengthCues, fewest_words
from induction.records import Dialogue
from runtime import adapters
from tests.fakes import ScriptedGuidance, recorded_client
from tests.test_length_cues import CUES, DIALOGUE, SHARES, STRATEGY
from training import lengths as counting
from training.card import markdown


def test_a_lengths_fewest_words_are_one_past_the_shorter_lengths_most():
    assert [fewest_words(cue) for cue in CUES] == [0, 8, 16, 32]
    with pytest.raises(ValueError, match="not a length cue"):
        fewest_words("a novel")


# --- the simulator -----------------------------------------------------------------------------


def history(k: int) -> list:
    return [HumanMessage(content=f"Question {k}?"), DIALOGUE[1]]


def test_each_turn_draws_its_fewest_words_at_the_shares_and_the_server_holds_it():
    simulator = StrategySimulator(ScriptedGuidance(), guidance=3.0, floor=LengthCues(SHARES))
    drawn = Counter(simulator.fewest_words(history(k)) for k in range(4000))
    for cue, share in SHARES.items():
        assert abs(drawn[fewest_words(cue)] / 4000 - share) < 0.03
    # one dialogue, one length: every draft and redraft of its turn is held to it
    k = next(k for k in range(100) if simulator.fewest_words(history(k)) == 16)
    chat = ScriptedGuidance("Could you give one example, say the flu shot, and how it works?")
    simulator = StrategySimulator(chat, guidance=3.0, floor=LengthCues(SHARES))
    draft = asyncio.run(simulator.draft(history(k), STRATEGY, None))
    assert draft.guidance == 3.0 and chat.min_words == 16 and chat.whole == (END_MARKER,)
    assert draft.floor == 16
    [(messages, against, weight)] = chat.asked
    assert weight == 3.0 and STRATEGY in messages[-1].text and STRATEGY not in against[-1].text
    # with length cues too, the cue asks for the length the floor holds
    both = StrategySimulator(None, floor=LengthCues(SHARES), lengths=LengthCues(SHARES))  # type: ignore[arg-type]
    for j in range(50):
        assert both.fewest_words(history(j)) == fewest_words(both.length_for(history(j)))


def test_an_unguided_draft_gets_its_floor_through_the_guided_endpoint_at_weight_one():
    floor = LengthCues({CUES[2]: 1.0})  # every turn at least 16 words
    chat = ScriptedGuidance(
        "Is it the same for every vaccine, or do some of them work differently?"
    )
    draft = asyncio.run(PlainSimulator(chat, guidance=5.0, floor=floor).draft(DIALOGUE, None, None))
    [(messages, against, weight)] = chat.asked
    assert weight == 1.0 and messages == against and chat.min_words == 16
    assert draft.guidance is None and chat.model.prompts == []  # no plain completion
    assert draft.floor == 16
    # a turn drawn under 8 words has no floor: sampled as without one
    chat = ScriptedGuidance("never used")
    short = PlainSimulator(chat, floor=LengthCues({CUES[0]: 1.0}))
    unheld = asyncio.run(short.draft(DIALOGUE, None, None))
    assert unheld.text == "plain reply" and unheld.floor is None and chat.asked == []


def test_a_server_without_the_guided_endpoint_samples_without_a_floor():
    chat = ScriptedGuidance(guides=False)
    simulator = StrategySimulator(chat, floor=LengthCues({CUES[3]: 1.0}))
    unheld = asyncio.run(simulator.draft(DIALOGUE, STRATEGY, None))
    assert unheld.text == "plain reply" and unheld.floor is None
    assert not chat.can_guide and len(chat.model.prompts) == 1


def test_the_client_sends_the_floor_and_the_replies_whole_at_any_length():
    reply = {"text": "Why?", "tokens": 2, "prompt_tokens": 60, "cached_tokens": 50}
    chat, requests = recorded_client(
        lambda request: httpx.Response(200, json=reply), base_url="http://guided.test/v1"
    )
    asyncio.run(chat.guided(DIALOGUE, DIALOGUE, 1.0, min_words=16, whole=[END_MARKER]))
    asyncio.run(chat.guided(DIALOGUE, DIALOGUE, 2.0))
    held, free = (r["body"] for r in requests)
    assert (held["min_words"], held["whole"], held["guidance"]) == (16, [END_MARKER], 1.0)
    assert "min_words" not in free and "whole" not in free  # as before the floor


# --- counting the real lengths, the card, the settings -----------------------------------------


def dialogue(record_id: str, *followups: str) -> Dialogue:
    turns = [Turn("user", "How do vaccines work?"), Turn("assistant", "They train cells.")]
    for text in followups:
        turns += [Turn("user", text), Turn("assistant", "Indeed.")]
    return Dialogue(record_id, tuple(turns), ended_by_user=True)


def test_the_real_follow_ups_are_the_user_turns_after_an_answer():
    dialogues = [dialogue("a", "Why?", " ".join(["word"] * 20)), dialogue("b")]
    assert counting.followups(dialogues) == ["Why?", " ".join(["word"] * 20)]
    entry = counting.card_entry(counting.followups(dialogues), ["chats.jsonl"])
    assert entry["shares"] == {CUES[0]: 0.5, CUES[1]: 0.0, CUES[2]: 0.5, CUES[3]: 0.0}
    assert entry["fewest_words"] == dict(zip(CUES, [0, 8, 16, 32], strict=True))
    assert entry["turns"] == 2 and entry["sources"] == ["chats.jsonl"]
    with pytest.raises(ValueError, match="no turns"):
        counting.card_entry([], ["chats.jsonl"])


def test_the_count_leaves_out_the_held_out_dialogues_and_goes_into_the_card(tmp_path, capsys):
    from cli.induce import load_sources
    from training.pairs import ended_dialogue_name

    data = tmp_path / "chats.jsonl"
    rows = [
        {"messages": [{"role": t.role, "content": t.text} for t in d.turns]}
        for d in (dialogue("one", "Why?"), dialogue("two", " ".join(["word"] * 40)))
    ]
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    [loaded] = load_sources([data], None)
    folder = tmp_path / "sim"
    folder.mkdir()
    card = json.loads((adapters.SHIPPED / "ideas" / "card.json").read_text())
    card.pop("length_floor", None)
    card["counts"]["held_out_names"] = [ended_dialogue_name(data.name, loaded.dialogues[0])]
    (folder / "card.json").write_text(json.dumps(card))

    assert counting.main([str(folder), "--dialogues", str(data)]) == 0
    written = json.loads((folder / "card.json").read_text())
    assert written["length_floor"]["shares"] == {CUES[0]: 0, CUES[1]: 0, CUES[2]: 0, CUES[3]: 1}
    assert written["ending"] == card["ending"]  # the rest kept
    assert "## Length floor" in (folder / "CARD.md").read_text()
    assert "1 real follow-ups" in capsys.readouterr().out
    assert adapters.length_floor(folder / "adapter.gguf") == LengthCues(
        written["length_floor"]["shares"]
    )

    assert counting.main([str(folder), "--dialogues", str(tmp_path / "nowhere.jsonl")]) == 2
    assert "nowhere.jsonl" in capsys.readouterr().err
    assert json.loads((folder / "card.json").read_text()) == written  # untouched


@pytest.mark.parametrize(
    ("entry", "message"),
    [({"shares": {"a novel": 1}}, "length cue"), ({"turns": 3}, "no shares"), ([1], "no shares")],
)
def test_a_broken_floor_in_a_card_is_one_card_error(tmp_path, entry, message):
    (tmp_path / "card.json").write_text(json.dumps({"length_floor": entry}))
    with pytest.raises(adapters.CardError, match=f"card.json: length_floor: .*{message}"):
        adapters.length_floor(tmp_path / "adapter.gguf")
    (tmp_path / "card.json").write_text(json.dumps({"ending": None}))
    assert adapters.length_floor(tmp_path / "adapter.gguf") is None


def test_the_shipped_cards_hold_the_floor_and_say_how_it_is_drawn():
    for agent in ("strategy", "plain"):
        floor = adapters.length_floor(adapters.shipped(agent))
        assert floor is not None and sum(floor.shares.values()) == pytest.approx(1.0)
    card = json.loads((adapters.shipped("strategy").parent / "card.json").read_text())
    assert "Length floor" in markdown(card)
    assert "Length floor" not in markdown({k: v for k, v in card.items() if k != "length_floor"})


def test_the_trained_simulators_are_held_to_their_cards_floor_unless_it_is_off(wiring):
    from agents.registry import SIMULATORS
    from cli.options import add_agent_arguments, add_settings_arguments, settings_from_args

    shipped = adapters.length_floor(adapters.shipped("strategy"))
    w = wiring({})  # on by default
    assert SIMULATORS["strategy"](w).floor == shipped == SIMULATORS["plain"](w).floor
    assert w.settings.fingerprint()["length_floor"] == dict(shipped.shares)
    off = wiring({}, simulator_length_floor=False)
    assert SIMULATORS["strategy"](off).floor is None
    assert "length_floor" not in off.settings.fingerprint()
    untrained = wiring({}, simulator={"adapter": "none"}, simulator_length_floor=True)
    assert SIMULATORS["strategy"](untrained).floor is None
    parser = argparse.ArgumentParser()
    add_settings_arguments(parser)
    add_agent_arguments(parser)
    assert settings_from_args(parser.parse_args([])).simulator_length_floor
    assert not settings_from_args(parser.parse_args(["--no-length-floor"])).simulator_length_floor
