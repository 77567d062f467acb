"""How far from real users a batch's user turns can get in embedding space, on its seeds' topics.

    python benchmarks/mmd_floor.py BATCH --seeds SEEDS.jsonl [--reference FILE...] [--draws 200]

The eval's "embedding MMD to real" (`evaluation/realism.py`) compares a batch's user turns with
the real users' follow-ups of `--reference` in MiniLM space. It measures topic as much as voice:
a batch grown from MT-Bench-101 seeds talks about what those seeds talk about, while half of the
default reference is programming help. And its estimate is biased upwards at small samples. So
this prints, each at the batch's own number of user turns:

- the batch's MMD to real users, as the eval reports it;
- the seed file's own user turns (every user turn after the first of each seed dialogue, as the
  eval reads a foreign file), drawn `--draws` times at the batch's size: the MMD a sample of the
  seed set's users reaches, mean and 95% range. A simulator that writes like the seeds' users on
  the seeds' topics lands there;
- real users against real users: a sample of the reference at the batch's size against the rest
  of it, the level of a sample that differs from the reference only by chance.

The same bandwidth throughout (the median heuristic on the whole reference, as the eval's).
Results: docs/results/guidance/README.md, section 9.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from cli.evaluate import load_reference  # noqa: E402
from dialogues.errors import InputError  # noqa: E402
from evaluation.inputs import EvalDialogue, load_dialogues  # noqa: E402
from evaluation.realism import MMD, median_bandwidth  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared/data"
REFERENCE = [DATA / "oasst1-en100/en_100_tree.jsonl", DATA / "realhumaneval-chat/chats.jsonl"]


def user_turns(path: Path) -> list[str]:
    """The user turns the eval counts in a batch folder or dialogue file (after the seed's)."""
    return instructions(load_dialogues(path))


def instructions(dialogues: Sequence[EvalDialogue]) -> list[str]:
    """The user turns of `dialogues` that the eval counts."""
    return [turn.instruction for dialogue in dialogues for turn in dialogue.turns]


def sampled(
    rows: np.ndarray, against: np.ndarray, size: int, bandwidth: float, draws: int, seed: int = 0
) -> np.ndarray:
    """MMDs of `draws` samples of `size` rows (without replacement) against `against`."""
    rng = np.random.default_rng(seed)
    picks = (rng.choice(len(rows), size, replace=False) for _ in range(draws))
    return np.array([MMD(rows[pick], against, bandwidth)()[0] for pick in picks])


def real_against_rest(
    real: np.ndarray, size: int, bandwidth: float, draws: int, seed: int = 0
) -> np.ndarray:
    """MMDs of `draws` samples of `size` real rows against the other real rows."""
    rng = np.random.default_rng(seed)
    values = []
    for _ in range(draws):
        order = rng.permutation(len(real))
        values.append(MMD(real[order[:size]], real[order[size:]], bandwidth)()[0])
    return np.array(values)


def main(argv: list[str] | None = None) -> int:
    """Print the batch's MMD to real users beside its seed users' and real users' own."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("batch", type=Path, help="a batch folder or a dialogue file")
    parser.add_argument("--seeds", type=Path, required=True, help="the seed file it grew from")
    parser.add_argument("--reference", type=Path, nargs="+", default=REFERENCE)
    parser.add_argument("--draws", type=int, default=200)
    args = parser.parse_args(argv)
    if args.draws < 1:
        print(f"error: --draws must be at least 1, got {args.draws}", file=sys.stderr)
        return 2
    try:
        generated, seeds = user_turns(args.batch), user_turns(args.seeds)
        real = instructions(load_reference(args.reference))  # the eval's own reading
    except (InputError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    size = len(generated)
    for name, texts, least in (("seed users", seeds, size), ("reference", real, size + 2)):
        if len(texts) < least:
            print(f"error: {name}: {len(texts)} user turns, need at least {least}", file=sys.stderr)
            return 2
    from stores.embeddings import MiniLMEmbedding

    embed = MiniLMEmbedding()
    generated_rows, seed_rows, real_rows = (
        np.asarray(embed(texts), dtype=float) for texts in (generated, seeds, real)
    )
    bandwidth = median_bandwidth(real_rows)
    batch = MMD(generated_rows, real_rows, bandwidth)()[0]
    seed_mmd = sampled(seed_rows, real_rows, size, bandwidth, args.draws)
    chance = real_against_rest(real_rows, size, bandwidth, args.draws)
    print(f"embedding MMD to real users ({len(real)} follow-ups), at {size} user turns:")
    print(f"  {'batch ' + str(args.batch):<40} {batch:.3f}")
    for name, values in ((f"seed users ({len(seeds)} turns)", seed_mmd), ("real users", chance)):
        low, high = np.percentile(values, [2.5, 97.5])
        print(f"  {name:<40} {values.mean():.3f} [{low:.3f}, {high:.3f}] ({args.draws} draws)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
