"""When a trained simulator ends the conversation: its end probability and calibrated threshold.

A sampled draft is the end marker with the simulator's probability of it, p_end, wherever that
is: a simulator whose p_end is 0.1 after every reply ends one dialogue in ten at each turn, at
random places, however well p_end ranks the places where real users stopped. The run-time rule is
therefore a decision on p_end itself (`agents.simulator.StrategySimulator`): the server scores the
marker as the reply (`ChatClient.score`), and the user ends when p_end is at least the simulator's
threshold, which this module calibrates and writes into its card (`ending.threshold`).

The threshold is the one that maximises End F1 over the labelled positions (`positions`) of the
real dialogues the simulator was *trained* on (its card's held-out names are left out, so End F1
on those stays a held-out measurement, `benchmarks/ending.py`). A simulator fits its training
dialogues better than new ones, so this threshold is chosen where p_end separates endings more
cleanly than it will on new dialogues; the card says so.

    python -m training.endings FOLDER --dialogues FILE...

`scripts/build_simulators.sh` runs it for both shipped simulators after training. It starts the
embedded server with FOLDER's adapter (run nothing else on 2 cores).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import sys
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from induction.records import Dialogue

DEFAULT_STRATEGY = "Continue the conversation the way this user would."
"""The strategy in the strategy simulator's prompt at a real position (teacher forcing has no
strategist); the End F1 benchmark sends the same one."""


@dataclass(frozen=True)
class Position:
    """One teacher-forced decision: the history up to an assistant reply, and what the user did."""

    dialogue: str
    history: tuple[dict[str, str], ...]
    ends: bool
    """The real user ended the conversation here (else a real user turn follows)."""
    source: str = ""
    """The file the dialogue came from (for the per-source counts)."""


def positions(
    dialogues: Iterable[Dialogue | tuple[str, Dialogue]], limit: int | None = None
) -> list[Position]:
    """Every labelled position after an assistant reply (a cut dialogue's last one is skipped).

    The last reply of a dialogue its user ended is an `end`; a reply a real user turn follows is
    a `continue`; the last reply of a dialogue cut by its source (an OpenAssistant tree, a
    transcript) is unknown and left out. A dialogue may come as `(source, dialogue)`, which
    names its source in the positions.
    """
    found: list[Position] = []
    for item in dialogues:
        source, dialogue = item if isinstance(item, tuple) else ("", item)
        turns = [{"role": t.role, "content": t.text} for t in dialogue.turns]
        for i, turn in enumerate(turns):
            if turn["role"] != "assistant":
                continue
            last = i == len(turns) - 1
            if last and not dialogue.ended_by_user:
                continue
            found.append(Position(dialogue.record_id, tuple(turns[: i + 1]), last, source))
            if limit is not None and len(found) >= limit:
                return found
    return found


@dataclass(frozen=True)
class Threshold:
    """The calibrated rule, end when p_end >= `threshold`, and what it scored where chosen."""

    threshold: float
    f1: float
    """End F1 at this threshold on the positions it was chosen on."""
    positions: int
    endings: int
    predicted: int
    """Positions at or above the threshold."""

    def card(self, sources: Sequence[str], strategy: str) -> dict[str, Any]:
        """The card's `ending` entry."""
        return {
            "rule": "end when the probability of the end marker as the reply is >= threshold",
            **asdict(self),
            "calibrated_on": "the labelled positions of the real dialogues it was trained on "
            "(its held-out dialogues left out): in-sample, so separation is better there than "
            "on new dialogues",
            "sources": list(sources),
            "strategy": strategy,
        }


def calibrate(probabilities: Sequence[float], ends: Sequence[bool]) -> Threshold:
    """Return the threshold with the highest End F1 on these positions.

    The candidates are the positions' own probabilities (end where p >= it); of equal F1 the
    highest wins (fewer endings). The threshold returned lies halfway, in log-probability,
    between the chosen position's probability and the next lower one, so a new position as
    likely as the lowest predicted ending is not decided by rounding.

    Raises:
        ValueError: No position is an ending, or the sequences differ in length.
    """
    if len(probabilities) != len(ends):
        raise ValueError("one probability per position")
    total = sum(ends)
    if not total:
        raise ValueError("no position is an ending: nothing to calibrate on")
    order = sorted(zip(probabilities, ends, strict=True), key=lambda pe: -pe[0])
    best = (-1.0, 0)  # f1, how many predicted
    tp = 0
    for i, (p, end) in enumerate(order):
        tp += end
        if i + 1 < len(order) and order[i + 1][0] == p:
            continue  # the same probability: predicted together
        f1 = 2 * tp / (i + 1 + total)
        if f1 > best[0]:
            best = (f1, i + 1)
    f1, predicted = best
    chosen = order[predicted - 1][0]
    below = order[predicted][0] if predicted < len(order) else 0.0
    threshold = math.sqrt(chosen * below) if below > 0 else chosen / 2
    return Threshold(threshold, f1, len(order), total, predicted)


async def end_probabilities(
    simulator: Any, found: Sequence[Position], strategy: str
) -> list[float]:
    """p_end at each position (`StrategySimulator.end_probability`), one request at a time."""
    from dialogues.messages import to_langchain

    probabilities = []
    for p in found:
        value = await simulator.end_probability(to_langchain(list(p.history)), strategy)
        if value is None:
            raise RuntimeError("the server cannot score replies: no end probability")
        probabilities.append(value)
    return probabilities


def trained_positions(folder: Path, files: Sequence[Path]) -> list[Position]:
    """The labelled positions of the dialogues in `files` that the card does not hold out.

    Raises:
        ValueError: The card lists no held-out names (an older card).
    """
    from cli.induce import load_sources
    from training.pairs import ended_dialogue_name

    held = json.loads((folder / "card.json").read_text(encoding="utf-8"))["counts"].get(
        "held_out_names"
    )
    if held is None:
        raise ValueError(f"{folder}/card.json lists no held-out dialogues; retrain to calibrate")
    held = set(held)
    loaded = load_sources(list(files), None)
    return positions(
        (r.path.name, d)
        for r in loaded
        for d in r.dialogues
        if ended_dialogue_name(r.path.name, d) not in held
    )


def write_threshold(folder: Path, found: Threshold, sources: Sequence[str], strategy: str) -> None:
    """Record the threshold in the card of `folder` (`card.json` and `CARD.md`)."""
    from training.card import write_card

    card = json.loads((folder / "card.json").read_text(encoding="utf-8"))
    write_card(folder, card | {"ending": found.card(sources, strategy)})


def main(argv: list[str] | None = None) -> int:
    """Calibrate a trained simulator's ending threshold and write it into its card."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("folder", type=Path, help="a `run.py train-simulator` folder")
    parser.add_argument("--dialogues", nargs="+", type=Path, required=True, metavar="FILE")
    parser.add_argument("--plain", action="store_true", help="the plain simulator's prompt")
    parser.add_argument("--strategy", default=DEFAULT_STRATEGY)
    args = parser.parse_args(argv)
    from cli.errors import UsageError
    from runtime.settings import SettingsError

    try:
        found = trained_positions(args.folder, args.dialogues)
        probabilities = measure(args.folder, found, args.strategy, plain=args.plain)
        threshold = calibrate(probabilities, [p.ends for p in found])
    except (UsageError, SettingsError, ValueError, OSError, RuntimeError) as exc:
        print(f"error: {exc}", file=sys.stderr)  # noqa: T201 - a command's output
        return 2
    write_threshold(args.folder, threshold, [f.name for f in args.dialogues], args.strategy)
    print(  # noqa: T201
        f"{args.folder}: end when p_end >= {threshold.threshold:.4g} (End F1 {threshold.f1:.3f} "
        f"on {threshold.positions} trained positions, {threshold.endings} endings, "
        f"{threshold.predicted} predicted)"
    )
    return 0


def measure(folder: Path, found: Sequence[Position], strategy: str, *, plain: bool) -> list[float]:
    """p_end at each position, from the simulator in `folder` on the embedded server."""
    from agents.registry import SIMULATORS
    from runtime.settings import load_settings
    from wiring.session import Session

    agent = "plain" if plain else "strategy"
    settings = load_settings(
        None, simulator={"adapter": str(folder)}, agents={"simulator": agent}, ending="never"
    )
    with Session(settings) as session:
        simulator = SIMULATORS[agent](session)
        return asyncio.run(end_probabilities(simulator, found, strategy))


if __name__ == "__main__":
    sys.exit(main())
