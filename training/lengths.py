"""Count the real users' turn lengths a trained simulator's turns are held to, into its card.

A simulator learns where a turn ends from real follow-ups, yet a small one ends its turns sooner
than real users end theirs (docs/results/guidance/, sections 6-8). Its card's `length_floor`
holds the real users' share of follow-ups of each length (`dialogues.lengths.LENGTHS`), counted
over the dialogues it was trained on (the card's held-out dialogues left out); at run time each
turn draws a length at those shares and its drafts may not end before that length's fewest
words (`agents.simulator.StrategySimulator`'s `floor`).

    python -m training.lengths FOLDER --dialogues FILE...

FOLDER is a `run.py train-simulator` folder; the FILEs are the real dialogues it was trained on
(`scripts/build_simulators.sh` passes the same ones as to training).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from dialogues.lengths import LENGTHS, LengthCues, fewest_words
from induction.records import Dialogue, pairs_of


def followups(dialogues: Iterable[Dialogue]) -> list[str]:
    """The real users' follow-ups: every user turn right after an assistant's (`pairs_of`)."""
    return [pair.followup for dialogue in dialogues for pair in pairs_of(dialogue, "")]


def card_entry(turns: Sequence[str], sources: Sequence[str]) -> dict[str, Any]:
    """The card's `length_floor` entry for these real follow-ups.

    Raises:
        ValueError: There are no follow-ups.
    """
    shares = LengthCues.of(turns).shares
    return {
        "shares": dict(shares),
        "fewest_words": {cue: fewest_words(cue) for _, cue in LENGTHS},
        "rule": "each turn draws a length at the shares; its drafts do not end before that "
        "length's fewest words",
        "turns": len(turns),
        "counted_on": "the real users' follow-ups (each user turn after an assistant's) in the "
        "dialogues it was trained on, its held-out dialogues left out",
        "sources": list(sources),
    }


def main(argv: list[str] | None = None) -> int:
    """Count a trained simulator's real follow-up lengths and write them into its card."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("folder", type=Path, help="a `run.py train-simulator` folder")
    parser.add_argument("--dialogues", nargs="+", type=Path, required=True, metavar="FILE")
    args = parser.parse_args(argv)
    from dialogues.errors import InputError
    from training.card import write_card
    from training.endings import trained_dialogues

    try:
        trained = trained_dialogues(args.folder, args.dialogues)
        entry = card_entry(followups(d for _, d in trained), [f.name for f in args.dialogues])
        card = json.loads((args.folder / "card.json").read_text(encoding="utf-8"))
    except (InputError, ValueError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)  # noqa: T201 - a command's output
        return 2
    write_card(args.folder, card | {"length_floor": entry})
    listed = ", ".join(f"{cue} {share:.2f}" for cue, share in entry["shares"].items())
    print(f"{args.folder}: {entry['turns']} real follow-ups: {listed}")  # noqa: T201
    return 0


if __name__ == "__main__":
    sys.exit(main())
