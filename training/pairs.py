"""Training pairs: exactly what the user simulator is sent at run time, and the real follow-up.

For each real (history, follow-up) pair with a team-written strategy, the input is the chat the
strategy simulator would send for that history (`StrategySimulator.messages`, then
`fit_history` with the same token budget), and the target is what the real user wrote next.
Building the input with the simulator's own functions keeps training and run time in step.

With endings (`build_end_pairs`, `train-simulator --endings`, off by default until the shipped
simulators are retrained), each real dialogue that the *user* ended also gives one pair after its
last assistant reply whose target is `dialogues.ending.END_MARKER`, as UserLM does. Only dialogues
whose data says the user stopped count (`Dialogue.ended_by_user`: SimulatorArena, whose people
stopped by themselves and said why); an OpenAssistant tree ends where the tree stops, and an
HH-RLHF or RealHumanEval transcript where its collection ended it, so those are cut by their
source, not ended, and give no ending pair (counted as dropped, "cut by the source").
"""

from __future__ import annotations

import random
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Literal

from langchain_core.messages import BaseMessage

from agents.chat import fit_history
from agents.simulator import PlainSimulator, StrategySimulator
from dialogues.ending import END_MARKER
from dialogues.lengths import LengthCues, length_cue
from dialogues.messages import to_langchain, to_openai
from induction.extract import Extraction, Key
from induction.library import extracted_record_id
from induction.records import Dialogue, Pair, pairs_of
from stores.base import StrategyRecord

StrategyLevel = Literal["high", "extracted"]
"""Which strategy a pair is trained with: its top-tier ancestor (what the strategist retrieves
at run time) or the strategy written for that very follow-up."""


@dataclass(frozen=True)
class TrainingPair:
    """One training example before tokenisation."""

    key: Key
    """The real pair's `(source, record_id, turn)`."""
    dialogue: str
    """The dialogue (or conversation tree) it comes from: the unit of the train/held-out split."""
    messages: list[dict[str, str]]
    """The chat messages the simulator sends, OpenAI style (`role`, `content`)."""
    target: str
    """The real user's follow-up."""
    strategy: str | None
    """The strategy text in the prompt (None for the plain variant)."""
    ending: bool = False
    """The target is the end marker: the real user ended the conversation after this history."""
    unconditioned: list[dict[str, str]] | None = None
    """The same history with the contrast request, no strategy (`StrategySimulator.unconditioned`):
    what strategy dropout trains instead of `messages` (None for the plain variant)."""


@dataclass
class PairSet:
    """Training pairs and the counts of real pairs left out, with the reason."""

    pairs: list[TrainingPair]
    dropped: dict[str, int] = field(default_factory=dict)
    length_cues: LengthCues | None = None
    """The real follow-ups' shares of each length cue (`build_pairs(length_cues=True)`): what
    the card stores for the run time to draw at, and what ending pairs draw their cue at."""


def strategy_texts(
    extractions: Iterable[Extraction], records: Sequence[StrategyRecord], level: StrategyLevel
) -> dict[Key, str]:
    """Map each annotated pair to its strategy text at `level`, via the library's parent links.

    Pairs whose extracted strategy is not in the library are left out, for both levels, so the
    pair set does not depend on the level chosen.
    """
    by_id = {r.id: r for r in records}
    texts = {}
    for extraction in extractions:
        record = by_id.get(extracted_record_id(*extraction.key))
        if record is None:
            continue
        if level == "high":
            while record.level != "high" and record.parent_id in by_id:
                record = by_id[record.parent_id]
        texts[extraction.key] = record.text
    return texts


def dialogue_of(pair: Pair) -> str:
    """Name the dialogue of a pair: its first message's id (a tree's root) or its record id."""
    return f"{pair.source}\x1f{pair.history[0].id or pair.record_id}"


def build_pairs(
    pairs: Iterable[Pair],
    strategies: Mapping[Key, str],
    *,
    with_strategy: bool,
    history_tokens: int,
    length_cues: bool = False,
) -> PairSet:
    """Build the training pairs of every real pair that has a strategy.

    Args:
        pairs: Real pairs from `induction.loaders.load`.
        strategies: Strategy text per pair key (`strategy_texts`); pairs without one are dropped.
        with_strategy: The strategy simulator's prompt with the pair's strategy, or the plain
            simulator's prompt (the same pairs either way).
        history_tokens: The history budget the chat client fits messages to at run time.
        length_cues: Each request carries the length cue of the pair's real follow-up
            (`dialogues.lengths.length_cue`); the set's `length_cues` holds their shares.
    """
    kind = StrategySimulator if with_strategy else PlainSimulator
    simulator = kind(chat=None)  # type: ignore[arg-type] - never calls the model
    built, dropped = [], {"without strategy": 0}
    for pair in pairs:
        strategy = strategies.get(pair.key)
        if strategy is None:
            dropped["without strategy"] += 1
            continue
        history = to_langchain({"role": t.role, "content": t.text} for t in pair.history)
        length = length_cue(pair.followup) if length_cues else None
        built.append(
            TrainingPair(
                key=pair.key,
                dialogue=dialogue_of(pair),
                target=pair.followup,
                **_prompts(simulator, history, strategy, with_strategy, history_tokens, length),
            )
        )
    shares = LengthCues.of(p.target for p in built) if length_cues and built else None
    return PairSet(built, dropped, shares)


def build_end_pairs(
    dialogues: Iterable[tuple[str, Dialogue]],
    strategies: Mapping[Key, str],
    *,
    with_strategy: bool,
    history_tokens: int,
    lengths: LengthCues | None = None,
) -> PairSet:
    """Build one ending pair per real dialogue the user ended: its whole history -> `END_MARKER`.

    At run time the strategist chooses a strategy before the simulator drafts, so an ending is
    drafted with a strategy in the prompt too; the pair gets the strategy of the dialogue's last
    annotated follow-up (the nearest stand-in for what the strategist retrieves in that dialogue).
    A dialogue without any is dropped for both variants, as `build_pairs` does, so the pair set
    does not depend on the variant.

    Args:
        dialogues: `(source file's base name, dialogue)`, as `induction.loaders.load` reads them.
        strategies: Strategy text per pair key (`strategy_texts`).
        with_strategy: The strategy simulator's prompt, or the plain one.
        history_tokens: The history budget the chat client fits messages to at run time.
        lengths: Each request carries a length cue drawn at these shares, as at run time (an
            ending has no length of its own, so the cue says nothing about ending).
    """
    kind = StrategySimulator if with_strategy else PlainSimulator
    simulator = kind(chat=None, lengths=lengths)  # type: ignore[arg-type] - never calls the model
    built: list[TrainingPair] = []
    dropped = {"cut by the source": 0, "ends with a user turn": 0, "without strategy": 0}
    for source, dialogue in dialogues:
        if not dialogue.ended_by_user:
            dropped["cut by the source"] += 1
            continue
        if dialogue.turns[-1].role != "assistant":
            dropped["ends with a user turn"] += 1
            continue
        followups = pairs_of(dialogue, source)
        strategy = next(
            (strategies[p.key] for p in reversed(followups) if p.key in strategies), None
        )
        if strategy is None:
            dropped["without strategy"] += 1
            continue
        history = to_langchain({"role": t.role, "content": t.text} for t in dialogue.turns)
        turn = sum(t.role == "user" for t in dialogue.turns)
        built.append(
            TrainingPair(
                key=(source, dialogue.record_id, turn),
                dialogue=ended_dialogue_name(source, dialogue),
                target=END_MARKER,
                ending=True,
                **_prompts(simulator, history, strategy, with_strategy, history_tokens),
            )
        )
    return PairSet(built, dropped)


def _prompts(
    simulator: StrategySimulator,
    history: list[BaseMessage],
    strategy: str,
    with_strategy: bool,
    history_tokens: int,
    length: str | None = None,
) -> dict[str, Any]:
    """The prompt fields of a pair: what the simulator sends, fitted as the chat client fits it.

    `length`: the request's length cue (default: the simulator's own, `length_for`).
    """
    sent = fit_history(simulator.messages(history, strategy, None, length), history_tokens)
    fields: dict[str, Any] = {"messages": to_openai(sent), "strategy": None}
    if with_strategy:
        bare = fit_history(simulator.unconditioned(history, None, length), history_tokens)
        fields |= {"strategy": strategy, "unconditioned": to_openai(bare)}
    return fields


def drop_strategies(pairs: list[TrainingPair], share: float, seed: int) -> list[TrainingPair]:
    """Strategy dropout: train about `share` of the pairs on their `unconditioned` prompt.

    Guided drafts contrast the simulator's next-token distribution under its strategy with the
    one under the contrast request; trained only with strategies, the simulator never saw that
    request, so the contrast also carried what an unfamiliar prompt does to it. With dropout it
    learns the real users' follow-ups without a strategy too (classifier-free guidance's recipe).
    Which pairs drop depends on the seed and the pair's key alone (reruns and resumes agree).
    """
    if share <= 0:
        return pairs
    return [
        replace(pair, messages=pair.unconditioned, strategy=None)
        if pair.unconditioned is not None and random.Random(f"{seed}/{pair.key}").random() < share
        else pair
        for pair in pairs
    ]


def ended_dialogue_name(source: str, dialogue: Dialogue) -> str:
    """Name a whole dialogue as `dialogue_of` names its pairs (the split's unit)."""
    return f"{source}\x1f{dialogue.turns[0].id or dialogue.record_id}"


def held_out_dialogues(names: Iterable[str], held_out: float, seed: int) -> set[str]:
    """The dialogues held out of `names`: about `held_out` of them (at least one of two or more).

    The same names, share and seed give the same split, whatever order the names come in.
    """
    dialogues = sorted(set(names))
    random.Random(seed).shuffle(dialogues)
    n = max(1, round(len(dialogues) * held_out)) if len(dialogues) > 1 and held_out > 0 else 0
    return set(dialogues[:n])


def split_by_dialogue(
    pairs: Sequence[TrainingPair], held_out: float, seed: int
) -> tuple[list[TrainingPair], list[TrainingPair]]:
    """Split into (train, held-out) by dialogue, never by pair; the same seed gives the same split.

    About `held_out` of the dialogues (at least one when there are two or more) are held out.
    """
    kept_out = held_out_dialogues((p.dialogue for p in pairs), held_out, seed)
    train = [p for p in pairs if p.dialogue not in kept_out]
    return train, [p for p in pairs if p.dialogue in kept_out]
