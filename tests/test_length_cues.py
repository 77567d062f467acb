"""Length cues: a simulator trained with its real follow-ups' lengths, asked for a drawn length."""

from __future__ import annotations

import asyncio
import json
import math
from collections import Counter

import pytest
from langchain_core.messages import AIMessage, HumanMessage

from agents.chat import Scored
from agents.simulator import PlainSimulator, StrategySimulator
from dialogues.ending import END_MARKER, EndingRule
from dialogues.formats import Message as Turn
from dialogues.lengths import LENGTHS, LengthCues, length_cue
from dialogues.models import Usage
from induction.records import Pair
from runtime import adapters
from tests.fakes import ScriptedGuidance
from tests.test_adapters import lora
from training.card import markdown
from training.pairs import build_pairs

DIALOGUE = [
    HumanMessage(content="How do vaccines work?"),
    AIMessage(content="They train memory B and T cells to recognise an antigen."),
]
STRATEGY = "Ask for a concrete example of the claim."
CUES = [cue for _, cue in LENGTHS]
SHARES = {CUES[0]: 0.1, CUES[1]: 0.2, CUES[2]: 0.3, CUES[3]: 0.4}
LORA = lora("cued")


def cue_line(messages) -> str | None:
    """The request's `Length:` line, if any."""
    text = messages[-1].text if hasattr(messages[-1], "text") else messages[-1]["content"]
    lines = [line for line in text.splitlines() if line.startswith("Length: ")]
    assert len(lines) <= 1
    return lines[0] if lines else None


@pytest.mark.parametrize(
    ("words", "cue"),
    [(0, CUES[0]), (7, CUES[0]), (8, CUES[1]), (15, CUES[1]), (16, CUES[2]), (31, CUES[2])]
    + [(32, CUES[3]), (400, CUES[3])],
)
def test_a_turns_cue_is_its_bucket_of_words(words, cue):
    assert length_cue(" ".join(["word"] * words) + "\n") == cue


def test_shares_are_counted_from_turns_and_drawn_at_their_rate():
    turns = ["Why?"] * 3 + ["Could you give me a concrete example of that please?"]
    lengths = LengthCues.of(turns)
    assert lengths.shares == {CUES[0]: 0.75, CUES[1]: 0.25, CUES[2]: 0.0, CUES[3]: 0.0}
    drawn = Counter(LengthCues(SHARES).draw(f"dialogue {k}") for k in range(4000))
    for cue, share in SHARES.items():
        assert abs(drawn[cue] / 4000 - share) < 0.03
    assert len({LengthCues(SHARES).draw("the same dialogue") for _ in range(20)}) == 1
    with pytest.raises(ValueError, match="no turns"):
        LengthCues.of([])


@pytest.mark.parametrize(
    "shares",
    [{}, {"a novel": 1.0}, {CUES[0]: -0.5, CUES[1]: 1.0}, {CUES[0]: 0.0}, {CUES[0]: True}]
    + [{CUES[0]: "half"}],
)
def test_shares_that_cannot_be_drawn_from_are_refused(shares):
    with pytest.raises(ValueError, match="length cue"):
        LengthCues(shares)


# --- the simulator -----------------------------------------------------------------------------


class ScoredGuidance(ScriptedGuidance):
    """Scripted guided drafts; scores the end marker, recording the prompts it scored."""

    def __init__(self, *replies: str) -> None:
        super().__init__(*replies)
        self.scored: list[list] = []

    async def score(self, messages, continuation):
        assert continuation == END_MARKER
        self.scored.append(list(messages))
        return Scored(-5.0, Usage(1, 50, 0, 0.1, 0))


def test_every_prompt_of_a_turn_asks_for_the_same_drawn_length():
    chat = ScoredGuidance("Such as a flu shot?")
    simulator = StrategySimulator(
        chat, guidance=3.0, ending=EndingRule(0.5), lengths=LengthCues(SHARES)
    )
    draft = asyncio.run(simulator.draft(DIALOGUE, STRATEGY, None))
    assert draft.text == "Such as a flu shot?"
    [(messages, against, _)] = chat.asked
    [scored] = chat.scored
    cue = f"Length: {simulator.length_for(DIALOGUE)}."
    assert cue_line(messages) == cue_line(against) == cue_line(scored) == cue
    assert STRATEGY in messages[-1].text and STRATEGY not in against[-1].text
    assert draft.end_probability == pytest.approx(math.exp(-5.0))  # scored, below the rule
    assert cue_line(simulator.messages(DIALOGUE, STRATEGY, None)) == cue
    # another dialogue (or seed) may draw another length: they follow the shares
    drawn = Counter(
        simulator.length_for([HumanMessage(content=f"Question {k}?"), DIALOGUE[1]])
        for k in range(2000)
    )
    assert abs(drawn[CUES[3]] / 2000 - SHARES[CUES[3]]) < 0.04


def test_without_length_cues_the_request_has_no_length():
    for simulator in (StrategySimulator(None), PlainSimulator(None)):  # type: ignore[arg-type]
        assert simulator.length_for(DIALOGUE) is None
        assert cue_line(simulator.messages(DIALOGUE, STRATEGY, None)) is None
        assert "Length" not in simulator.unconditioned(DIALOGUE, None)[-1].text
    plain = PlainSimulator(None, lengths=LengthCues({CUES[1]: 1.0}))  # type: ignore[arg-type]
    assert cue_line(plain.messages(DIALOGUE, STRATEGY, None)) == f"Length: {CUES[1]}."
    assert STRATEGY not in plain.messages(DIALOGUE, STRATEGY, None)[-1].text


# --- training pairs and the card ---------------------------------------------------------------


def pair(record: str, followup: str) -> Pair:
    history = (
        Turn("user", "How do vaccines work?"),
        Turn("assistant", "They train memory cells."),
    )
    return Pair("s.jsonl", record, 1, history, followup)


def test_each_training_request_names_its_real_follow_ups_length():
    short, long = pair("a", "Why?"), pair("b", " ".join(["because"] * 20))
    strategies = {short.key: STRATEGY, long.key: STRATEGY}
    built = build_pairs(
        [short, long], strategies, with_strategy=True, history_tokens=2400, length_cues=True
    )
    by_target = {p.target: p for p in built.pairs}
    assert cue_line(by_target["Why?"].messages) == f"Length: {CUES[0]}."
    assert cue_line(by_target["Why?"].unconditioned) == f"Length: {CUES[0]}."
    assert cue_line(by_target[long.followup].messages) == f"Length: {CUES[2]}."
    assert built.length_cues == LengthCues({CUES[0]: 0.5, CUES[1]: 0.0, CUES[2]: 0.5, CUES[3]: 0})
    plain = build_pairs([short], strategies, with_strategy=False, history_tokens=2400)
    assert cue_line(plain.pairs[0].messages) is None and plain.length_cues is None


def write_card(folder, card) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "adapter.gguf").write_bytes(b"")
    (folder / "card.json").write_text(json.dumps(card))


def test_the_card_holds_the_shares_and_the_simulator_reads_them(tmp_path):
    write_card(tmp_path / "cued", {"length_cues": SHARES})
    assert adapters.length_cues(tmp_path / "cued/adapter.gguf") == LengthCues(SHARES)
    write_card(tmp_path / "older", {"ending": None})
    assert adapters.length_cues(tmp_path / "older/adapter.gguf") is None
    assert adapters.length_cues(tmp_path / "nowhere/adapter.gguf") is None
    write_card(tmp_path / "broken", {"length_cues": {"a novel": 1}})
    with pytest.raises(adapters.CardError, match=r"broken/card.json: length_cues: .*length cue"):
        adapters.length_cues(tmp_path / "broken/adapter.gguf")


def test_the_card_says_how_its_length_cues_are_drawn():
    card = json.loads((adapters.shipped("strategy").parent / "card.json").read_text())
    card.pop("length_cues", None)
    assert "Length cues" not in markdown(card)
    text = markdown(card | {"length_cues": SHARES})
    assert "Length cues: each request names its real follow-up's length" in text
    assert f"{CUES[3]} 0.40" in text


def test_the_trained_simulators_get_the_length_cues_of_their_card(wiring, tmp_path):
    from agents.registry import SIMULATORS

    write_card(tmp_path / "cued", {"length_cues": SHARES})
    (tmp_path / "cued/adapter.gguf").write_bytes(LORA)
    w = wiring({}, simulator={"adapter": str(tmp_path / "cued")})
    assert SIMULATORS["strategy"](w).lengths == LengthCues(SHARES)
    assert SIMULATORS["plain"](w).lengths == LengthCues(SHARES)
    assert SIMULATORS["strategy"](wiring({}, simulator={"adapter": None})).lengths is None
