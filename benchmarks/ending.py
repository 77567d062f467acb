"""Does the simulator end the conversation where real users did? End F1 per turn, teacher-forced.

For every real dialogue of the given files and every position after an assistant reply, the
simulator is sent the real history (as at run time, with `--strategy` in the strategy prompt)
and decides as at run time whether the user ends: a simulator whose card holds a calibrated
ending rule (`training.endings`) ends where the probability of the end marker as its reply
reaches the rule's threshold for the user turns so far; one without drafts the user's next
turn, and ends where the draft is the end marker (`dialogues.ending.is_end_marker`). The truth
at that position:

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
`--held-out` keeps only the dialogues the simulator never trained on: the names its card lists
(`counts.held_out_names`; the prompted baseline uses the `ideas` card's), or for an older card
the same split by dialogue as `train-simulator` rebuilt (share 0.1, seed 0, over the dialogues of
the shipped build's pairs: `induction.real_dialogues`, the team extractions and the default
library).

The length part compares two batches generated on the same seeds with the same `--turns`, one
with `--ending learned` and one with `--ending never` (`--learned RUN_DIR --never RUN_DIR`): the
Wasserstein distance W1 between user turns per dialogue and the real dialogues' (`--reference`
files), each with a 95% bootstrap interval over dialogues, and their ratio with its interval.

Its last line: `ending: End F1 0.NN (prompted 0.NN); length distance learned/never x0.NN`; a part
not measured in this run is `n/a` (the prompted baseline needs `--baseline`; the length ratio
needs `--learned` and `--never`). Without `--dialogues` only the length part runs.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, fields
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from dialogues.ending import is_end_marker  # noqa: E402
from training.endings import DEFAULT_STRATEGY, Position, positions  # noqa: E402

__all__ = ["DEFAULT_STRATEGY", "Position", "positions"]  # re-exported: the benchmark's inputs

Draft = Callable[[list[dict[str, str]]], Awaitable[str]]
"""Draft the next user turn for an OpenAI-style history."""


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


def f1_interval(found: Sequence[Position], predicted: Sequence[bool]) -> tuple[float, float]:
    """95% percentile bootstrap interval of End F1, resampling whole dialogues."""
    import numpy as np

    from evaluation.bootstrap import Statistic, interval

    names = sorted({p.dialogue for p in found})
    index = {name: i for i, name in enumerate(names)}
    counts = np.zeros((len(names), 3))  # tp, fp, fn per dialogue
    for p, guess in zip(found, predicted, strict=True):
        counts[index[p.dialogue]] += (p.ends and guess, guess and not p.ends, p.ends and not guess)

    def f1(w: np.ndarray) -> np.ndarray:
        tp, fp, fn = (w @ counts).T
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.where(tp > 0, 2 * tp / (2 * tp + fp + fn), 0.0)

    found_f1 = interval(Statistic(f1, len(names), len(found)))
    return float(found_f1.lo), float(found_f1.hi)


async def predict(found: Sequence[Position], draft: Draft) -> list[bool]:
    """Ask the simulator at every position, one at a time; True where it drafts the marker."""
    return [is_end_marker(await draft(list(p.history))) for p in found]


def summary_line(f1: float | None, prompted: float | None, ratio: float | None) -> str:
    """The benchmark's last line (`n/a` for a part not measured)."""

    def shown(value: float | None, fmt: str) -> str:
        return "n/a" if value is None else format(value, fmt)

    return (
        f"ending: End F1 {shown(f1, '.2f')} (prompted {shown(prompted, '.2f')}); "
        f"length distance learned/never {'n/a' if ratio is None else f'x{ratio:.2f}'}"
    )


def card_held_out(simulator: str) -> set[str] | None:
    """The held-out dialogue names the simulator's card lists (None: an older card without them).

    `prompted` has no card; it is measured on the `ideas` simulator's held-out dialogues.
    """
    import json

    folder = Path(simulator)
    if simulator in ("ideas", "plain", "prompted"):
        folder = ROOT / "training" / "simulators" / ("plain" if simulator == "plain" else "ideas")
    card = folder / "card.json"
    if not card.is_file():
        return None
    names = json.loads(card.read_text())["counts"].get("held_out_names")  # .get: older cards
    return set(names) if names is not None else None


def held_out_names(data: Path) -> set[str]:
    """The dialogues `train-simulator` held out in the shipped simulators' build (reconstructed).

    For cards written before the trainer listed its held-out names. The shipped build
    (`scripts/build_simulators.sh`) trains on the pairs of `induction.real_dialogues.REAL_DIALOGUES`
    that have a team-written strategy in the default library, plus the ending pair of each dialogue
    its user ended; `split_by_dialogue` then holds out a share of those dialogues. The same names,
    share and seed give the same split.
    """
    from induction.annotations import load_extractions
    from induction.loaders import load
    from induction.real_dialogues import REAL_DIALOGUES
    from stores.packaged import read_records
    from training.job import TrainJob
    from training.loop import LoopSettings
    from training.pairs import dialogue_of, ended_dialogue_name, held_out_dialogues, strategy_texts

    extractions = load_extractions(ROOT / "induction" / "data" / "team_extractions.jsonl")
    records = read_records(ROOT / "stores" / "libraries" / "default")
    strategies = strategy_texts(extractions, records, "high")
    names: set[str] = set()
    for name in REAL_DIALOGUES:
        loaded = load(data / name)
        names |= {dialogue_of(p) for p in loaded.pairs if p.key in strategies}
        names |= {
            ended_dialogue_name(loaded.path.name, d) for d in loaded.dialogues if d.ended_by_user
        }
    share = next(f.default for f in fields(TrainJob) if f.name == "held_out")
    return held_out_dialogues(names, share, LoopSettings.seed)


def simulator_draft(simulator, strategy: str) -> Draft:  # noqa: ANN001 - a UserSimulator
    """A run-time simulator as a `Draft`, `strategy` in its prompt (the plain one ignores it)."""
    from dialogues.messages import to_langchain

    async def draft(history: list[dict[str, str]]) -> str:
        return (await simulator.draft(to_langchain(history), strategy, None)).text

    return draft


def settings_for(name: str):  # noqa: ANN201 - runtime.settings.Settings
    """Settings of the embedded simulator `name`: a shipped variant, `prompted` or a folder."""
    from runtime.settings import load_settings

    adapter = {"ideas": "trained", "plain": "trained", "prompted": "none"}.get(name, name)
    agents = {"simulator": "plain" if name == "plain" else "strategy"}
    return load_settings(None, simulator={"adapter": adapter}, agents=agents)


def ranking_auc(found: Sequence[Position], probabilities: Sequence[float]) -> float:
    """The chance that a real ending has a higher p_end than a real continuation (ties half)."""
    from scipy.stats import mannwhitneyu

    ends = [p for pos, p in zip(found, probabilities, strict=True) if pos.ends]
    goes_on = [p for pos, p in zip(found, probabilities, strict=True) if not pos.ends]
    return float(mannwhitneyu(ends, goes_on).statistic) / (len(ends) * len(goes_on))


def auc_text(found: Sequence[Position], scores: Sequence[float]) -> str:
    """AUC over all positions, and within the sources that have real endings."""
    sources = {p.source for p in found if p.ends}
    within = [(p, q) for p, q in zip(found, scores, strict=True) if p.source in sources]
    inside = ranking_auc([p for p, _ in within], [q for _, q in within])
    return f"{ranking_auc(found, scores):.2f} ({inside:.2f} within the sources with endings)"


def measure(name: str, found: Sequence[Position], strategy: str) -> Scores:
    """Run one simulator over the positions on the embedded server; print its scores.

    A simulator with a calibrated ending threshold decides as at run time, by p_end against
    its threshold (`agents.simulator.StrategySimulator`), without drafting the turns it would
    write instead; the benchmark then prints how well p_end ranks the real endings (AUC). One
    without a threshold drafts, and ends where its draft is the marker.
    """
    from agents.registry import SIMULATORS
    from training.endings import end_probabilities, user_turns
    from wiring.session import Session

    with Session(settings_for(name)) as session:
        simulator = SIMULATORS["plain" if name == "plain" else "strategy"](session)
        rule = getattr(simulator, "ending", None)
        if rule is None:
            predicted = asyncio.run(predict(found, simulator_draft(simulator, strategy)))
        else:
            probabilities = asyncio.run(end_probabilities(simulator, found, strategy, show=True))
            turns = [user_turns(p.history) for p in found]
            predicted = [rule.ends(q, k) for q, k in zip(probabilities, turns, strict=True)]
    scores = end_scores([p.ends for p in found], predicted)
    low, high = f1_interval(found, predicted)
    print(f"{name}: {scores} End F1 {scores.f1:.3f} [{low:.2f}, {high:.2f}]")  # noqa: T201
    if rule is not None:
        ranked = [q / rule.at(k) for q, k in zip(probabilities, turns, strict=True)]
        print(  # noqa: T201
            f"  {name} ends when p_end >= {rule.threshold:.4g} * exp(-{rule.per_turn:.3g} * user "
            f"turns) (its card); AUC of real endings against continuations: p_end "
            f"{auc_text(found, probabilities)}, the rule's score {auc_text(found, ranked)}"
        )
    print(f"  {name} ended at: {by_source(found, predicted)}")  # noqa: T201
    return scores


def by_source(found: Sequence[Position], predicted: Sequence[bool]) -> str:
    """Say per source how many positions the simulator ended at, real endings among them."""
    parts = []
    for source in sorted({p.source for p in found}):
        mine = [(p, guess) for p, guess in zip(found, predicted, strict=True) if p.source == source]
        ended = sum(guess for _, guess in mine)
        right = sum(guess and p.ends for p, guess in mine)
        real = sum(p.ends for p, _ in mine)
        parts.append(
            f"{source or 'dialogues'} {ended} of {len(mine)} positions "
            f"({right} of {real} real endings)"
        )
    return "; ".join(parts)


@dataclass(frozen=True)
class Interval:
    """An estimate with its 95% percentile bootstrap interval."""

    value: float
    low: float
    high: float

    def __str__(self) -> str:
        return f"{self.value:.2f} [{self.low:.2f}, {self.high:.2f}]"


@dataclass(frozen=True)
class LengthDistances:
    """W1 to the real dialogue lengths of the learned and the never batch, and their ratio."""

    learned: Interval
    never: Interval
    ratio: Interval


def run_lengths(run_dir: Path) -> list[int]:
    """User turns per stored dialogue of a batch run (the seed's included, as eval counts)."""
    from evaluation.inputs import load_dialogues
    from evaluation.metrics import user_turns

    return [user_turns(d) for d in load_dialogues(run_dir)]


def length_distances(
    learned: Sequence[int],
    never: Sequence[int],
    reference: Sequence[int],
    resamples: int = 2000,
    seed: int = 0,
) -> LengthDistances:
    """W1 of each batch's dialogue lengths to the reference, bootstrapped over dialogues.

    Each resample draws the dialogues of both batches again (with replacement, independently);
    the real reference stays fixed, as in `evaluation.realism`.
    """
    import numpy as np

    from evaluation.bootstrap import weights
    from evaluation.realism import wasserstein_1d

    rng = np.random.default_rng(seed)
    a, b = wasserstein_1d(learned, reference), wasserstein_1d(never, reference)
    ra = wasserstein_1d(learned, reference, weights(len(learned), resamples, rng))
    rb = wasserstein_1d(never, reference, weights(len(never), resamples, rng))
    with np.errstate(divide="ignore", invalid="ignore"):
        ratios = ra / rb

    def interval(value: float, values: np.ndarray) -> Interval:
        low, high = np.nanpercentile(values, [2.5, 97.5])
        return Interval(float(value), float(low), float(high))

    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = float(a[0] / b[0])
    return LengthDistances(interval(a[0], ra), interval(b[0], rb), interval(ratio, ratios))


def main(argv: list[str] | None = None) -> int:
    """Parse the flags, measure, print the scores and the summary line."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--dialogues", nargs="+", type=Path, metavar="FILE")
    parser.add_argument(
        "--held-out",
        action="store_true",
        help="only the dialogues the shipped simulators held out from training",
    )
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data")
    parser.add_argument(
        "--learned", type=Path, metavar="RUN_DIR", help="batch with --ending learned"
    )
    parser.add_argument("--never", type=Path, metavar="RUN_DIR", help="batch with --ending never")
    parser.add_argument("--reference", nargs="+", type=Path, metavar="FILE", help="real dialogues")
    parser.add_argument("--simulator", default="ideas", help="ideas, plain, prompted or a folder")
    parser.add_argument("--baseline", action="store_true", help="also measure the prompted one")
    parser.add_argument("--strategy", default=DEFAULT_STRATEGY)
    parser.add_argument("--limit", type=int, help="at most N positions (a quick look)")
    args = parser.parse_args(argv)
    if not args.dialogues and not (args.learned and args.never):
        parser.error("give --dialogues (End F1) or --learned and --never (length distance)")
    if (args.learned or args.never) and not (args.learned and args.never and args.reference):
        parser.error("the length distance needs --learned, --never and --reference")
    ratio = None
    if args.learned:
        ratio = lengths_part(args)
        if ratio is None:
            return 2
    if not args.dialogues:
        print(summary_line(None, None, ratio))  # noqa: T201
        return 0
    return end_part(args, ratio)


def lengths_part(args: argparse.Namespace) -> float | None:
    """Print the length distances of the two batches; return the ratio (None: bad input)."""
    from cli.errors import UsageError
    from cli.evaluate import load_reference_lengths
    from dialogues.errors import InputError

    try:
        reference = load_reference_lengths(args.reference) or []
        learned, never = run_lengths(args.learned), run_lengths(args.never)
    except (UsageError, InputError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)  # noqa: T201 - a benchmark's output
        return None
    if not (learned and never and reference):
        print("error: a batch or the reference holds no dialogue", file=sys.stderr)  # noqa: T201
        return None
    found = length_distances(learned, never, reference)
    mean = sum(reference) / len(reference)
    print(  # noqa: T201
        f"user turns per dialogue: learned {sum(learned) / len(learned):.2f} (n={len(learned)}), "
        f"never {sum(never) / len(never):.2f} (n={len(never)}), real {mean:.2f} "
        f"(n={len(reference)})"
    )
    print(  # noqa: T201
        f"W1 to real: learned {found.learned}, never {found.never}; learned/never x{found.ratio}"
    )
    return found.ratio.value


def end_part(args: argparse.Namespace, ratio: float | None) -> int:
    """Measure End F1 on the real dialogues' positions; print the scores and the summary line."""
    from cli.errors import UsageError
    from cli.induce import load_sources

    try:
        loaded = load_sources(args.dialogues, None)
    except UsageError as exc:
        print(f"error: {exc}", file=sys.stderr)  # noqa: T201 - a benchmark's output
        return 2
    dialogues = [(r.path.name, d) for r in loaded for d in r.dialogues]
    if args.held_out:
        from training.pairs import ended_dialogue_name

        kept = card_held_out(args.simulator)
        if kept is None:
            kept = held_out_names(args.data)
        dialogues = [(s, d) for s, d in dialogues if ended_dialogue_name(s, d) in kept]
        print(f"held out from training: {len(dialogues)} of the given dialogues")  # noqa: T201
    found = positions(dialogues, args.limit)
    ends = sum(p.ends for p in found)
    print(f"{len(found)} positions, {ends} real endings")  # noqa: T201
    if not ends:
        print("error: no dialogue in these files was ended by its user", file=sys.stderr)  # noqa: T201
        return 2
    scores = measure(args.simulator, found, args.strategy)
    prompted = None
    if args.baseline and args.simulator != "prompted":
        base = measure("prompted", found, args.strategy)
        prompted = base.f1
    elif args.simulator == "prompted":
        prompted = scores.f1
    print(summary_line(scores.f1, prompted, ratio))  # noqa: T201
    return 0


if __name__ == "__main__":
    sys.exit(main())
