"""Per-dialogue metrics of generated user instructions, each a small pure function.

Every function returns None (reported as n/a) when its definition does not apply, for example a
within-dialogue diversity of a dialogue with one instruction, or critic scores of a dialogue whose
critic gave none. None is never turned into zero. Embeddings are L2-normalised rows, so a cosine
similarity is a dot product.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

import numpy as np
from rapidfuzz.distance import Levenshtein

from dialogues.domain import misfit
from dialogues.strategy_use import entropy_bits, normalised_entropy
from evaluation.inputs import EvalDialogue, EvalTurn
from evaluation.text import (
    is_anaphoric,
    is_assistant_like,
    is_question,
    loops,
    ngrams,
    refers_back,
    strategy_overlap,
    words,
)


def distinct_n(texts: Sequence[str], n: int) -> float | None:
    """Distinct-n: unique n-grams / all n-grams, over lower-cased word tokens of `texts`.

    N-grams never cross from one text to the next. None when the texts hold no n-gram.
    """
    grams = [g for text in texts for g in ngrams(words(text), n)]
    return len(set(grams)) / len(grams) if grams else None


def mean_pairwise_distance(vectors: np.ndarray) -> float | None:
    """Mean cosine distance (1 - cosine similarity) over all pairs of rows; None below 2 rows."""
    count = len(vectors)
    if count < 2:
        return None
    similarity = vectors @ vectors.T
    off_diagonal = similarity.sum() - np.trace(similarity)
    return float(1 - off_diagonal / (count * (count - 1)))


def user_turns(dialogue: EvalDialogue) -> int:
    """User turns in the whole dialogue: the seed's and the generated ones."""
    return sum(1 for message in dialogue.messages if message.role == "user")


def strategy_ids(dialogue: EvalDialogue) -> list[str]:
    """Return the ids of the strategies applied in the dialogue's turns (others skipped)."""
    return [t.strategy_id for t in dialogue.turns if t.strategy_id is not None]


def strategy_entropy(dialogue: EvalDialogue) -> float | None:
    """Within-dialogue entropy (bits) of the strategies used; None when no turn has one."""
    return entropy_bits(list(Counter(strategy_ids(dialogue)).values()))


def strategy_entropy_normalised(dialogue: EvalDialogue, available: int | None) -> float | None:
    """Within-dialogue entropy / log2(min(available, strategy turns)); None below 2 such turns.

    1.0 means no strategy was applied twice. `available` unknown: log2(strategy turns).
    """
    used = list(Counter(strategy_ids(dialogue)).values())
    turns = sum(used)
    if turns < 2:
        return None
    return normalised_entropy(used, available or turns)


def top_candidate_rate(dialogue: EvalDialogue) -> float | None:
    """Fraction of strategy turns that applied the first (best-matching) retrieved candidate.

    A strategist that truly chooses lands anywhere; one that always takes the first candidate adds
    nothing to retrieval. Uniform choice among k candidates gives about 1/k. None when no turn
    records where its strategy stood among the candidates.
    """
    ranks = [t.strategy_rank for t in dialogue.turns if t.strategy_rank is not None]
    return sum(r == 0 for r in ranks) / len(ranks) if ranks else None


def applied_candidate(turn: EvalTurn) -> int | None:
    """Index of the applied strategy among the turn's candidates, when it can be ranked.

    None without a strategy, when the strategy is not among the candidates, or with fewer than 2
    candidates (one candidate is always the most similar: nothing to rank).
    """
    ids = [cid for cid, _ in turn.candidates]
    applied = str(turn.strategy_id) if turn.strategy_id is not None else None
    if len(ids) < 2 or applied not in ids:
        return None
    return ids.index(applied)


def adherence_rank(instruction: np.ndarray, candidates: np.ndarray, applied: int) -> int:
    """0-based rank of candidate `applied` by cosine similarity to the instruction.

    Rows are L2-normalised embeddings. The rank counts the other candidates at least as similar
    as the applied one, so a tie never makes the applied strategy the top one.
    """
    similarities = candidates @ instruction
    return int(np.sum(similarities >= similarities[applied])) - 1


def strategy_adherence(ranked: Sequence[tuple[int, int]]) -> float | None:
    """Fraction of a dialogue's ranked turns whose applied strategy ranks first (top-1).

    `ranked` holds `(rank, candidates)` per turn (`adherence_rank`, `applied_candidate`); None
    when no turn could be ranked (no strategies, no candidates, foreign dialogues).
    """
    return sum(rank == 0 for rank, _ in ranked) / len(ranked) if ranked else None


def adherence_chance(ranked: Sequence[tuple[int, int]]) -> float | None:
    """Top-1 rate of a random guess over the same turns: mean of 1/k, k = the turn's candidates."""
    return mean_or_none([1 / k for _, k in ranked])


def strategy_misfit(dialogue: EvalDialogue) -> float | None:
    """Fraction of strategy turns whose strategy does not fit the dialogue so far.

    A strategy misfits when it is programming-specific while nothing before the turn holds code
    (`dialogues.domain.misfit`, docs/metrics-fit.md). None without strategy texts.
    """
    flags = [
        misfit(t.strategy_text, [m.content for m in dialogue.history(t)])
        for t in dialogue.turns
        if t.strategy_text
    ]
    return sum(flags) / len(flags) if flags else None


def strategy_restatement(dialogue: EvalDialogue) -> float | None:
    """Mean share of each strategy's content words the instruction repeats (`strategy_overlap`).

    Over turns with a strategy text holding a content word; None when there is none.
    """
    return mean_or_none(
        [
            strategy_overlap(t.instruction, t.strategy_text)
            for t in dialogue.turns
            if t.strategy_text
        ]
    )


def within_distinct_n(dialogue: EvalDialogue, n: int) -> float | None:
    """Distinct-n over one dialogue's generated instructions; None below 2 instructions."""
    return distinct_n(dialogue.instructions, n) if len(dialogue.turns) >= 2 else None


def mean_or_none(values: Sequence[float | None]) -> float | None:
    """Mean of the values that are not None; None when there are none."""
    present = [v for v in values if v is not None]
    return float(np.mean(present)) if present else None


def critic_score(dialogue: EvalDialogue, name: str) -> float | None:
    """Mean critic score (`depth` or `insight`, 1-5) of accepted drafts; None when there is none."""
    return mean_or_none([getattr(t, name) for t in dialogue.turns])


def judge_score(dialogue: EvalDialogue, name: str) -> float | None:
    """Mean judge score (`depth`, `insight` or `coherence`, 1-10); None when unjudged."""
    return mean_or_none([getattr(t.judge, name) if t.judge else None for t in dialogue.turns])


def answer_similarities(
    instructions: np.ndarray, answers: np.ndarray, has_answer: Sequence[bool]
) -> list[float | None]:
    """Cosine similarity of each instruction to the answer before it (None without one)."""
    return [
        float(q @ a) if present else None
        for q, a, present in zip(instructions, answers, has_answer, strict=True)
    ]


def reference_rate(dialogue: EvalDialogue) -> float | None:
    """Fraction of instructions that refer back to the answer before them (`text.refers_back`).

    Only instructions that follow an answer count; None when none does.
    """
    flags = [
        refers_back(t.instruction, t.previous_answer)
        for t in dialogue.turns
        if t.previous_answer is not None
    ]
    return sum(flags) / len(flags) if flags else None


def repetition(dialogue: EvalDialogue) -> list[float]:
    """Per instruction, its highest Levenshtein similarity to an earlier user message.

    Similarity is rapidfuzz's `Levenshtein.normalized_similarity` (1 - edit distance / length of
    the longer text) on the raw texts. Earlier user messages include the seed's. An instruction
    with no earlier user message has no value.
    """
    users = [(i, m.content) for i, m in enumerate(dialogue.messages) if m.role == "user"]
    scores = []
    for turn in dialogue.turns:
        earlier = [text for i, text in users if i < turn.position]
        if earlier:
            scores.append(
                max(Levenshtein.normalized_similarity(turn.instruction, e) for e in earlier)
            )
    return scores


def repetition_mean(dialogue: EvalDialogue) -> float | None:
    """Mean of `repetition` over the dialogue's instructions; None when it has no value."""
    return mean_or_none(repetition(dialogue))


def repetition_max(dialogue: EvalDialogue) -> float | None:
    """Max of `repetition` over the dialogue's instructions; None when it has no value."""
    scores = repetition(dialogue)
    return max(scores) if scores else None


def length_words(dialogue: EvalDialogue) -> float | None:
    """Mean length of the instructions in word tokens; None without instructions."""
    return mean_or_none([len(words(t)) for t in dialogue.instructions])


def question_rate(dialogue: EvalDialogue) -> float | None:
    """Fraction of instructions in question form (`text.is_question`)."""
    return mean_or_none([float(is_question(t)) for t in dialogue.instructions])


def anaphora_rate(dialogue: EvalDialogue) -> float | None:
    """Fraction of instructions with an anaphoric word or phrase (`text.is_anaphoric`)."""
    return mean_or_none([float(is_anaphoric(t)) for t in dialogue.instructions])


def looping_rate(dialogue: EvalDialogue) -> float | None:
    """Fraction of instructions that loop (`text.loops`)."""
    return mean_or_none([float(loops(t)) for t in dialogue.instructions])


def assistant_like_rate(dialogue: EvalDialogue) -> float | None:
    """Fraction of instructions that read like an assistant reply (`text.assistant_like`)."""
    return mean_or_none([float(is_assistant_like(t)) for t in dialogue.instructions])
