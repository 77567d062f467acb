"""A learned candidate ranker Q(a): which top-level strategy real users applied after an answer.

The paper trains a classifier on (answer, strategy) pairs. Ours is the same idea at the scale of a
few hundred real follow-ups: a regularised conditional logit (a softmax over the library's
strategies) on a handful of features of each (answer, strategy) pair, all computed from what a
library already stores:

- `cosine`: similarity of the answer to the strategy text;
- `log_support`: log of the strategy's cluster size (the popularity prior);
- `vote_k8`, `vote_k32`, `vote_k128`: share of the k nearest real answers (softmax-weighted by
  similarity) whose follow-up applied the strategy;
- `max_context`: similarity of the closest real answer whose follow-up applied it;
- `code_fit`: domain fit by provenance. Each real answer carries one bit, whether it held a fenced
  code block (`stores.contexts.has_code_block`); a strategy's code share is the smoothed fraction
  of its real answers that did, (code + 0.5) / (all + 1). For an answer with a code block the
  feature is log(share), without one log(1 - share): a strategy learned only after code scores low
  for prose answers. A library whose contexts carry no flags (built before the flag) gives 0.

Because the features describe a pair rather than name a strategy, the weights (seven numbers)
carry over to any library and fit in its metadata. A ranker stored with the six features before
`code_fit` loads with a zero weight for it and scores exactly as before. Training features are
computed with the training answer's own dialogue left out of the neighbours and of the code
shares, exactly as a new dialogue will see them. The softmax of the scores over the strategies
still unused is the ranker's distribution, trained by maximum likelihood, so its probabilities
mean what they say; a temperature sharpens or flattens it.

Inference is numpy only; training uses scipy's optimiser.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import numpy as np

from stores.base import Candidate, StrategyRecord, StrategyStore
from stores.contexts import AnswerContext, ContextRows, has_code_block
from stores.memory import Embedder

FEATURES = (
    "cosine",
    "log_support",
    "vote_k8",
    "vote_k32",
    "vote_k128",
    "max_context",
    "code_fit",
)
LEGACY_FEATURES = FEATURES[:6]
"""The features of rankers stored before `code_fit` (same version; loaded with its weight 0)."""
NEIGHBOURS = ((8, 20.0), (32, 10.0), (128, 5.0))
"""(k, softmax sharpness) of each neighbour vote."""
VOTE_FLOOR = 1e-3
"""Added to a vote share before its log, so a strategy no neighbour applied is not -inf."""
RANKER_VERSION = 1
RECALL_K = 8


@dataclass(frozen=True)
class Contexts:
    """The real answers a library was learned from, as a matrix, with their strategies' indices."""

    vectors: np.ndarray
    """(c, d) unit rows: the real answers before each follow-up."""
    strategy: np.ndarray
    """(c,) index into the strategy list of the top-level strategy each follow-up applied."""
    groups: np.ndarray
    """(c,) dialogue of each answer (any hashable labels); neighbours never come from the same."""
    code: np.ndarray | None = None
    """(c,) bool: the answer held a fenced code block; None when the library did not record it."""


def code_fit(
    answer_code: np.ndarray,
    strategies: int,
    contexts: Contexts,
    answer_groups: np.ndarray | None = None,
) -> np.ndarray:
    """Return the (n, m) `code_fit` feature (module docstring); zeros when the contexts lack flags.

    Args:
        answer_code: (n,) bool, whether each answer holds a fenced code block.
        strategies: m, the number of strategies.
        contexts: The real answers the code shares come from.
        answer_groups: (n,) dialogue labels of the answers (training); a context of the same
            dialogue is left out of that answer's shares, as it is out of its neighbours.
    """
    if contexts.code is None:
        return np.zeros((len(answer_code), strategies))
    flags = np.asarray(contexts.code, dtype=np.float64)
    count = np.bincount(contexts.strategy, minlength=strategies).astype(np.float64)[None, :]
    coded = np.bincount(contexts.strategy, weights=flags, minlength=strategies)[None, :]
    if answer_groups is not None and len(contexts.groups):
        labels, group_index = np.unique(contexts.groups, return_inverse=True)
        per_group = np.zeros((len(labels), strategies))
        coded_per_group = np.zeros((len(labels), strategies))
        np.add.at(per_group, (group_index, contexts.strategy), 1.0)
        np.add.at(coded_per_group, (group_index, contexts.strategy), flags)
        where = np.searchsorted(labels, answer_groups).clip(max=len(labels) - 1)
        known = (labels[where] == answer_groups)[:, None]
        count = count - np.where(known, per_group[where], 0.0)
        coded = coded - np.where(known, coded_per_group[where], 0.0)
    share = (coded + 0.5) / (count + 1.0)
    return np.where(np.asarray(answer_code, dtype=bool)[:, None], np.log(share), np.log1p(-share))


def pair_features(
    answers: np.ndarray,
    strategies: np.ndarray,
    support: np.ndarray,
    contexts: Contexts,
    *,
    answer_groups: np.ndarray | None = None,
    answer_code: np.ndarray | None = None,
) -> np.ndarray:
    """Return the (n, m, len(FEATURES)) features of every (answer, strategy) pair.

    Args:
        answers: (n, d) unit rows, the answers to rank strategies for.
        strategies: (m, d) unit rows, the top-level strategies' text embeddings.
        support: (m,) cluster sizes (at least 1).
        contexts: The real answers the votes come from.
        answer_groups: (n,) dialogue labels of `answers`; a context of the same dialogue is not a
            neighbour (training). None for new answers.
        answer_code: (n,) bool, whether each answer holds a fenced code block; None when unknown
            (then `code_fit` is 0).
    """
    n, m = len(answers), len(strategies)
    sims = answers @ contexts.vectors.T if len(contexts.vectors) else np.zeros((n, 0))
    if answer_groups is not None and sims.size:
        sims = np.where(answer_groups[:, None] == contexts.groups[None, :], -np.inf, sims)
    columns = [answers @ strategies.T, np.broadcast_to(np.log(support)[None, :], (n, m))]
    order = np.argsort(-sims, axis=1, kind="stable")
    rows = np.arange(n)[:, None]
    for k, sharpness in NEIGHBOURS:
        nearest = order[:, :k]
        near_sims = sims[rows, nearest]
        finite = np.isfinite(near_sims)  # -inf: a context of the answer's own dialogue
        top = np.where(finite, near_sims, -1.0).max(axis=1, keepdims=True)
        weights = np.where(finite, np.exp(sharpness * (np.where(finite, near_sims, top) - top)), 0)
        votes = np.zeros((n, m))
        np.add.at(
            votes,
            (np.repeat(np.arange(n), nearest.shape[1]), contexts.strategy[nearest].ravel()),
            weights.ravel(),
        )
        votes /= votes.sum(axis=1, keepdims=True).clip(min=1e-12)
        columns.append(np.log(votes + VOTE_FLOOR))
    closest = np.full((n, m), -1.0)
    finite = np.where(np.isfinite(sims), sims, -1.0)
    for j in range(m):
        mask = contexts.strategy == j
        if mask.any():
            closest[:, j] = finite[:, mask].max(axis=1)
    columns.append(closest)
    columns.append(
        np.zeros((n, m))
        if answer_code is None
        else code_fit(answer_code, m, contexts, answer_groups)
    )
    return np.stack(columns, axis=2)


@dataclass
class RankerModel:
    """The learned weights, how they were trained and how well they rank (cross-validated)."""

    weights: np.ndarray
    bias: float
    pairs: int
    cv: dict[str, Any] = field(default_factory=dict)
    trained_at: str = ""
    version: int = RANKER_VERSION

    def logits(self, features: np.ndarray) -> np.ndarray:
        """Return the (n, m) scores of pair features (higher: more likely the user's move)."""
        return features @ self.weights + self.bias

    def describe(self) -> str:
        """Say in one line what the ranker was trained on and how it did in cross-validation."""
        recall, rank = self.cv[f"recall_at_{RECALL_K}"], self.cv["mean_rank"]
        return (
            f"trained on {self.pairs} follow-ups; {self.cv['folds']}-fold CV by dialogue: "
            f"R@{RECALL_K} {recall['learned']:.3f} (support prior {recall['support']:.3f}), "
            f"mean rank {rank['learned']:.1f} ({rank['support']:.1f}) "
            f"of {self.cv['strategies']}"
        )

    def to_metadata(self) -> dict[str, Any]:
        """Return plain JSON data for the library's metadata."""
        return {
            "version": self.version,
            "model": "conditional logit over (answer, strategy) pair features",
            "features": list(FEATURES),
            "weights": [round(float(w), 6) for w in self.weights],
            "bias": round(float(self.bias), 6),
            "pairs": self.pairs,
            "cv": self.cv,
            "trained_at": self.trained_at,
        }

    @classmethod
    def from_metadata(cls, data: dict[str, Any]) -> RankerModel:
        """Rebuild from `to_metadata` output.

        A ranker stored with `LEGACY_FEATURES` (before `code_fit`) gets a zero weight for the new
        feature, so it scores every pair exactly as it did.

        Raises:
            ValueError: The data was written by another ranker version or for other features.
        """
        features = list(data.get("features", []))
        if data.get("version") != RANKER_VERSION or features not in (
            list(FEATURES),
            list(LEGACY_FEATURES),
        ):
            raise ValueError(f"unsupported ranker (version {data.get('version')!r})")
        weights = np.asarray(data["weights"], dtype=np.float64)
        if len(weights) != len(features):
            raise ValueError(f"unsupported ranker ({len(weights)} weights for {len(features)})")
        weights = np.concatenate([weights, np.zeros(len(FEATURES) - len(features))])
        return cls(
            weights=weights,
            bias=float(data["bias"]),
            pairs=int(data.get("pairs", 0)),
            cv=dict(data.get("cv", {})),
            trained_at=str(data.get("trained_at", "")),
        )


def _fit(features: np.ndarray, labels: np.ndarray, l2: float) -> tuple[np.ndarray, float]:
    """Fit a conditional logit: P(strategy j | answer i) = softmax_j(features[i, j] . w).

    L2-regularised maximum likelihood of the strategies real users applied, solved with scipy's
    L-BFGS (the problem is convex, so the result does not depend on a seed). The bias cancels in
    the softmax; it is kept at 0 so old and new scores share a scale.
    """
    from scipy.optimize import minimize
    from scipy.special import logsumexp

    rows = np.arange(len(labels))
    chosen = features[rows, labels]

    def loss(weights: np.ndarray) -> tuple[float, np.ndarray]:
        logits = features @ weights
        norm = logsumexp(logits, axis=1)
        probs = np.exp(logits - norm[:, None])
        value = -(logits[rows, labels] - norm).mean() + l2 * weights @ weights
        expected = np.einsum("nm,nmf->nf", probs, features)
        return float(value), -(chosen - expected).mean(axis=0) + 2 * l2 * weights

    result = minimize(loss, np.zeros(features.shape[2]), jac=True, method="L-BFGS-B")
    return result.x.astype(np.float64), 0.0


def ranks_of(scores: np.ndarray, gold: np.ndarray) -> np.ndarray:
    """Return the 1-based rank of each row's gold column, ties counted half (no optimism)."""
    mine = scores[np.arange(len(gold)), gold][:, None]
    above = (scores > mine).sum(axis=1)
    tied = (scores == mine).sum(axis=1) - 1
    return above + 1 + tied / 2


def train_ranker(
    strategies: np.ndarray,
    support: np.ndarray,
    contexts: Contexts,
    *,
    folds: int = 5,
    l2: float = 1e-3,
    seed: int = 0,
) -> RankerModel:
    """Fit the ranker on every context, after cross-validating it by dialogue.

    Each fold holds back a share of the dialogues: their answers are ranked by a model trained on
    the rest, whose neighbour votes never see the held-back dialogues. The library's clusters were
    built from all pairs, so the figures are a little optimistic; `benchmarks/retrieval.py`
    rebuilds the library per fold for the strict figure.

    Args:
        strategies: (m, d) unit rows of the top-level strategies.
        support: (m,) their cluster sizes.
        contexts: One row per real follow-up, labelled with its top-level strategy's index.
        folds: Cross-validation folds (by dialogue; fewer when there are fewer dialogues).
        l2: L2 penalty on the weights.
        seed: Seed of the fold assignment.

    Raises:
        ValueError: With fewer than two contexts or two strategies.
    """
    if len(contexts.vectors) < 2 or len(strategies) < 2:
        raise ValueError("a ranker needs at least two answer contexts and two strategies")
    labels, groups, code = contexts.strategy, contexts.groups, contexts.code
    unique = np.unique(groups)
    rng = np.random.default_rng(seed)
    fold_of = dict(
        zip(unique, rng.permutation(len(unique)) % max(2, min(folds, len(unique))), strict=True)
    )
    assignment = np.array([fold_of[g] for g in groups])
    by_fold: dict[str, list[float]] = {
        "learned_r8": [],
        "support_r8": [],
        "learned_rank": [],
        "support_rank": [],
    }
    prior = np.log(support)[None, :] + 1e-9 * -np.arange(len(support))[None, :]
    for fold in np.unique(assignment):
        train, test = assignment != fold, assignment == fold
        known = Contexts(
            contexts.vectors[train],
            labels[train],
            groups[train],
            None if code is None else code[train],
        )
        fit_features = pair_features(
            contexts.vectors[train],
            strategies,
            support,
            known,
            answer_groups=groups[train],
            answer_code=None if code is None else code[train],
        )
        weights, bias = _fit(fit_features, labels[train], l2)
        test_features = pair_features(
            contexts.vectors[test],
            strategies,
            support,
            known,
            answer_code=None if code is None else code[test],
        )
        scores = test_features @ weights + bias
        learned = ranks_of(scores, labels[test])
        popular = ranks_of(np.broadcast_to(prior, scores.shape), labels[test])
        by_fold["learned_r8"].append(float(np.mean(learned <= RECALL_K)))
        by_fold["support_r8"].append(float(np.mean(popular <= RECALL_K)))
        by_fold["learned_rank"].append(float(learned.mean()))
        by_fold["support_rank"].append(float(popular.mean()))
    cv = {
        "folds": len(by_fold["learned_r8"]),
        "split": "by dialogue",
        f"recall_at_{RECALL_K}": {
            "learned": _mean(by_fold["learned_r8"]),
            "support": _mean(by_fold["support_r8"]),
            "learned_by_fold": [round(v, 3) for v in by_fold["learned_r8"]],
        },
        "mean_rank": {
            "learned": _mean(by_fold["learned_rank"]),
            "support": _mean(by_fold["support_rank"]),
            "learned_by_fold": [round(v, 1) for v in by_fold["learned_rank"]],
        },
        "strategies": len(strategies),
    }
    all_features = pair_features(
        contexts.vectors, strategies, support, contexts, answer_groups=groups, answer_code=code
    )
    weights, bias = _fit(all_features, labels, l2)
    return RankerModel(
        weights=weights,
        bias=bias,
        pairs=len(labels),
        cv=cv,
        trained_at=datetime.now(UTC).isoformat(timespec="seconds"),
    )


def _mean(values: Sequence[float]) -> float:
    return round(float(np.mean(values)), 4)


def distribution(logits: np.ndarray, temperature: float) -> np.ndarray:
    """Turn logits into probabilities; temperature 0 puts all mass on the best (first on ties)."""
    if temperature <= 0:
        probs = np.zeros_like(logits, dtype=np.float64)
        probs[int(np.argmax(logits))] = 1.0
        return probs
    z = (logits - logits.max()) / temperature
    p = np.exp(z)
    return p / p.sum()


@dataclass(frozen=True)
class Ranked:
    """One strategy with the ranker's logit and its probability among the unused ones."""

    record: StrategyRecord
    logit: float
    probability: float


class LearnedRetriever:
    """Rank a library's top-level strategies with its learned ranker (see module docstring).

    Satisfies the strategist's `Retriever` protocol (`search`), and offers the full distribution
    (`rank`) for the learned strategist's draw. Everything is loaded once: the top-level records,
    their text embeddings and the answer contexts.
    """

    def __init__(
        self,
        model: RankerModel,
        records: Sequence[StrategyRecord],
        strategy_vectors: np.ndarray,
        contexts: Contexts,
        embedding: Embedder,
    ) -> None:
        """Use `model` over `records` (top level, with their unit text vectors)."""
        self.model, self.records, self.embedding = model, list(records), embedding
        self.vectors, self.contexts = strategy_vectors, contexts
        self.support = np.array([max(1, r.support) for r in self.records], dtype=np.float64)

    @classmethod
    def from_store(cls, store: StrategyStore, model: RankerModel) -> LearnedRetriever | None:
        """Build from a store whose context index can list its rows; None when it has none."""
        inputs = store_inputs(store)
        return None if inputs is None else cls(model, *inputs, store.embedding)

    def rank(
        self, text: str, *, exclude: Collection[str] = (), temperature: float = 1.0
    ) -> list[Ranked]:
        """Return every unused strategy, most likely first, with probabilities at `temperature`."""
        query = np.asarray(self.embedding.embed([text])[0], dtype=np.float64)
        code = np.array([has_code_block(text)])
        logits = self.model.logits(
            pair_features(
                query[None, :], self.vectors, self.support, self.contexts, answer_code=code
            )
        )[0]
        keep = [i for i, r in enumerate(self.records) if r.id not in exclude]
        if not keep:
            return []
        probs = distribution(logits[keep], temperature)
        order = sorted(range(len(keep)), key=lambda j: (-logits[keep[j]], keep[j]))
        return [
            Ranked(self.records[keep[j]], float(logits[keep[j]]), float(probs[j])) for j in order
        ]

    def search(self, text: str, k: int, *, exclude: Collection[str] = ()) -> list[Candidate]:
        """Return the k most likely unused strategies, scored by probability at temperature 1."""
        ranked = self.rank(text, exclude=exclude)[:k]
        return [
            Candidate(id=r.record.id, text=r.record.text, score=r.probability, rank=i)
            for i, r in enumerate(ranked)
        ]


def store_inputs(
    store: StrategyStore,
) -> tuple[list[StrategyRecord], np.ndarray, Contexts] | None:
    """Read what the ranker needs from a library: top-level records, their vectors, the contexts.

    Returns None when the library has no top-level records or no answer contexts for them.
    """
    contexts_index = getattr(store, "contexts", None)
    if contexts_index is None:
        return None
    return ranker_inputs(store.records("high"), contexts_index().rows(), store.embedding)


def ranker_inputs(
    records: Sequence[StrategyRecord], rows: ContextRows, embedding: Embedder
) -> tuple[list[StrategyRecord], np.ndarray, Contexts] | None:
    """Tie answer contexts to the top-level records; None when none of them has a context.

    The contexts' code flags are used only when every kept context has one (else `code_fit` is 0).
    """
    index_of = {r.id: i for i, r in enumerate(records)}
    keep = [i for i, sid in enumerate(rows.strategy_ids) if sid in index_of]
    if not records or not keep:
        return None
    flags = [rows.code[i] for i in keep]
    contexts = Contexts(
        vectors=np.asarray(rows.vectors[keep], dtype=np.float64),
        strategy=np.array([index_of[rows.strategy_ids[i]] for i in keep]),
        groups=np.array([rows.groups[i] for i in keep]),
        code=None if None in flags else np.array(flags, dtype=bool),
    )
    vectors = np.asarray(embedding.embed([r.text for r in records]), dtype=np.float64)
    return list(records), vectors, contexts


def train_for_store(store: StrategyStore, *, seed: int = 0) -> RankerModel | None:
    """Train a ranker on a library's own answer contexts; None when it has too few."""
    return _train(store_inputs(store), seed)


def train_for(
    records: Sequence[StrategyRecord],
    contexts: Sequence[AnswerContext],
    embedding: Embedder,
    *,
    seed: int = 0,
) -> RankerModel | None:
    """Train a ranker for a library being built (its top-level records and answer contexts)."""
    rows = ContextRows(
        ids=[c.id for c in contexts],
        strategy_ids=[c.strategy_id for c in contexts],
        groups=[c.group or c.id for c in contexts],
        vectors=np.stack([c.embedding for c in contexts]) if contexts else np.zeros((0, 0)),
        code=[c.code for c in contexts],
    )
    return _train(ranker_inputs(records, rows, embedding), seed)


def _train(
    inputs: tuple[list[StrategyRecord], np.ndarray, Contexts] | None, seed: int
) -> RankerModel | None:
    if inputs is None:
        return None
    records, vectors, contexts = inputs
    if len(contexts.vectors) < 2 or len(records) < 2:
        return None
    support = np.array([max(1, r.support) for r in records], dtype=np.float64)
    return train_ranker(vectors, support, contexts, seed=seed)
