"""Recall@k of candidate retrieval Q(a): popularity, strategy text, answer contexts, learned ranker.

    python benchmarks/retrieval.py [--data ../shared/data] [--folds 5]

Cross-validated by dialogue: each fold holds back a fifth of the real dialogues, builds a library
(centroid abstraction, the default threshold and tiers) from the team extractions of the rest, and
for every held-back real follow-up ranks the library's top-tier strategies for the answer before
it. The follow-up's "own" strategy is the top-tier strategy nearest its team-written extraction.
`support` ranks by cluster size alone (no answer used): the popularity prior any method gets free.
Text retrieval ranks strategy texts by similarity to the answer; context retrieval ranks them by
the real answers that preceded them (falling back to text for the rest); `learned` is the library's
learned ranker (stores/ranker.py), trained on the fold's library only, so it never sees the
held-back dialogues. Prints the spread across folds for each mode.
"""

from __future__ import annotations

import argparse
import hashlib
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from induction.abstract import CentroidAbstractor  # noqa: E402
from induction.annotations import load_extractions  # noqa: E402
from induction.library import build_library_sync  # noqa: E402
from induction.loaders import load  # noqa: E402
from induction.real_dialogues import REAL_DIALOGUES  # noqa: E402
from stores.base import StrategyRecord  # noqa: E402
from stores.contexts import ContextRetriever  # noqa: E402
from stores.embeddings import MiniLMEmbedding  # noqa: E402
from stores.memory import InMemoryStrategyStore  # noqa: E402
from stores.ranker import LearnedRetriever, train_for_store  # noqa: E402

KS = (1, 3, 5, 8, 10, 20)


def fold_of(pair, folds: int) -> int:
    """Assign a pair to a fold by its dialogue's first message, so a dialogue stays together."""
    first = pair.history[0]
    digest = hashlib.sha256((first.id or first.text).encode()).digest()
    return digest[0] % folds


@dataclass(frozen=True)
class Fold:
    """One cross-validation fold: a library built without its held-back dialogues."""

    store: InMemoryStrategyStore
    index: Any
    top: list[StrategyRecord]
    """The library's top-tier strategies, in build order."""
    test: list[Any]
    """The held-back pairs (each with `.answer`, `.followup`, `.source`, `.history`)."""
    gold: list[str]
    """Per held-back pair, the id of the top-tier strategy nearest its extraction."""


def build_fold(fold: int, folds: int, pairs, extractions, embedding) -> Fold:
    """Build fold `fold`'s library from the other folds' extractions.

    Each held-back pair is tied to the top-tier strategy nearest its own extraction.
    """
    by_key = {p.key: p for p in pairs}
    train = [e for e in extractions if fold_of(by_key[e.key], folds) != fold]
    test = [e for e in extractions if fold_of(by_key[e.key], folds) == fold]
    library = build_library_sync(
        train, by_key, embedding, CentroidAbstractor(), name="cv", extraction="team"
    )
    store = InMemoryStrategyStore("cv", embedding)
    store.add(library.records)
    index = store.contexts()
    index.add(library.answer_contexts())
    top = library.by_level("high")
    top_vectors = embedding.embed([r.text for r in top])
    gold_ids = [
        top[int(np.argmax(top_vectors @ v))].id for v in embedding.embed([e.strategy for e in test])
    ]
    return Fold(store, index, top, [by_key[e.key] for e in test], gold_ids)


def ranks_for(fold: int, folds: int, pairs, extractions, embedding) -> dict[str, list[int]]:
    """Return, per retrieval mode, the rank of each held-back follow-up's own strategy."""
    built = build_fold(fold, folds, pairs, extractions, embedding)
    store, index, top = built.store, built.index, built.top
    retrievers = {
        "text": store,
        "context": ContextRetriever(store, index, embedding),
        "learned": LearnedRetriever.from_store(store, train_for_store(store)),
    }
    by_support = [r.id for r in sorted(top, key=lambda r: -r.support)]
    ranks: dict[str, list[int]] = {mode: [] for mode in ("support", *retrievers)}
    for pair, gold in zip(built.test, built.gold, strict=True):
        answer = pair.answer
        ranks["support"].append(by_support.index(gold) + 1)
        for mode, retriever in retrievers.items():
            found = [c.id for c in retriever.search(answer, len(top))]
            ranks[mode].append(found.index(gold) + 1 if gold in found else len(top) + 1)
    ranks["size"] = [len(top)]
    return ranks


def summary(ranks: list[float]) -> tuple[list[float], float]:
    """Return recall at each of KS and the mean rank."""
    r = np.array(ranks)
    return [float(np.mean(r <= k)) for k in KS], float(r.mean())


def main() -> None:
    """Run the cross-validation and print recall@k per mode."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=Path("../shared/data"))
    parser.add_argument("--folds", type=int, default=5)
    args = parser.parse_args()
    pairs = [p for name in REAL_DIALOGUES for p in load(args.data / name).pairs]
    extractions = load_extractions(Path("induction/data/team_extractions.jsonl"))
    embedding = MiniLMEmbedding()
    modes = ("support", "text", "context", "learned")
    totals: dict[str, list[int]] = {mode: [] for mode in modes}
    per_fold: dict[str, list[tuple[float, float]]] = {mode: [] for mode in modes}
    sizes = []
    for fold in range(args.folds):
        ranks = ranks_for(fold, args.folds, pairs, extractions, embedding)
        sizes += ranks.pop("size")
        for mode, values in ranks.items():
            totals[mode] += values
            recalls, mean_rank = summary(values)
            per_fold[mode].append((recalls[KS.index(8)], mean_rank))
    print(
        f"held-back follow-ups: {len(totals['text'])}, folds: {args.folds}, "
        f"top-tier strategies per fold: {min(sizes)}-{max(sizes)}"
    )
    print("mode      " + "  ".join(f"R@{k:<3}" for k in KS) + "  mean rank  R@8 by fold (min-max)")
    chance = [min(k / np.mean(sizes), 1.0) for k in KS]
    print("random    " + "  ".join(f"{c:.3f}" for c in chance) + f"  {np.mean(sizes) / 2:.1f}")
    for mode, ranks in totals.items():
        recalls, mean_rank = summary(ranks)
        folds = [r8 for r8, _ in per_fold[mode]]
        print(
            f"{mode:<9} "
            + "  ".join(f"{r:.3f}" for r in recalls)
            + f"  {mean_rank:9.1f}  {min(folds):.3f}-{max(folds):.3f}"
        )
    learned, support = summary(totals["learned"]), summary(totals["support"])
    gain = learned[0][KS.index(8)] - support[0][KS.index(8)]
    print(
        f"learned vs support: R@8 {gain:+.3f}, mean rank {learned[1] - support[1]:+.1f} "
        f"(target: R@8 +0.05 or more and a lower mean rank)"
    )


if __name__ == "__main__":
    main()
