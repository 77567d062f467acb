"""The metrics of an evaluation, in report order, with their one-line definitions."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal


@dataclass(frozen=True)
class MetricSpec:
    """What one row of the report measures."""

    name: str
    """Key in results and JSON."""
    label: str
    """Row label in the report."""
    group: str
    """Diversity, strategy, depth, coherence, repetition, realism or cost."""
    better: Literal["higher", "lower"] | None
    """Which direction is better, when one is (realism rates are compared to real users)."""
    scope: Literal["dialogue", "dataset"]
    """`dialogue`: from per-dialogue values, a mean (cost: a ratio of sums), percentile bootstrap
    CI; `dataset`: one dataset-level value, delete-one-dialogue jackknife CI."""
    definition: str
    """One line for the report and the JSON."""


METRICS: tuple[MetricSpec, ...] = (
    MetricSpec("distinct_1", "distinct-1", "diversity", "higher", "dataset",
               "unique / all word unigrams over every instruction"),
    MetricSpec("distinct_2", "distinct-2", "diversity", "higher", "dataset",
               "unique / all word bigrams over every instruction"),
    MetricSpec("distinct_1_within", "distinct-1 within dialogue", "diversity", "higher",
               "dialogue", "distinct-1 over one dialogue's instructions (needs 2+)"),
    MetricSpec("distinct_2_within", "distinct-2 within dialogue", "diversity", "higher",
               "dialogue", "distinct-2 over one dialogue's instructions (needs 2+)"),
    MetricSpec("embedding_distance", "embedding distance", "diversity", "higher", "dataset",
               "mean 1 - cosine over all pairs of instructions"),
    MetricSpec("embedding_distance_within", "embedding distance within dialogue", "diversity",
               "higher", "dialogue", "mean 1 - cosine over pairs within one dialogue"),
    MetricSpec("strategy_entropy", "strategy entropy (bits)", "diversity", "higher", "dataset",
               "Shannon entropy of strategy ids over all turns"),
    MetricSpec("strategy_entropy_norm", "strategy entropy, normalised", "diversity", "higher",
               "dataset", "entropy / log2(min(strategies available, turns))"),
    MetricSpec("strategy_entropy_within", "strategy entropy within dialogue (bits)",
               "diversity", "higher", "dialogue", "entropy of one dialogue's strategy ids"),
    MetricSpec("strategy_entropy_within_norm", "strategy entropy within dialogue, normalised",
               "diversity", "higher", "dialogue",
               "within-dialogue entropy / log2(min(available, strategy turns))"),
    MetricSpec("top_candidate_rate", "strategist takes the top candidate", "diversity", None,
               "dialogue", "fraction of strategy turns applying the best-matching retrieved "
               "candidate (uniform choice: 1/k)"),
    MetricSpec("strategy_adherence", "strategy adherence (top-1)", "strategy", "higher",
               "dialogue", "fraction of ranked strategy turns whose applied strategy is, of the "
               "turn's k >= 2 candidates, the most similar to the instruction (MiniLM cosine)"),
    MetricSpec("strategy_adherence_chance", "strategy adherence, chance (1/k)", "strategy", None,
               "dialogue", "top-1 rate of a random guess over the same turns: mean of 1/k"),
    MetricSpec("strategy_misfit", "strategy misfit (domain)", "strategy", "lower", "dialogue",
               "fraction of strategy turns drawing a programming-specific strategy (keyword "
               "rule) while the dialogue so far holds no code (docs/metrics-fit.md)"),
    MetricSpec("strategy_restatement", "strategy restatement", "strategy", "lower", "dialogue",
               "fraction of the strategy's content words the instruction repeats"),
    MetricSpec("critic_depth", "critic depth (1-5)", "depth", "higher", "dialogue",
               "mean critic depth score of accepted drafts"),
    MetricSpec("critic_insight", "critic insight (1-5)", "depth", "higher", "dialogue",
               "mean critic insight score of accepted drafts"),
    MetricSpec("judge_depth", "judge depth (1-10)", "depth", "higher", "dialogue",
               "mean judge depth score"),
    MetricSpec("judge_insight", "judge insight (1-10)", "depth", "higher", "dialogue",
               "mean judge insight score"),
    MetricSpec("judge_coherence", "judge coherence (1-10)", "coherence", "higher", "dialogue",
               "mean judge coherence score"),
    MetricSpec("answer_similarity", "similarity to previous answer", "coherence", "higher",
               "dialogue", "mean cosine of an instruction to the answer before it"),
    MetricSpec("refers_back", "refers back to answer", "coherence", "higher", "dialogue",
               "fraction sharing a content word with the answer before, or anaphoric"),
    MetricSpec("repetition_mean", "repetition (mean)", "repetition", "lower", "dialogue",
               "mean of each instruction's max Levenshtein similarity to earlier user turns"),
    MetricSpec("repetition_max", "repetition (max)", "repetition", "lower", "dialogue",
               "max of each instruction's max Levenshtein similarity to earlier user turns"),
    MetricSpec("length_words", "length (words)", "realism", None, "dialogue",
               "mean instruction length in word tokens"),
    MetricSpec("question_rate", "question form", "realism", None, "dialogue",
               "fraction ending with '?' or starting with a wh-/auxiliary word"),
    MetricSpec("anaphora_rate", "anaphora", "realism", None, "dialogue",
               "fraction with an anaphoric word or phrase"),
    MetricSpec("assistant_like_rate", "assistant-like user turns", "realism", "lower",
               "dialogue", "fraction opening like an answer, with a fenced code block over 10 "
               "lines, a list of 3+ items, or over 120 words"),
    MetricSpec("looping_rate", "looping user turns", "realism", "lower", "dialogue",
               "fraction writing a run of 1-8 words 3 times running, or a special tag "
               "such as <|endconversation|>"),
    MetricSpec("length_w1", "length W1 to real (words)", "realism", "lower", "dataset",
               "Wasserstein-1 distance between length distributions, generated vs real"),
    MetricSpec("turn_length_z", "turn length z vs real", "realism", None, "dataset",
               "mean words per user turn as a z-score against the real turns (0 = as real)"),
    MetricSpec("mattr_z", "MATTR z vs real", "realism", None, "dataset",
               "moving-average type-token ratio (10-word windows) per user turn, z vs real"),
    MetricSpec("yules_k_z", "Yule's K z vs real", "realism", None, "dataset",
               "Yule's K (repetition) per user turn, z-score against the real turns"),
    MetricSpec("hdd_z", "HD-D z vs real", "realism", None, "dataset",
               "HD-D (10-token draws) per user turn, z-score against the real turns"),
    MetricSpec("dialogue_length_w1", "dialogue length W1 to real", "realism", "lower",
               "dataset", "Wasserstein-1 distance between user turns per dialogue, generated "
               "vs real dialogues"),
    MetricSpec("embedding_mmd", "embedding MMD to real", "realism", "lower", "dataset",
               "RBF-kernel MMD between embedding distributions, generated vs real"),
    MetricSpec("calls_per_turn", "LLM calls per turn", "cost", "lower", "dialogue",
               "all agents' calls / accepted turns (ratio of sums)"),
    MetricSpec("input_tokens_per_turn", "input tokens per turn", "cost", "lower", "dialogue",
               "prompt tokens / accepted turns (ratio of sums)"),
    MetricSpec("evaluated_tokens_per_turn", "evaluated prompt tokens per turn", "cost", "lower",
               "dialogue", "prompt tokens the server evaluated, not reused from its prefix "
               "cache / accepted turns (ratio of sums)"),
    MetricSpec("output_tokens_per_turn", "output tokens per turn", "cost", "lower", "dialogue",
               "completion tokens / accepted turns (ratio of sums)"),
    MetricSpec("seconds_per_turn", "LLM seconds per turn", "cost", "lower", "dialogue",
               "seconds in LLM calls / accepted turns (ratio of sums)"),
    MetricSpec("rejection_rate", "rejection rate", "cost", None, "dialogue",
               "rejected drafts / all drafts (ratio of sums)"),
)  # fmt: skip
"""Every metric, in report order."""
