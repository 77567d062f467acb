"""Compute every metric of every variant, with CIs and differences to the baseline variant."""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from evaluation import metrics as m
from evaluation.bootstrap import (
    LEVEL,
    RESAMPLES,
    SEED,
    Statistic,
    difference,
    interval,
    mean_statistic,
    ratio_statistic,
)
from evaluation.dataset import (
    dialogue_length_statistic,
    distinct_statistic,
    entropy_statistic,
    length_statistic,
    mmd_statistic,
    pairwise_statistic,
    zscore_statistic,
)
from evaluation.inputs import EvalDialogue, EvalTurn
from evaluation.lexical import hdd, mattr, yules_k
from evaluation.real_users import real_user_adherence
from evaluation.realism import MMD, median_bandwidth
from evaluation.results import CURVES, EvaluationResult, EvaluationSettings, VariantResult
from evaluation.specs import METRICS
from evaluation.text import words
from stores.memory import Embedder, embedder_name

LEXICAL = {"turn_length": len, "mattr": mattr, "yules_k": yules_k, "hdd": hdd}
"""Per user turn measures of its word tokens, reported as z-scores against the real turns."""


def evaluate(
    variants: Mapping[str, Sequence[EvalDialogue]],
    *,
    embedder: Embedder,
    reference: Sequence[EvalDialogue] | None = None,
    reference_lengths: Sequence[int] | None = None,
    baseline: str = "ideas",
    available_strategies: int | None = None,
    resamples: int = RESAMPLES,
    seed: int = SEED,
    level: float = LEVEL,
    bandwidth: float | None = None,
) -> EvaluationResult:
    """Measure every variant, and compare each with `baseline` when it is among them.

    Args:
        variants: Variant name -> its dialogues (judge scores already attached, if any).
        embedder: Embeds texts as L2-normalised rows (MiniLM in production).
        reference: Real follow-ups (`inputs.reference_dialogues`); enables the realism distances
            and a `real users` column.
        reference_lengths: User turns per real dialogue, for the dialogue-length distance.
        baseline: The variant the others are compared with.
        available_strategies: Strategies the strategist could choose from (for the normalised
            entropies); read from the documents' library metadata when None.
        resamples: Bootstrap resamples.
        seed: Seed of the bootstrap.
        level: Confidence level of every interval.
        bandwidth: RBF bandwidth of the MMD; the median heuristic on the reference when None.
    """
    real = _Prepared(reference, embedder) if reference else None
    if real is not None and bandwidth is None:
        bandwidth = median_bandwidth(real.vectors)
    options = {"resamples": resamples, "seed": seed, "level": level}
    prepared = {name: _Prepared(dialogues, embedder) for name, dialogues in variants.items()}
    statistics = {
        name: _statistics(p, real, bandwidth, available_strategies, reference_lengths)
        for name, p in prepared.items()
    }
    results = {name: _result(name, p, statistics[name], options) for name, p in prepared.items()}
    base = baseline if baseline in variants else None
    for name, result in results.items():
        if base is None or name == base:
            continue
        pairs = pairing_of(variants[name], variants[base])
        result.differences = {
            metric: difference(stat, statistics[base][metric], pairing=pairs, **options)
            for metric, stat in statistics[name].items()
        }
    settings = EvaluationSettings(
        resamples=resamples,
        seed=seed,
        level=level,
        embedder=embedder_name(embedder),
        bandwidth=bandwidth,
        available_strategies=available_strategies,
        reference_followups=len(reference) if reference else 0,
        reference_dialogues=len(reference_lengths) if reference_lengths else 0,
        real_user_adherence=real_user_adherence(),
    )
    real_result = None
    if real is not None:
        real_result = _result("real users", real, _statistics(real, None, None, None), options)
    return EvaluationResult(results, base, real_result, settings)


def pairing_of(
    variant: Sequence[EvalDialogue], baseline: Sequence[EvalDialogue]
) -> tuple[list[int], list[int]] | None:
    """Return positions of each shared seed key in both variants, or None (unpaired).

    Paired only when every dialogue of both has a key, keys are unique within each, both hold
    the same set of keys, and there are at least 2.
    """
    keys_a, keys_b = [d.key for d in variant], [d.key for d in baseline]
    unique = len(set(keys_a)) == len(keys_a) and len(set(keys_b)) == len(keys_b)
    if None in keys_a or None in keys_b or not unique or set(keys_a) != set(keys_b):
        return None
    if len(keys_a) < 2:
        return None
    where_a = {k: i for i, k in enumerate(keys_a)}
    where_b = {k: i for i, k in enumerate(keys_b)}
    order = sorted(where_a)
    return [where_a[k] for k in order], [where_b[k] for k in order]


def shared_seeds(
    variants: Mapping[str, Sequence[EvalDialogue]],
) -> dict[str, list[EvalDialogue]]:
    """Keep only the dialogues whose seed key every variant has, so that all pair up.

    Use it when some jobs failed in one variant but not in another. Dialogues without a key are
    dropped; a variant's later dialogues with an already seen key too.
    """
    keys = [{d.key for d in dialogues if d.key is not None} for dialogues in variants.values()]
    common = set.intersection(*keys) if keys else set()
    kept = {}
    for name, dialogues in variants.items():
        seen: set[str] = set()
        kept[name] = []
        for dialogue in dialogues:
            if dialogue.key in common and dialogue.key not in seen:
                seen.add(dialogue.key)
                kept[name].append(dialogue)
    return kept


class _Prepared:
    """One set of dialogues with its instruction embeddings and per-turn similarities."""

    def __init__(self, dialogues: Sequence[EvalDialogue], embedder: Embedder) -> None:
        self.dialogues = list(dialogues)
        turns = [(i, t) for i, d in enumerate(self.dialogues) for t in d.turns]
        self.owners = np.array([i for i, _ in turns], dtype=int)
        self.lengths = [len(words(t.instruction)) for _, t in turns]
        tokens = [words(t.instruction) for _, t in turns]
        self.lexical = {name: [measure(w) for w in tokens] for name, measure in LEXICAL.items()}
        self.vectors = _embed(embedder, [t.instruction for _, t in turns])
        answered = [t.previous_answer is not None for _, t in turns]
        answers = np.zeros_like(self.vectors)
        if any(answered):
            texts = [t.previous_answer for _, t in turns if t.previous_answer is not None]
            answers[np.flatnonzero(answered)] = _embed(embedder, texts)
        flat = m.answer_similarities(self.vectors, answers, answered)
        self.similarities: list[list[float | None]] = [[] for _ in self.dialogues]
        for (i, _), value in zip(turns, flat, strict=True):
            self.similarities[i].append(value)
        self.ranked = self._rank_strategies(embedder, turns)

    def _rank_strategies(
        self, embedder: Embedder, turns: list[tuple[int, EvalTurn]]
    ) -> list[list[tuple[int, int]]]:
        """Per dialogue, `(rank, candidates)` of each turn whose applied strategy can be ranked."""
        ranked: list[list[tuple[int, int]]] = [[] for _ in self.dialogues]
        chosen = [
            (row, i, t) for row, (i, t) in enumerate(turns) if m.applied_candidate(t) is not None
        ]
        texts = [text for _, _, t in chosen for _, text in t.candidates]
        vectors, start = _embed(embedder, texts), 0
        for row, i, turn in chosen:
            k = len(turn.candidates)
            rank = m.adherence_rank(
                self.vectors[row], vectors[start : start + k], m.applied_candidate(turn)
            )
            ranked[i].append((rank, k))
            start += k
        return ranked

    def rows(self, index: int) -> np.ndarray:
        """The instruction embeddings of dialogue `index` (owners are in dialogue order)."""
        start, end = np.searchsorted(self.owners, [index, index + 1])
        return self.vectors[start:end]


def _embed(embedder: Embedder, texts: list[str]) -> np.ndarray:
    """Embed texts, each distinct text once."""
    if not texts:
        return np.zeros((0, 1))
    distinct = list(dict.fromkeys(texts))
    where = {text: i for i, text in enumerate(distinct)}
    vectors = np.asarray(embedder.embed(distinct), dtype=np.float64)
    return vectors[[where[t] for t in texts]]


def _available(dialogues: Sequence[EvalDialogue], given: int | None) -> int | None:
    if given is not None:
        return given
    sizes = {d.library_size for d in dialogues if d.library_size is not None}
    return sizes.pop() if len(sizes) == 1 else None


def _statistics(
    p: _Prepared,
    real: _Prepared | None,
    bandwidth: float | None,
    available: int | None,
    real_lengths: Sequence[int] | None = None,
) -> dict[str, Statistic]:
    """Build every metric's statistic for one set of dialogues."""
    ds = p.dialogues
    available = _available(ds, available)
    per_dialogue = {
        "distinct_1_within": [m.within_distinct_n(d, 1) for d in ds],
        "distinct_2_within": [m.within_distinct_n(d, 2) for d in ds],
        "embedding_distance_within": [m.mean_pairwise_distance(p.rows(i)) for i in range(len(ds))],
        "strategy_entropy_within": [m.strategy_entropy(d) for d in ds],
        "strategy_entropy_within_norm": [m.strategy_entropy_normalised(d, available) for d in ds],
        "top_candidate_rate": [m.top_candidate_rate(d) for d in ds],
        "strategy_adherence": [m.strategy_adherence(r) for r in p.ranked],
        "strategy_adherence_chance": [m.adherence_chance(r) for r in p.ranked],
        "strategy_misfit": [m.strategy_misfit(d) for d in ds],
        "strategy_restatement": [m.strategy_restatement(d) for d in ds],
        "critic_depth": [m.critic_score(d, "depth") for d in ds],
        "critic_insight": [m.critic_score(d, "insight") for d in ds],
        "judge_depth": [m.judge_score(d, "depth") for d in ds],
        "judge_insight": [m.judge_score(d, "insight") for d in ds],
        "judge_coherence": [m.judge_score(d, "coherence") for d in ds],
        "answer_similarity": [m.mean_or_none(s) for s in p.similarities],
        "refers_back": [m.reference_rate(d) for d in ds],
        "repetition_mean": [m.repetition_mean(d) for d in ds],
        "repetition_max": [m.repetition_max(d) for d in ds],
        "length_words": [m.length_words(d) for d in ds],
        "question_rate": [m.question_rate(d) for d in ds],
        "anaphora_rate": [m.anaphora_rate(d) for d in ds],
        "assistant_like_rate": [m.assistant_like_rate(d) for d in ds],
        "looping_rate": [m.looping_rate(d) for d in ds],
    }
    stats = {name: mean_statistic(values) for name, values in per_dialogue.items()}
    stats |= _cost_statistics(ds)
    stats |= {
        "distinct_1": distinct_statistic(ds, 1),
        "distinct_2": distinct_statistic(ds, 2),
        "embedding_distance": pairwise_statistic(p.vectors, p.owners, len(ds)),
        "strategy_entropy": entropy_statistic(ds, available),
        "strategy_entropy_norm": entropy_statistic(ds, available, normalised=True),
    }
    if real is not None:
        stats["length_w1"] = length_statistic(p.lengths, p.owners, len(ds), real.lengths)
        mmd = MMD(p.vectors, real.vectors, bandwidth)
        stats["embedding_mmd"] = mmd_statistic(mmd, p.owners, len(ds))
    else:
        stats["length_w1"] = stats["embedding_mmd"] = mean_statistic([None] * len(ds))
    for name in LEXICAL:
        stats[f"{name}_z"] = (
            zscore_statistic(p.lexical[name], p.owners, len(ds), real.lexical[name])
            if real is not None
            else mean_statistic([None] * len(ds))
        )
    stats["dialogue_length_w1"] = (
        dialogue_length_statistic([m.user_turns(d) for d in ds], real_lengths)
        if real_lengths
        else mean_statistic([None] * len(ds))
    )
    return stats


def _cost_statistics(dialogues: Sequence[EvalDialogue]) -> dict[str, Statistic]:
    """Ratios of sums over our documents; foreign dialogues have no cost and count for nothing."""
    costs = [d.cost for d in dialogues]

    def column(name: str) -> list[float]:
        return [float(getattr(c, name)) if c else 0.0 for c in costs]

    turns = column("accepted")
    return {
        "calls_per_turn": ratio_statistic(column("calls"), turns),
        "input_tokens_per_turn": ratio_statistic(column("input_tokens"), turns),
        "evaluated_tokens_per_turn": ratio_statistic(column("evaluated_tokens"), turns),
        "output_tokens_per_turn": ratio_statistic(column("output_tokens"), turns),
        "seconds_per_turn": ratio_statistic(column("seconds"), turns),
        "rejection_rate": ratio_statistic(column("rejected"), column("drafts")),
    }


def _result(
    name: str, p: _Prepared, stats: dict[str, Statistic], options: dict[str, Any]
) -> VariantResult:
    statuses = Counter(d.status for d in p.dialogues if d.status)
    return VariantResult(
        name=name,
        dialogues=len(p.dialogues),
        turns=len(p.owners),
        metrics={spec.name: interval(stats[spec.name], **options) for spec in METRICS},
        statuses=dict(sorted(statuses.items())),
        strategies=_strategy_use(p.dialogues),
        per_turn=_curves(p),
    )


def _strategy_use(dialogues: Sequence[EvalDialogue]) -> list[dict[str, Any]]:
    counts: Counter[str] = Counter()
    texts: dict[str, str] = {}
    for turn in (t for d in dialogues for t in d.turns if t.strategy_id is not None):
        counts[turn.strategy_id] += 1
        texts.setdefault(turn.strategy_id, turn.strategy_text or "")
    ranked = sorted(counts.items(), key=lambda item: (-item[1], item[0]))
    return [{"id": sid, "text": texts[sid], "count": count} for sid, count in ranked]


def _curves(p: _Prepared) -> dict[str, list[float | None]]:
    values: dict[str, list[list[float]]] = {name: [] for name in CURVES}
    for dialogue, similarities in zip(p.dialogues, p.similarities, strict=True):
        for index, (turn, similarity) in enumerate(zip(dialogue.turns, similarities, strict=True)):
            judged = turn.judge
            scores = {
                "critic_depth": turn.depth,
                "critic_insight": turn.insight,
                "judge_depth": judged.depth if judged else None,
                "judge_insight": judged.insight if judged else None,
                "judge_coherence": judged.coherence if judged else None,
                "answer_similarity": similarity,
            }
            for name, value in scores.items():
                if value is not None:
                    slots = values[name]
                    slots.extend([] for _ in range(index + 1 - len(slots)))
                    slots[index].append(float(value))
    return {
        name: [float(np.mean(v)) if v else None for v in per_index]
        for name, per_index in values.items()
        if per_index
    }
