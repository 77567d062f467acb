"""Does the simulator end the conversation where real users did? End F1 per turn, teacher-forced.

For every real dialogue of the given files and every position after an assistant reply, the
simulator is sent the real history (as at run time, with `--strategy` in the strategy prompt)
and drafts the user's next turn. The draft predicts an ending when it is the end marker
(`dialogues.ending.is_end_marker`). The truth at that position:

- `end`: the last assistant reply of a dialogue whose user ended it (SimulatorArena's);
- `continue`: a real user turn follows;
- unknown, skipped: the last reply of a dialogue cut by its source (OpenAssistant trees,
  RealHumanEval and HH-RLHF transcripts), whose user we never saw decide.

End F1 is the F1 of the `end` class over the labelled positions (UserLM reports it the same way:
UserLM-8b 63.5, prompted GPT-4o 1.4). Use files the simulator was never trained on, or its
held-out dialogues only (`--dialogues` takes any format the reader accepts):

    python benchmarks/ending.py --simulator ideas --baseline --dialogues FILE...

`--simulator`: `ideas` / `plain` (the shipped trained adapters), `prompted` (the strategy prompt,
no adapter), or a trained folder. It starts the embedded server (run nothing else on 2 cores).
Its last line: `ending: End F1 0.NN (prompted 0.NN); length distance learned/never x0.NN`; a part
not measured in this run is `n/a` (the prompted baseline needs `--baseline`; the length ratio
needs generated batches, which this skeleton does not run yet).
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from dialogues.ending import is_end_marker  # noqa: E402
from induction.records import Dialogue  # noqa: E402

DEFAULT_STRATEGY = "Continue the conversation the way this user would."
"""The strategy in the prompt of the strategy simulator when none is given (teacher forcing has
no strategist); `--strategy` replaces it."""

Draft = Callable[[list[dict[str, str]]], Awaitable[str]]
"""Draft the next user turn for an OpenAI-style history."""


@dataclass(frozen=True)
class Position:
    """One teacher-forced decision: the history up to an assistant reply, and what the user did."""

    dialogue: str
    history: tuple[dict[str, str], ...]
    ends: bool
    """The real user ended the conversation here (else a real user turn follows)."""


def positions(dialogues: Iterable[Dialogue], limit: int | None = None) -> list[Position]:
    """Every labelled position after an assistant reply (a cut dialogue's last one is skipped)."""
    found: list[Position] = []
    for dialogue in dialogues:
        turns = [{"role": t.role, "content": t.text} for t in dialogue.turns]
        for i, turn in enumerate(turns):
            if turn["role"] != "assistant":
                continue
            last = i == len(turns) - 1
            if last and not dialogue.ended_by_user:
                continue
            found.append(Position(dialogue.record_id, tuple(turns[: i + 1]), last))
            if limit is not None and len(found) >= limit:
                return found
    return found


@dataclass(frozen=True)
class Scores:
    """End-class counts and F1 over the labelled positions."""

    tp: int
    fp: int
    fn: int
    tn: int

    @property
    def f1(self) -> float:
        """F1 of the `end` class (0 when it was never predicted nor true)."""
        return 2 * self.tp / (2 * self.tp + self.fp + self.fn) if self.tp else 0.0


def end_scores(truth: Sequence[bool], predicted: Sequence[bool]) -> Scores:
    """Count true/false positives and negatives of the `end` class."""
    pairs = list(zip(truth, predicted, strict=True))
    return Scores(
        tp=sum(t and p for t, p in pairs),
        fp=sum(p and not t for t, p in pairs),
        fn=sum(t and not p for t, p in pairs),
        tn=sum(not t and not p for t, p in pairs),
    )


async def predict(found: Sequence[Position], draft: Draft) -> list[bool]:
    """Ask the simulator at every position, one at a time; True where it drafts the marker."""
    return [is_end_marker(await draft(list(p.history))) for p in found]


def summary_line(f1: float | None, prompted: float | None, ratio: float | None) -> str:
    """The benchmark's last line (`n/a` for a part not measured)."""

    def shown(value: float | None, fmt: str) -> str:
        return "n/a" if value is None else format(value, fmt)

    return (
        f"ending: End F1 {shown(f1, '.2f')} (prompted {shown(prompted, '.2f')}); "
        f"length distance learned/never x{shown(ratio, '.2f')}"
    )


def simulator_draft(session, name: str, strategy: str) -> Draft:  # noqa: ANN001 - a Session
    """The run-time simulator of `session` as a `Draft` (strategy prompt unless plain)."""
    from agents.registry import SIMULATORS
    from dialogues.messages import to_langchain

    simulator = SIMULATORS["plain" if name == "plain" else "strategy"](session)

    async def draft(history: list[dict[str, str]]) -> str:
        return (await simulator.draft(to_langchain(history), strategy, None)).text

    return draft


def settings_for(name: str):  # noqa: ANN201 - runtime.settings.Settings
    """Settings of the embedded simulator `name`: a shipped variant, `prompted` or a folder."""
    from runtime.settings import load_settings

    adapter = {"ideas": "trained", "plain": "trained", "prompted": "none"}.get(name, name)
    agents = {"simulator": "plain" if name == "plain" else "strategy"}
    return load_settings(None, simulator={"adapter": adapter}, agents=agents)


def measure(name: str, found: Sequence[Position], strategy: str) -> Scores:
    """Run one simulator over the positions on the embedded server."""
    from wiring.session import Session

    with Session(settings_for(name)) as session:
        predicted = asyncio.run(predict(found, simulator_draft(session, name, strategy)))
    return end_scores([p.ends for p in found], predicted)


def main(argv: list[str] | None = None) -> int:
    """Parse the flags, measure, print the scores and the summary line."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--dialogues", nargs="+", required=True, type=Path, metavar="FILE")
    parser.add_argument("--simulator", default="ideas", help="ideas, plain, prompted or a folder")
    parser.add_argument("--baseline", action="store_true", help="also measure the prompted one")
    parser.add_argument("--strategy", default=DEFAULT_STRATEGY)
    parser.add_argument("--limit", type=int, help="at most N positions (a quick look)")
    args = parser.parse_args(argv)
    from cli.errors import UsageError
    from cli.induce import load_sources

    try:
        loaded = load_sources(args.dialogues, None)
    except UsageError as exc:
        print(f"error: {exc}", file=sys.stderr)  # noqa: T201 - a benchmark's output
        return 2
    found = positions((d for r in loaded for d in r.dialogues), args.limit)
    ends = sum(p.ends for p in found)
    print(f"{len(found)} positions, {ends} real endings")  # noqa: T201
    if not ends:
        print("error: no dialogue in these files was ended by its user", file=sys.stderr)  # noqa: T201
        return 2
    scores = measure(args.simulator, found, args.strategy)
    print(f"{args.simulator}: {scores} End F1 {scores.f1:.3f}")  # noqa: T201
    prompted = None
    if args.baseline and args.simulator != "prompted":
        base = measure("prompted", found, args.strategy)
        print(f"prompted: {base} End F1 {base.f1:.3f}")  # noqa: T201
        prompted = base.f1
    elif args.simulator == "prompted":
        prompted = scores.f1
    print(summary_line(scores.f1, prompted, None))  # noqa: T201
    return 0


if __name__ == "__main__":
    sys.exit(main())
