"""When a trained simulator ends the conversation: its end probability and calibrated rule.

A sampled draft is the end marker with the simulator's probability of it, p_end, wherever that
is: a simulator whose p_end is 0.1 after every reply ends one dialogue in ten at each turn, at
random places, however well p_end ranks the places where real users stopped. The run-time rule is
therefore a decision on p_end itself (`agents.simulator.StrategySimulator`): the server scores the
marker as the reply (`ChatClient.score`), and the user ends when p_end reaches the simulator's
threshold for the user turns so far, `dialogues.ending.EndingRule`: threshold x exp(-per_turn x k).

This module calibrates the rule and writes it into the simulator's card (`ending`). The slope
`per_turn` is a logistic hazard of ending on log p_end and k (`per_turn_slope`); the threshold is
then the one that maximises End F1. Both are fitted on the labelled positions (`positions`) of
the real dialogues the simulator was *trained* on (its card's held-out names are left out, so End
F1 on those stays a held-out measurement, `benchmarks/ending.py`). A simulator fits its training
dialogues better than new ones, so the rule is chosen where p_end separates endings more cleanly
than it will on new dialogues; the card says so.

    python -m training.endings FOLDER --dialogues FILE...

`scripts/build_simulators.sh` runs it for both shipped simulators after training. It starts the
embedded server with FOLDER's adapter (run nothing else on 2 cores); each scored position is kept
in FOLDER/ending-scores.jsonl, so a stopped or repeated run scores only what is new.
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

from dialogues.ending import EndingRule
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
    """The calibrated rule and what it scored on the positions it was chosen on.

    The user ends when p_end >= `threshold` * exp(-`per_turn` * k), k the user turns of the
    dialogue so far (the seed's included): a threshold that falls with each turn when
    `per_turn` > 0, 0 a fixed one.
    """

    threshold: float
    f1: float
    """End F1 of the rule on the positions it was chosen on."""
    positions: int
    endings: int
    predicted: int
    """Positions where the rule ends."""
    per_turn: float = 0.0

    def rule(self) -> EndingRule:
        """The run-time rule (`dialogues.ending.EndingRule`)."""
        return EndingRule(self.threshold, self.per_turn)

    def card(self, sources: Sequence[str], strategy: str) -> dict[str, Any]:
        """The card's `ending` entry."""
        return {
            "rule": "end when the probability of the end marker as the reply is >= "
            "threshold * exp(-per_turn * user turns so far)",
            **asdict(self),
            "calibrated_on": "the labelled positions of the real dialogues it was trained on "
            "(its held-out dialogues left out): in-sample, so separation is better there than "
            "on new dialogues",
            "sources": list(sources),
            "strategy": strategy,
        }


def user_turns(history: Sequence[dict[str, str]]) -> int:
    """The user turns of an OpenAI-style history (the k of `Threshold.at`)."""
    return sum(m["role"] == "user" for m in history)


def calibrate(probabilities: Sequence[float], ends: Sequence[bool]) -> Threshold:
    """Return the fixed threshold with the highest End F1 on these positions.

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


def per_turn_slope(
    probabilities: Sequence[float], turns: Sequence[int], ends: Sequence[bool]
) -> float:
    """How much each user turn lowers the log-threshold: a logistic hazard of ending.

    A discrete-time hazard model (logistic regression of `ends` on log p_end and the user
    turns so far, over the positions a user could have ended at; a dialogue its source cut
    contributes its turns as continuations, the censoring of survival analysis) gives weights
    w_p and w_k; ending where w_p log p_end + w_k k is high is ending where p_end >=
    C exp(-(w_k / w_p) k). So the slope is w_k / w_p, and 0 when p_end carries no weight
    (w_p <= 0) or the turns lower the hazard (w_k <= 0): then the fixed threshold.

    The run-time prompt keeps only the newest history (the history budget), so the simulator
    cannot count a long dialogue's turns itself; real users' stopping rises with them.
    """
    import numpy as np
    from scipy.optimize import minimize

    x = np.c_[np.log(np.maximum(probabilities, 1e-300)), np.asarray(turns, float)]
    y = np.asarray(ends, float)
    mean, scale = x.mean(0), x.std(0) + 1e-12
    z = np.c_[(x - mean) / scale, np.ones(len(x))]

    def loss(b: np.ndarray) -> float:
        logits = z @ b
        return float((np.logaddexp(0, logits) - y * logits).sum() + 0.5e-2 * (b[:2] ** 2).sum())

    b = minimize(loss, np.zeros(3), method="L-BFGS-B").x
    w_p, w_k = b[0] / scale[0], b[1] / scale[1]
    return float(w_k / w_p) if w_p > 0 and w_k > 0 else 0.0


def calibrate_rule(
    probabilities: Sequence[float], turns: Sequence[int], ends: Sequence[bool]
) -> Threshold:
    """The per-turn slope (`per_turn_slope`), then the threshold of the best End F1 under it."""
    slope = per_turn_slope(probabilities, turns, ends)
    shifted = [p * math.exp(slope * k) for p, k in zip(probabilities, turns, strict=True)]
    fixed = calibrate(shifted, ends)
    return Threshold(
        fixed.threshold, fixed.f1, fixed.positions, fixed.endings, fixed.predicted, slope
    )


async def end_probabilities(
    simulator: Any,
    found: Sequence[Position],
    strategy: str,
    *,
    show: bool = False,
    cache: ScoreCache | None = None,
) -> list[float]:
    """p_end at each position (`StrategySimulator.end_probability`), one request at a time.

    `show`: a progress bar on stderr (positions scored, time left). `cache`: positions scored
    before are taken from it, and each new score is appended to it at once (a stopped run
    resumes where it stopped).
    """
    from rich.console import Console
    from rich.progress import track

    from dialogues.messages import to_langchain

    probabilities = []
    console = Console(stderr=True)
    shown = track(found, "scoring the end marker", console=console, disable=not show)
    for p in shown:
        value = cache.get(p, strategy) if cache is not None else None
        if value is None:
            value = await simulator.end_probability(to_langchain(list(p.history)), strategy)
            if value is None:
                raise RuntimeError("the server cannot score replies: no end probability")
            if cache is not None:
                cache.add(p, strategy, value)
        probabilities.append(value)
    return probabilities


class ScoreCache:
    """p_end per position of one adapter, in a JSON-lines file appended one score at a time.

    A line names the position (source, dialogue, history length), the strategy and the adapter's
    sha256; a line of another adapter or strategy is ignored, and so is a torn last line.
    """

    def __init__(self, path: Path, adapter: Path) -> None:
        """Read the scores `path` holds for `adapter` (none if it does not exist)."""
        import hashlib

        self.path = path
        self.adapter = hashlib.sha256(adapter.read_bytes()).hexdigest()[:16]
        self.scores: dict[tuple[str, str, int, str], float] = {}
        if path.is_file():
            for line in path.read_text(encoding="utf-8").splitlines():
                try:
                    row = json.loads(line)
                except ValueError:
                    continue  # a line torn by a stopped run
                if row.get("adapter") == self.adapter:
                    key = (row["source"], row["dialogue"], row["history"], row["strategy"])
                    self.scores[key] = float(row["p_end"])

    @staticmethod
    def _key(p: Position, strategy: str) -> tuple[str, str, int, str]:
        return (p.source, p.dialogue, len(p.history), strategy)

    def get(self, p: Position, strategy: str) -> float | None:
        """The cached p_end of position `p` with `strategy`, or None."""
        return self.scores.get(self._key(p, strategy))

    def add(self, p: Position, strategy: str, p_end: float) -> None:
        """Append one score (a whole line, flushed)."""
        source, dialogue, history, _ = key = self._key(p, strategy)
        self.scores[key] = p_end
        row = {
            "source": source,
            "dialogue": dialogue,
            "history": history,
            "strategy": strategy,
            "adapter": self.adapter,
            "ends": p.ends,
            "p_end": p_end,
        }
        with self.path.open("a", encoding="utf-8") as out:
            out.write(json.dumps(row) + "\n")


def trained_positions(folder: Path, files: Sequence[Path]) -> list[Position]:
    """The labelled positions of the dialogues in `files` that the card does not hold out.

    Raises:
        ValueError: The card lists no held-out names (an older card).
    """
    return positions(trained_dialogues(folder, files))


def trained_dialogues(folder: Path, files: Sequence[Path]) -> list[tuple[str, Dialogue]]:
    """The dialogues in `files` that the card in `folder` does not hold out, with their file.

    Raises:
        ValueError: There is no card, it lists no held-out names (an older card), or a file is
            missing or holds no dialogues.
    """
    from induction.loaders import load
    from training.pairs import ended_dialogue_name

    if not (folder / "card.json").is_file():
        raise ValueError(f"{folder}: no card.json there (a `run.py train-simulator` folder)")
    held = json.loads((folder / "card.json").read_text(encoding="utf-8"))["counts"].get(
        "held_out_names"
    )
    if held is None:
        raise ValueError(f"{folder}/card.json lists no held-out dialogues; retrain to calibrate")
    held = set(held)
    missing = next((f for f in files if not Path(f).is_file()), None)
    if missing is not None:
        raise ValueError(f"{missing}: file not found")
    loaded = [load(f) for f in files]  # NotDialogueFile is a ValueError
    return [
        (r.path.name, d)
        for r in loaded
        for d in r.dialogues
        if ended_dialogue_name(r.path.name, d) not in held
    ]


def write_threshold(folder: Path, found: Threshold, sources: Sequence[str], strategy: str) -> None:
    """Record the rule in the card of `folder` (`card.json` and `CARD.md`)."""
    from training.card import write_card

    card = json.loads((folder / "card.json").read_text(encoding="utf-8"))
    write_card(folder, card | {"ending": found.card(sources, strategy)})


def main(argv: list[str] | None = None) -> int:
    """Calibrate a trained simulator's ending rule and write it into its card."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("folder", type=Path, help="a `run.py train-simulator` folder")
    parser.add_argument("--dialogues", nargs="+", type=Path, required=True, metavar="FILE")
    parser.add_argument("--plain", action="store_true", help="the plain simulator's prompt")
    parser.add_argument("--strategy", default=DEFAULT_STRATEGY)
    args = parser.parse_args(argv)
    from dialogues.errors import InputError

    try:
        found = trained_positions(args.folder, args.dialogues)
        probabilities = measure(args.folder, found, args.strategy, plain=args.plain)
        turns = [user_turns(p.history) for p in found]
        threshold = calibrate_rule(probabilities, turns, [p.ends for p in found])
    except (InputError, ValueError, OSError, RuntimeError) as exc:
        print(f"error: {exc}", file=sys.stderr)  # noqa: T201 - a command's output
        return 2
    write_threshold(args.folder, threshold, [f.name for f in args.dialogues], args.strategy)
    print(  # noqa: T201
        f"{args.folder}: end when p_end >= {threshold.threshold:.4g} * "
        f"exp(-{threshold.per_turn:.3g} * user turns) (End F1 {threshold.f1:.3f} "
        f"on {threshold.positions} trained positions, {threshold.endings} endings, "
        f"{threshold.predicted} predicted)"
    )
    return 0


SCORES_FILE = "ending-scores.jsonl"
"""The scored positions a calibration keeps in the simulator's folder (`ScoreCache`)."""


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
        cache = ScoreCache(folder / SCORES_FILE, folder / "adapter.gguf")
        return asyncio.run(end_probabilities(simulator, found, strategy, show=True, cache=cache))


if __name__ == "__main__":
    sys.exit(main())
