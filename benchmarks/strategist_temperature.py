"""How the learned strategist's temperature trades fit against variety, from the ranker alone.

    python benchmarks/strategist_temperature.py [--seeds FILE] [--temperatures 0 0.25 0.5 ...]

For every seed's opening answer (MT-Bench-101 by default: real answers, none about
programming), the learned ranker of the default library gives a distribution over its top-level
strategies; the strategist draws from it at a temperature. Per temperature, over the seeds:

- misfit: the probability that the draw is a programming-specific strategy while the dialogue
  holds no code (`dialogues.domain.misfit`, the report's misfit rule), exact, not sampled;
- top-8 mass: the probability that the draw is among the 8 candidates the record shows;
- entropy per draw (bits), and the dataset's strategy entropy: of the pooled draw distribution,
  normalised by log2 of the library's size (1: every strategy equally often across the seeds).

This is the part of the trade-off the ranker decides on its own, on the first strategist turn of
each seed; adherence and realism need generated dialogues (`run.py ablate` with
`--strategist-temperature`, see docs/results/strategist-temperature/).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from batch.jobs import load_seed_set  # noqa: E402
from dialogues.domain import any_code, is_programming_strategy  # noqa: E402
from runtime.settings import load_settings  # noqa: E402
from stores.ranker import distribution  # noqa: E402
from wiring.session import Session  # noqa: E402

DEFAULT_SEEDS = ROOT.parent / "shared" / "data" / "mtbench101" / "mtbench101.jsonl"
SHOWN = 8


def curve(logits: np.ndarray, programming: np.ndarray, code: np.ndarray, temperatures):
    """Rows of (temperature, misfit, top-8 mass, entropy per draw, dataset entropy normalised).

    Args:
        logits: (seeds, strategies) ranker logits for each seed's answer.
        programming: (strategies,) the strategy is programming-specific.
        code: (seeds,) the seed's dialogue holds code (no strategy misfits there).
        temperatures: The temperatures to evaluate.
    """
    rows = []
    order = np.argsort(-logits, axis=1, kind="stable")
    for t in temperatures:
        probs = np.stack([distribution(row, t) for row in logits])
        misfit = (probs[:, programming].sum(axis=1) * ~code).mean()
        top = np.take_along_axis(probs, order[:, :SHOWN], axis=1).sum(axis=1).mean()
        with np.errstate(divide="ignore", invalid="ignore"):
            per_draw = max(
                0.0, -np.nansum(np.where(probs > 0, probs * np.log2(probs), 0), axis=1).mean()
            )
            pooled = probs.mean(axis=0)
            dataset = -np.sum(np.where(pooled > 0, pooled * np.log2(pooled), 0))
        rows.append((t, misfit, top, per_draw, dataset / np.log2(logits.shape[1])))
    return rows


def main(argv: list[str] | None = None) -> int:
    """Rank every seed's opening answer, print the curve."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seeds", type=Path, default=DEFAULT_SEEDS)
    parser.add_argument(
        "--temperatures", type=float, nargs="+", default=[0, 0.25, 0.5, 0.75, 1.0, 1.5]
    )
    args = parser.parse_args(argv)
    seeds = load_seed_set(args.seeds, opening_only=True).seeds
    answers = [s for s in seeds if s.messages[-1].role == "assistant"]
    with Session(load_settings(None)) as session:
        retriever = session.learned_retriever
        records = [r.record for r in retriever.rank("x")]
        index = {r.id: i for i, r in enumerate(records)}
        logits = np.zeros((len(answers), len(records)))
        for row, seed in enumerate(answers):
            for ranked in retriever.rank(seed.messages[-1].content):
                logits[row, index[ranked.record.id]] = ranked.logit
    programming = np.array([is_programming_strategy(r.text) for r in records])
    code = np.array([any_code(m.content for m in s.messages) for s in answers])
    print(  # noqa: T201 - a benchmark's output
        f"{len(answers)} seed answers ({code.sum()} hold code), {len(records)} strategies "
        f"({programming.sum()} programming-specific)"
    )
    print(  # noqa: T201
        "| temperature | misfit per draw | top-8 mass | entropy per draw (bits) "
        "| dataset entropy, normalised |"
    )
    print("|---|---|---|---|---|")  # noqa: T201
    for t, misfit, top, per_draw, dataset in curve(logits, programming, code, args.temperatures):
        print(f"| {t:g} | {misfit:.3f} | {top:.2f} | {per_draw:.2f} | {dataset:.3f} |")  # noqa: T201
    return 0


if __name__ == "__main__":
    sys.exit(main())
