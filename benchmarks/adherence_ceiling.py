"""The real-user level of strategy adherence: how often real follow-ups "follow" their strategy.

    python benchmarks/adherence_ceiling.py [--data ../shared/data] [--folds 5] [--json FILE]
    python benchmarks/adherence_ceiling.py --dialogues FILE... --extractions FILE

The eval's adherence metric (`evaluation/metrics.py`) calls a turn adherent when, among the
strategist's candidates, the applied strategy is the one whose MiniLM vector is nearest the user
turn. Here the same metric is applied to *real* follow-ups, with candidates built exactly as the
learned strategist builds them: the learned ranker's top 8 for the real answer, and the follow-up's
own strategy appended when it ranked lower. Cross-validated by dialogue with the retrieval
benchmark's folds (`benchmarks/retrieval.py`): each fold's library and ranker are built from the
other folds' dialogues only, and a held-back follow-up's own strategy is the top-tier strategy
nearest its extraction. Top-1 per source, with percentile bootstrap intervals over dialogues
(`evaluation/bootstrap.py`), and the chance level (mean 1/candidates).

The default runs on the team-annotated real dialogues; `--dialogues` and `--extractions` run it on
other labelled real conversations (each extraction keyed to a pair of those files). `--json`
writes the figures; `evaluation/real_user_adherence.json` is the committed run that the
`eval` and `ablate` reports print beside generated adherence.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.retrieval import build_fold  # noqa: E402
from evaluation.bootstrap import interval, ratio_statistic  # noqa: E402
from evaluation.metrics import adherence_rank  # noqa: E402
from induction.annotations import AnnotationError, load_extractions  # noqa: E402
from induction.library import dialogue_digest  # noqa: E402
from induction.loaders import load  # noqa: E402
from induction.real_dialogues import REAL_DIALOGUES  # noqa: E402
from stores.ranker import RECALL_K, LearnedRetriever, train_for_store  # noqa: E402

ANNOTATIONS = Path("induction/data/team_extractions.jsonl")


@dataclass(frozen=True)
class Scored:
    """One real follow-up under the adherence metric."""

    source: str
    dialogue: str
    top1: bool
    candidates: int


def candidate_ids(ranked_ids: list[str], gold: str, k: int = RECALL_K) -> list[str]:
    """The learned strategist's candidates: the top k, plus the applied one if it ranked lower."""
    shown = ranked_ids[:k]
    return shown if gold in shown else [*shown, gold]


def score_fold(built, embedding) -> list[Scored]:
    """Score every held-back follow-up of one fold (`benchmarks.retrieval.Fold`)."""
    retriever = LearnedRetriever.from_store(built.store, train_for_store(built.store))
    if retriever is None:
        return []
    vectors = dict(
        zip([r.id for r in built.top], embedding.embed([r.text for r in built.top]), strict=True)
    )
    followups = embedding.embed([p.followup for p in built.test])
    scored = []
    for pair, gold, followup in zip(built.test, built.gold, followups, strict=True):
        ids = candidate_ids([r.record.id for r in retriever.rank(pair.answer)], gold)
        rows = np.stack([np.asarray(vectors[i], dtype=np.float64) for i in ids])
        rank = adherence_rank(np.asarray(followup, dtype=np.float64), rows, ids.index(gold))
        scored.append(Scored(pair.source, dialogue_digest(pair), rank == 0, len(ids)))
    return scored


def summarise(scored: list[Scored]) -> dict[str, Any]:
    """Top-1 with its bootstrap interval over dialogues, and the chance level."""
    hits: dict[str, float] = defaultdict(float)
    counts: dict[str, float] = defaultdict(float)
    for s in scored:
        hits[s.dialogue] += s.top1
        counts[s.dialogue] += 1
    dialogues = sorted(counts)
    ci = interval(ratio_statistic([hits[d] for d in dialogues], [counts[d] for d in dialogues]))
    return {
        "top1": _round(ci.mean),
        "lo": _round(ci.lo),
        "hi": _round(ci.hi),
        "pairs": len(scored),
        "dialogues": len(dialogues),
        "chance": _round(float(np.mean([1 / s.candidates for s in scored])) if scored else None),
    }


def run(pairs, extractions, embedding, folds: int) -> dict[str, Any]:
    """Cross-validate and summarise overall and per source."""
    scored: list[Scored] = []
    for fold in range(folds):
        scored += score_fold(build_fold(fold, folds, pairs, extractions, embedding), embedding)
    by_source = defaultdict(list)
    for s in scored:
        by_source[s.source].append(s)
    return {
        "metric": "adherence top-1 of real follow-ups (learned ranker's top 8 + own strategy)",
        "folds": folds,
        "all": summarise(scored),
        "by_source": {source: summarise(items) for source, items in sorted(by_source.items())},
    }


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 4)


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; 2 on bad input (one line on stderr)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=Path("../shared/data"))
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--dialogues", type=Path, nargs="+", help="labelled real dialogue files")
    parser.add_argument("--extractions", type=Path, help="their extractions (JSONL)")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args(argv)
    if (args.dialogues is None) != (args.extractions is None):
        print("error: --dialogues and --extractions go together", file=sys.stderr)
        return 2
    if args.folds < 2:
        print(f"error: --folds must be at least 2, got {args.folds}", file=sys.stderr)
        return 2
    files = args.dialogues or [args.data / name for name in REAL_DIALOGUES]
    try:
        pairs = [p for path in files for p in load(path).pairs]
        extractions = load_extractions(args.extractions or ANNOTATIONS)
    except (AnnotationError, OSError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    keys = {p.key for p in pairs}
    missing = [e.key for e in extractions if e.key not in keys]
    if missing:
        print(
            f"error: {len(missing)} extractions match no pair, e.g. {missing[0]}", file=sys.stderr
        )
        return 2
    from stores.embeddings import MiniLMEmbedding

    result = run(pairs, extractions, MiniLMEmbedding(), args.folds)
    print(f"{'source':<28} {'top-1':>6}  {'95% CI':<16} {'chance':>6} {'pairs':>6}")
    for name, row in [("all", result["all"]), *result["by_source"].items()]:
        print(
            f"{name:<28} {row['top1']:6.3f}  [{row['lo']:.3f}, {row['hi']:.3f}]  "
            f"{row['chance']:6.3f} {row['pairs']:6d}"
        )
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
