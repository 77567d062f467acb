"""Evaluation metrics on tiny hand-made dialogues, with every expected value worked out by hand."""

from __future__ import annotations

import asyncio
import dataclasses
import gzip
import json
import math

import numpy as np
import pytest

from evaluation import metrics as m
from evaluation.bootstrap import (
    Statistic,
    difference,
    interval,
    mean_ci,
    mean_difference_ci,
    mean_statistic,
    ratio_statistic,
)
from evaluation.dataset import distinct_statistic, entropy_statistic, pairwise_statistic
from evaluation.evaluate import evaluate, pairing_of, shared_seeds
from evaluation.inputs import (
    Cost,
    EvalInputError,
    Message,
    dialogue_from_record,
    load_dialogues,
    reference_dialogues,
)
from evaluation.judge import Judge
from evaluation.realism import MMD, median_bandwidth, wasserstein_1d
from evaluation.results import EvaluationResult
from evaluation.text import (
    assistant_like,
    content_words,
    is_anaphoric,
    is_question,
    loops,
    refers_back,
    strategy_overlap,
    words,
)
from induction.loaders import load
from induction.records import Pair, Turn
from stores.memory import HashingEmbedding
from tests.data_paths import DATA
from tests.fakes import scripted, tool_reply

REAL_FOLLOWUPS = [DATA / "oasst1-en100/en_100_tree.jsonl", DATA / "realhumaneval-chat/chats.jsonl"]
R2 = math.sqrt(0.5)
E1, E2, E3 = np.eye(3, dtype=np.float32)
DIAGONAL = np.array([R2, R2, 0], dtype=np.float32)  # (e1 + e2) / sqrt(2)


class FixedEmbedder:
    """Embeds only the texts it was given vectors for (anything else is a test bug)."""

    def __init__(self, vectors: dict[str, np.ndarray]) -> None:
        self.vectors = vectors

    def embed(self, texts):
        return np.stack([self.vectors[t] for t in texts]).astype(np.float32)


def usage(calls, input_tokens, output_tokens, seconds):
    return {
        "calls": calls,
        "input_tokens": input_tokens,
        "output_tokens": output_tokens,
        "seconds": seconds,
    }


def draft(text, accepted=True, depth=None, insight=None, reason="accepted"):
    scores = None
    if depth is not None:
        scores = {
            "correct": True,
            "coherent": True,
            "depth": depth,
            "insight": insight,
            "feedback": "fine",
        }
    return {
        "text": text,
        "accepted": accepted,
        "reason": reason,
        "similarity": 0.1,
        "scores": scores,
    }


def turn_record(index, instruction, answer, strategy, drafts, spent):
    return {
        "index": index,
        "candidates": [],
        "strategy": {"id": strategy, "text": f"strategy {strategy}"} if strategy else None,
        "selection": {"method": "llm", "note": None},
        "drafts": drafts,
        "critic": drafts[-1],
        "instruction": instruction,
        "answer": answer,
        "usage": spent,
    }


def document(seed, turns, *, job=None, unfinished=None, library=None, status="complete"):
    messages = [*seed]
    for t in turns:
        messages += [
            {"role": "user", "content": t["instruction"]},
            {"role": "assistant", "content": t["answer"]},
        ]
    return {
        "format": "ideas-dialogue/1",
        "status": status,
        "reason": None,
        "messages": messages,
        "opening": {"answer": "x", "usage": {"assistant": usage(1, 999, 999, 9.0)}},
        "turns": turns,
        "unfinished_turn": unfinished,
        "summary": {},
        "library": library or {"name": "default", "counts": {"high": 20}},
        "settings": {},
        **({"batch": {"job": job}} if job is not None else {}),
    }


A0 = "Vaccines show the immune system a harmless antigen so memory cells form."
A1 = "B cells and T cells both form memory."
A2 = "Measles shots are a classic example."
A3 = "Edward Jenner tested the first vaccine in 1796."
Q1 = "Which memory cells form first?"
Q2 = "Can you give an example of that?"
Q3 = "Tell me about the history of vaccines"
SEED = [
    {"role": "system", "content": "Be brief."},
    {"role": "user", "content": "How do vaccines work?"},
    {"role": "assistant", "content": A0},
]


def vaccine_document(job="seed-1"):
    turns = [
        turn_record(
            1,
            Q1,
            A1,
            "s1",
            [draft("Tell me more.", False, 1, 1, "not coherent"), draft(Q1, True, 4, 3)],
            {
                "strategist": usage(1, 100, 5, 0.5),
                "simulator": usage(2, 300, 40, 1.0),
                "critic": usage(2, 400, 20, 0.5),
                "assistant": usage(1, 200, 50, 2.0),
            },
        ),
        turn_record(
            2,
            Q2,
            A2,
            "s2",
            [draft(Q2, True, 2, 5)],
            {"simulator": usage(1, 150, 20, 0.5), "assistant": usage(1, 250, 30, 1.5)},
        ),
        turn_record(3, Q3, A3, "s1", [draft(Q3, True)], {"assistant": usage(1, 100, 10, 1.0)}),
    ]
    unfinished = {
        "index": 4,
        "strategy": {"id": "s3", "text": "strategy s3"},
        "drafts": [draft("Again?", False), draft("Again!", False)],
        "usage": {"simulator": usage(2, 200, 20, 1.0), "critic": usage(2, 100, 10, 1.0)},
    }
    return document(SEED, turns, job=job, unfinished=unfinished, status="ended_early")


@pytest.fixture
def vaccine():
    return dialogue_from_record(vaccine_document(), "vaccine")


def sharegpt(*texts, record_id=None):
    roles = ["human", "gpt"]
    record = {"conversations": [{"from": roles[i % 2], "value": t} for i, t in enumerate(texts)]}
    return record | ({"id": record_id} if record_id else {})


# ---------------------------------------------------------------- lexical rules


def test_words_keep_inner_apostrophes_and_split_on_punctuation():
    assert words("What's the CPU-load?") == ["what's", "the", "cpu", "load"]


@pytest.mark.parametrize(
    ("text", "question"),
    [
        ("Which cells form first?", True),
        ("How it works", True),  # wh-word first, no '?'
        ("Could you list them", True),  # auxiliary first
        ("List three examples.", False),
        ("List three examples?  ", True),
    ],
)
def test_is_question(text, question):
    assert is_question(text) is question


@pytest.mark.parametrize(
    ("text", "anaphoric"),
    [
        ("Can you give an example of that?", True),
        ("Why are those cells first?", True),
        ("Expand on what you mentioned about memory", True),
        ("Compare the former with mRNA", True),
        ("Which memory cells form first?", False),
        ("Italy has great food", False),  # 'it' only as a whole word
    ],
)
def test_is_anaphoric(text, anaphoric):
    assert is_anaphoric(text) is anaphoric


def test_content_words_drop_short_words_stopwords_and_plural_s():
    # 'which', 'about', 'this' are stopwords; 'cells' -> 'cell'
    assert content_words("Which cells form about this antigen") == {"cell", "form", "antigen"}


def test_refers_back_by_shared_content_word_or_anaphora():
    assert refers_back(Q1, A0)  # shares 'memory', 'cell', 'form'
    assert refers_back(Q2, A1)  # no shared content word, but 'that'
    assert not refers_back(Q3, A2)  # {history, vaccine} vs {measle, shot, classic, example}


# ---------------------------------------------------------------- diversity


def test_distinct_n_counts_ngrams_within_each_text():
    # unigrams a b a | b c: 5 in all, 3 unique
    assert m.distinct_n(["a b a", "b c"], 1) == pytest.approx(3 / 5)
    # bigrams (a b) (b a) | (b c): 3 unique of 3; no (a b) across the boundary
    assert m.distinct_n(["a b a", "b c"], 2) == 1.0
    assert m.distinct_n(["a b", "A B!"], 2) == 0.5  # lower-cased: (a b) twice
    assert m.distinct_n(["one"], 2) is None


def test_mean_pairwise_distance_with_fixed_vectors():
    # pairs: e1.e2 = 0 -> 1; e1.d = e2.d = 1/sqrt2 -> 0.29289 each; mean (1 + 0.58579) / 3
    vectors = np.stack([E1, E2, DIAGONAL])
    assert m.mean_pairwise_distance(vectors) == pytest.approx(0.528595, abs=1e-6)
    assert m.mean_pairwise_distance(vectors[:1]) is None


def test_entropy_bits_and_its_normalisations():
    # counts 2, 1, 1: -(1/2 log 1/2 + 2 * 1/4 log 1/4) = 0.5 + 1 = 1.5 bits
    assert m.entropy_bits([2, 1, 1]) == pytest.approx(1.5)
    # unknown library: / log2(3 distinct used) = 1.5 / 1.58496
    assert m.normalised_entropy([2, 1, 1], None) == pytest.approx(0.946395, abs=1e-6)
    # 8 available, 4 draws: / log2(min(8, 4)) = 1.5 / 2
    assert m.normalised_entropy([2, 1, 1], 8) == pytest.approx(0.75)
    assert m.entropy_bits([3]) == 0.0
    assert m.normalised_entropy([3], None) is None  # max entropy log2(1) = 0
    assert m.entropy_bits([]) is None


def test_within_dialogue_diversity_of_the_vaccine_dialogue(vaccine):
    # 5 + 7 + 7 = 19 words; 'of' appears twice, everything else once -> 18 unique
    assert m.within_distinct_n(vaccine, 1) == pytest.approx(18 / 19)
    # 4 + 6 + 6 = 16 bigrams, all different
    assert m.within_distinct_n(vaccine, 2) == 1.0
    # strategies s1, s2, s1: H(2/3, 1/3) = 0.918296 bits; / log2(min(20, 3 turns))
    assert m.strategy_entropy(vaccine) == pytest.approx(0.918296, abs=1e-6)
    assert m.strategy_entropy_normalised(vaccine, 20) == pytest.approx(0.918296 / math.log2(3))
    assert m.strategy_entropy_normalised(vaccine, 2) == pytest.approx(0.918296)  # log2(2) = 1


def test_top_candidate_rate_counts_where_the_applied_strategy_stood(vaccine):
    turns = vaccine_document()["turns"]
    for record, candidates in zip(turns, [["s1", "s2"], ["s1", "s2", "s3"], ["s4"]], strict=True):
        record["candidates"] = [
            {"id": c, "text": c, "score": 0.5, "rank": r} for r, c in enumerate(candidates)
        ]
    dialogue = dialogue_from_record(document(SEED, turns), "ranks")
    # s1 first of 2 -> rank 0; s2 second of 3 -> rank 1; s1 not among ['s4'] -> unknown
    assert [t.strategy_rank for t in dialogue.turns] == [0, 1, None]
    assert m.top_candidate_rate(dialogue) == 0.5
    assert m.top_candidate_rate(vaccine) is None  # no candidates recorded: n/a, not 0


def candidates(*pairs):
    return [{"id": c, "text": t, "score": 0.5, "rank": r} for r, (c, t) in enumerate(pairs)]


def test_applied_candidate_needs_the_strategy_among_two_or_more_candidates(vaccine):
    turns = vaccine_document()["turns"]
    turns[0]["candidates"] = candidates(("s2", "b"), ("s1", "a"))
    turns[1]["candidates"] = candidates(("s2", "b"))  # one candidate: nothing to rank
    turns[2]["candidates"] = candidates(("s2", "b"), ("s3", "c"))  # s1 not among them
    dialogue = dialogue_from_record(document(SEED, turns), "candidates")
    assert dialogue.turns[0].candidates == (("s2", "b"), ("s1", "a"))
    assert [m.applied_candidate(t) for t in dialogue.turns] == [1, None, None]
    assert [m.applied_candidate(t) for t in vaccine.turns] == [None, None, None]


def test_adherence_rank_counts_candidates_at_least_as_similar():
    rows = np.stack([E1, E2, E3])
    assert m.adherence_rank(E1, rows, 0) == 0  # cosines 1, 0, 0
    assert m.adherence_rank(E1, rows, 2) == 2  # 0 ties with e2's 0 and is below e1's 1
    assert m.adherence_rank(DIAGONAL, rows, 2) == 2  # 0 below 1/sqrt2 twice
    assert m.adherence_rank(DIAGONAL, rows, 0) == 1  # ties with e2 (1/sqrt2): not top-1
    assert m.adherence_rank(DIAGONAL, np.stack([DIAGONAL, E3]), 0) == 0


def test_strategy_adherence_and_its_chance_inside_evaluate():
    turns = vaccine_document()["turns"]
    turns[0]["candidates"] = candidates(("s1", "alpha"), ("s2", "beta"))
    turns[1]["candidates"] = candidates(("s1", "alpha"), ("s2", "beta"), ("s3", "gamma"))
    turns[1]["strategy"] = {"id": "s3", "text": "gamma"}
    turns[2]["candidates"] = candidates(("s4", "delta"))  # applied s1 not among: n/a
    ranked = dialogue_from_record(document(SEED, turns, job="a"), "ranked")
    plain_turns = [turn_record(1, Q1, A1, None, [draft(Q1)], {})]
    plain = dialogue_from_record(document(SEED, plain_turns, job="b"), "plain")
    vectors = {
        Q1: E1,  # alpha (e1) 1, beta (e2) 0 -> the applied alpha ranks first
        Q2: DIAGONAL,  # alpha, beta 1/sqrt2, gamma (e3) 0 -> the applied gamma ranks third
        Q3: E3,
        "alpha": E1,
        "beta": E2,
        "gamma": E3,
        **{a: E2 for a in (A0, A1, A2)},
    }
    result = evaluate({"ideas": [ranked, plain]}, embedder=FixedEmbedder(vectors), resamples=50)
    got = result.variants["ideas"].metrics
    # top-1 in 1 of 2 ranked turns; the plain dialogue has no strategies: n/a, not 0
    assert (got["strategy_adherence"].mean, got["strategy_adherence"].n) == (0.5, 1)
    # chance: mean of 1/2 and 1/3
    assert got["strategy_adherence_chance"].mean == pytest.approx(5 / 12)
    assert got["strategy_adherence_chance"].n == 1


def test_strategy_overlap_counts_the_strategy_content_words_repeated():
    strategy = "Ask for a concrete example of the mechanism"  # {concrete, example, mechanism}
    assert strategy_overlap("Can you give a concrete example?", strategy) == pytest.approx(2 / 3)
    assert strategy_overlap("Any CONCRETE Examples of mechanisms?", strategy) == 1.0
    assert strategy_overlap("Why does it matter?", strategy) == 0.0
    assert strategy_overlap("Anything", "Go on, ask why") is None  # no content word


def test_strategy_restatement_per_dialogue_skips_turns_without_a_strategy():
    turns = [
        turn_record(1, "Can you give a concrete example?", A1, "s1", [draft("x")], {}),
        turn_record(2, "Why does the mechanism matter?", A2, "s2", [draft("y")], {}),
        turn_record(3, "Go on.", A3, None, [draft("z")], {}),
    ]
    turns[0]["strategy"]["text"] = "Ask for a concrete example of the mechanism"  # 2 of 3
    turns[1]["strategy"]["text"] = "Challenge an assumption in the answer"  # 0 of 3
    dialogue = dialogue_from_record(document(SEED, turns), "restated")
    assert m.strategy_restatement(dialogue) == pytest.approx(1 / 3)
    plain = dialogue_from_record(document(SEED, turns[2:]), "plain")
    assert m.strategy_restatement(plain) is None  # no strategy: n/a, not 0


LIST = "Options:\n- one\n* two\n3. three"
CODE = "```python\n" + "x = 1\n" * 11 + "```"


@pytest.mark.parametrize(
    ("text", "clauses"),
    [
        ("Sure! Here is how vaccines work.", ["opener"]),
        ("**Certainly.** Memory cells...", ["opener"]),
        ("Of course, the answer is 42.", ["opener"]),
        ("Great question! B cells form first.", ["opener"]),
        ("Here’s an example of a vaccine schedule.", ["opener"]),
        ("Here are some options to consider.", ["opener"]),
        ("Here is a revised version:", ["opener"]),
        ("As an AI, I cannot say.", ["opener"]),
        ("I'd be happy to explain that.", ["opener"]),
        ("Absolutely, that is right.", ["opener"]),
        ("I apologize for the confusion.", ["opener"]),
        ("Here is my code, why does it fail?", []),  # a user's own material
        ("Great! Can you do the next one?", []),  # 'great' alone is a user's thanks
        ("Yes, and what about boosters?", []),  # users answer the assistant's questions
        ("Surely that is not all?", []),  # whole words only
        ("Why is this slow?\n" + CODE, ["code"]),
        ("Why is this slow?\n```\n" + "x = 1\n" * 10 + "```", []),  # 10 lines: not over
        ("Fix this:\n" + "x = 1\n" * 30, []),  # pasted code without a fence
        (LIST, ["list"]),
        ("Options:\n- one\n- two", []),  # two items
        ("Compare (1) this and (2) that. 3. Also this", []),  # items must start a line
        ("word " * 121, ["long"]),
        ("word " * 120, []),
        ("Sure. " + LIST + "\n" + CODE + " word" * 120, ["opener", "code", "list", "long"]),
    ],
)
def test_assistant_like_clause_by_clause(text, clauses):
    assert assistant_like(text) == clauses


def test_assistant_like_rate_per_dialogue_and_for_real_users():
    dialogue = dialogue_from_record(sharegpt("hi", "hello", "Sure! Here it is.", "ok", "why?", "x"))
    assert m.assistant_like_rate(dialogue) == 0.5
    history = (Turn("user", "hi"), Turn("assistant", "hello"))
    reference = reference_dialogues(
        [Pair("real.json", f"r{i}", 1, history, t) for i, t in enumerate(["Why?", "Certainly."])]
    )
    result = evaluate({"ideas": [dialogue]}, embedder=HashingEmbedding(), reference=reference)
    assert result.variants["ideas"].metrics["assistant_like_rate"].mean == 0.5
    assert result.reference.metrics["assistant_like_rate"].mean == 0.5  # 1 of 2 real users
    assert result.reference.metrics["strategy_adherence"].mean is None
    assert result.reference.metrics["strategy_restatement"].mean is None


@pytest.mark.parametrize("path", REAL_FOLLOWUPS, ids=lambda p: p.parent.name)
def test_real_follow_ups_are_rarely_assistant_like(path):
    if not path.is_file():
        pytest.skip(f"the shared data file {path} is missing (it is not part of the repo)")
    followups = [pair.followup for pair in load(path).pairs]
    rate = sum(bool(assistant_like(t)) for t in followups) / len(followups)
    # measured: oasst1-en100 6 of 380 (1.6%), realhumaneval-chat 4 of 443 (0.9%)
    assert len(followups) > 300 and 0 < rate < 0.05


@pytest.mark.parametrize(
    ("text", "looping"),
    [
        ("What happened then? that occurred that occurred that occurred", True),
        ("Write an intro.\n<|endconversation|>\n<|endconversation|>", True),
        ("<|endcopyboard|>", True),
        ("2L 2L 3L 3L \n2L & 3L \n2L & 2L & 2L & 2L", True),
        ("a b c d e f g h " * 3, True),  # a run of 8 words
        ("a b c d e f g h i " * 3, False),  # 9: longer than LOOP_LONGEST
        ("that occurred that occurred, and then?", False),  # twice is no loop
        ("Plot y = 0 0 0 and - - - lines", False),  # one-word runs need a letter
        ("Why is a < b but b > c?", False),
    ],
)
def test_a_user_turn_loops(text, looping):
    assert loops(text) is looping


def test_looping_rate_per_dialogue_and_for_real_users():
    dialogue = dialogue_from_record(sharegpt("hi", "hello", "no no no", "ok", "why?", "x"))
    assert m.looping_rate(dialogue) == 0.5
    history = (Turn("user", "hi"), Turn("assistant", "hello"))
    turns = ["Why?", "Why?", "Why?", "<|im_start|>"]
    reference = reference_dialogues(
        [Pair("real.json", f"r{i}", 1, history, t) for i, t in enumerate(turns)]
    )
    result = evaluate({"ideas": [dialogue]}, embedder=HashingEmbedding(), reference=reference)
    assert result.variants["ideas"].metrics["looping_rate"].mean == 0.5
    assert result.reference.metrics["looping_rate"].mean == 0.25


@pytest.mark.parametrize("path", REAL_FOLLOWUPS, ids=lambda p: p.parent.name)
def test_real_follow_ups_almost_never_loop(path):
    if not path.is_file():
        pytest.skip(f"the shared data file {path} is missing (it is not part of the repo)")
    followups = [pair.followup for pair in load(path).pairs]
    # measured: oasst1-en100 0 of 380, realhumaneval-chat 1 of 443 (a query pasted three times)
    assert len(followups) > 300 and sum(map(loops, followups)) <= 1


# ---------------------------------------------------------------- depth, coherence, repetition


def test_critic_scores_average_accepted_drafts_only(vaccine):
    # accepted drafts: depth 4, 2 and none (novelty only); the rejected draft's 1 is ignored
    assert m.critic_score(vaccine, "depth") == 3.0
    assert m.critic_score(vaccine, "insight") == 4.0  # 3 and 5


def test_reference_rate_of_the_vaccine_dialogue(vaccine):
    assert m.reference_rate(vaccine) == pytest.approx(2 / 3)  # Q1 and Q2 refer back, Q3 not


def test_realism_rates_of_the_vaccine_dialogue(vaccine):
    assert m.length_words(vaccine) == pytest.approx(19 / 3)
    assert m.question_rate(vaccine) == pytest.approx(2 / 3)  # Q3 has no '?' and starts 'tell'
    assert m.anaphora_rate(vaccine) == pytest.approx(1 / 3)  # only Q2 ('that')


def test_repetition_uses_levenshtein_to_earlier_user_messages():
    dialogue = dialogue_from_record(sharegpt("aaaa", "x", "aaab", "y", "bbbb", "z"))
    # aaab vs aaaa: 1 edit in 4 -> 0.75; bbbb vs aaaa -> 0, vs aaab -> 1 - 3/4 = 0.25
    assert m.repetition(dialogue) == [0.75, 0.25]
    assert m.repetition_mean(dialogue) == pytest.approx(0.5)
    assert m.repetition_max(dialogue) == 0.75


def test_answer_similarity_and_pairwise_distance_inside_evaluate():
    vectors = {"q one": E1, "q two": E2, "q three": DIAGONAL, "a zero": E1, "a one": DIAGONAL}
    first = dialogue_from_record(sharegpt("start", "a zero", "q one", "a one", "q two", "z"))
    second = dialogue_from_record(sharegpt("start", "a zero", "q three", "z"))
    result = evaluate({"ideas": [first, second]}, embedder=FixedEmbedder(vectors), resamples=50)
    got = result.variants["ideas"].metrics
    # first: q one . a zero = 1, q two . a one = 1/sqrt2 -> 0.853553; second: 1/sqrt2
    assert got["answer_similarity"].mean == pytest.approx((0.853553 + R2) / 2, abs=1e-6)
    assert result.variants["ideas"].per_turn["answer_similarity"] == pytest.approx(
        [(1 + R2) / 2, R2]
    )
    # within: only the first has 2 instructions, e1 vs e2 -> distance 1
    assert (got["embedding_distance_within"].mean, got["embedding_distance_within"].n) == (1.0, 1)
    # across the dataset: e1, e2, d as in test_mean_pairwise_distance_with_fixed_vectors
    assert got["embedding_distance"].mean == pytest.approx(0.528595, abs=1e-6)


# ---------------------------------------------------------------- realism distances


def test_wasserstein_1d_on_toy_samples():
    assert wasserstein_1d([1, 2, 3], [2, 3, 4])[0] == pytest.approx(1.0)  # a shift by 1
    assert wasserstein_1d([0, 10], [5])[0] == pytest.approx(5.0)
    # vs [0]: CDFs differ by 0.5 on [0, 10) -> 5; weights 3:1 -> 0.25 on [0, 10) -> 2.5
    assert wasserstein_1d([0, 10], [0], np.array([[1, 1], [3, 1]])) == pytest.approx([5.0, 2.5])
    assert np.isnan(wasserstein_1d([], [1])[0])


def test_mmd_on_toy_embeddings():
    # k(e1, e2) = exp(-|e1 - e2|^2 / 2) = exp(-1); MMD^2 = 1 + 1 - 2 exp(-1) = 1.264241
    mmd = MMD(E1[None, :], E2[None, :], bandwidth=1.0)
    assert mmd()[0] == pytest.approx(math.sqrt(2 - 2 * math.exp(-1)))
    same = np.stack([E1, E2])
    assert MMD(same, same, bandwidth=1.0)()[0] == pytest.approx(0.0, abs=1e-7)
    # weights (2, 0) make the generated sample {e1, e1} vs {e1, e2}: 1 + (1 + e^-1)/2 - 2(1+e^-1)/2
    weighted = MMD(same, same, bandwidth=1.0)(np.array([[2.0, 0.0]]))[0]
    assert weighted == pytest.approx(math.sqrt((1 - math.exp(-1)) / 2))


def test_median_bandwidth():
    # distances among e1, e2, 0: sqrt2, 1, 1 -> median 1
    assert median_bandwidth(np.stack([E1, E2, np.zeros(3)])) == 1.0
    assert median_bandwidth(E1[None, :]) == 1.0


def test_realism_distances_against_a_reference():
    reference = reference_dialogues(
        [
            Pair("real.json", "r1", 1, (Turn("user", "hi"), Turn("assistant", "hello")), "a b c"),
            Pair("real.json", "r2", 1, (Turn("user", "hi"), Turn("assistant", "hello")), "a b"),
        ]
    )
    generated = dialogue_from_record(sharegpt("hi", "hello", "a b c d", "x", "a", "y"))
    result = evaluate({"ideas": [generated]}, embedder=HashingEmbedding(), reference=reference)
    got = result.variants["ideas"].metrics
    # lengths {4, 1} vs {3, 2}: |F - G| = 0.5 on [1, 2), 0 on [2, 3), 0.5 on [3, 4) -> 1.0
    assert got["length_w1"].mean == pytest.approx(1.0)
    assert got["embedding_mmd"].mean > 0
    assert result.reference.metrics["length_words"].mean == 2.5
    assert result.reference.metrics["length_w1"].mean is None  # no distance to itself


# ---------------------------------------------------------------- cost


def test_cost_counts_turns_and_the_unfinished_turn_but_not_the_opening(vaccine):
    # calls 6 + 2 + 1 + 4 (unfinished); tokens 1000 + 400 + 100 + 300 in, 115 + 50 + 10 + 30 out
    # seconds 4 + 2 + 1 + 2; drafts 2 + 1 + 1 + 2 with 1 + 2 rejected
    assert vaccine.cost == Cost(13, 1800, 1800, 205, 9.0, 6, 3, 3)
    result = evaluate({"ideas": [vaccine]}, embedder=HashingEmbedding(), resamples=50)
    got = {k: v.mean for k, v in result.variants["ideas"].metrics.items()}
    assert got["calls_per_turn"] == pytest.approx(13 / 3)
    assert got["input_tokens_per_turn"] == 600
    assert got["output_tokens_per_turn"] == pytest.approx(205 / 3)
    assert got["seconds_per_turn"] == 3.0
    assert got["rejection_rate"] == 0.5
    assert result.variants["ideas"].statuses == {"ended_early": 1}


def test_foreign_dialogues_report_na_not_zero():
    foreign = [dialogue_from_record(sharegpt("hi", "hello", "why?", "because", "how?", "so"))]
    result = evaluate({"other": foreign}, embedder=HashingEmbedding(), resamples=50)
    got = result.variants["other"].metrics
    for name in [
        "strategy_entropy",
        "strategy_entropy_norm",
        "strategy_entropy_within",
        "top_candidate_rate",
        "strategy_adherence",
        "strategy_adherence_chance",
        "strategy_restatement",
        "critic_depth",
        "critic_insight",
        "judge_depth",
        "calls_per_turn",
        "rejection_rate",
        "length_w1",
    ]:
        assert got[name].mean is None and got[name].n == 0, name
    assert got["question_rate"].mean == 1.0
    assert result.variants["other"].strategies == []


# ---------------------------------------------------------------- dataset-level statistics


def test_distinct_statistic_under_weights():
    dialogues = [
        dialogue_from_record(sharegpt("x", "y", "a b a")),
        dialogue_from_record(sharegpt("x", "y", "b c")),
    ]
    stat = distinct_statistic(dialogues, 1)
    # all: 3 unique of 5; first only: 2 of 3; first twice: 2 of 6 (copies add no new words)
    weights = np.array([[1, 1], [1, 0], [2, 0]], dtype=float)
    assert stat.compute(weights) == pytest.approx([0.6, 2 / 3, 1 / 3])


def test_pairwise_statistic_under_weights():
    stat = pairwise_statistic(np.stack([E1, E2, DIAGONAL]), [0, 1, 1], units=2)
    # all: 0.528595; dialogue 1 only: e2 vs d -> 0.292893; dialogue 0 twice: e1 vs itself -> 0
    weights = np.array([[1, 1], [0, 1], [2, 0]], dtype=float)
    assert stat.compute(weights) == pytest.approx([0.528595, 1 - R2, 0.0], abs=1e-6)


def test_entropy_statistic_over_all_turns():
    def with_strategies(*ids):
        plain = dialogue_from_record(sharegpt("x", "y", "q1", "a", "q2", "b"))
        turns = [
            dataclasses.replace(t, strategy_id=s) for t, s in zip(plain.turns, ids, strict=True)
        ]
        return dataclasses.replace(plain, turns=tuple(turns))

    dialogues = [with_strategies("a", "b"), with_strategies("a", "c")]
    # a 2, b 1, c 1 -> 1.5 bits; normalised by log2(3 used) or log2(min(10, 4 turns)) = 2
    assert entropy_statistic(dialogues).estimate() == pytest.approx(1.5)
    assert entropy_statistic(dialogues, normalised=True).estimate() == pytest.approx(
        1.5 / math.log2(3)
    )
    assert entropy_statistic(dialogues, 10, normalised=True).estimate() == pytest.approx(0.75)


# ---------------------------------------------------------------- bootstrap


def test_constant_values_give_a_zero_width_interval():
    ci = mean_ci([0.4] * 10)
    assert ci.mean == pytest.approx(0.4)
    assert ci.hi - ci.lo == pytest.approx(0.0, abs=1e-12)
    assert ci.n == 10


def test_interval_contains_the_mean_and_is_deterministic():
    values = [1.0, 3.0, 2.0, 5.0, 4.0, None, 2.5]
    ci = mean_ci(values)
    assert ci.n == 6 and ci.mean == pytest.approx(17.5 / 6)
    assert ci.lo < ci.mean < ci.hi
    assert mean_ci(values) == ci  # same seed, same interval
    assert mean_ci(values, seed=1) != ci


def test_empty_or_all_na_values_are_na():
    assert mean_ci([]).mean is None
    ci = mean_ci([None, None])
    assert (ci.mean, ci.lo, ci.hi, ci.n) == (None, None, None, 0)


def test_shifted_sample_is_significant_and_the_same_sample_is_not():
    base = [1.0, 2.0, 3.0, 4.0, 5.0, 2.0, 3.0, 4.0]
    shifted = [v + 3 for v in base]
    diff = mean_difference_ci(shifted, base)
    assert diff.diff == pytest.approx(3.0) and diff.lo > 0 and diff.significant
    assert not diff.paired
    same = mean_difference_ci(base, base)
    assert same.diff == 0 and same.lo < 0 < same.hi and not same.significant


def test_paired_difference_of_a_constant_shift_has_zero_width():
    base = [1.0, 7.0, 2.0, 9.0, 4.0]
    diff = mean_difference_ci([v + 1 for v in base], base, paired=True)
    assert diff.paired and diff.significant
    assert (diff.lo, diff.hi) == pytest.approx((1.0, 1.0))
    unpaired = mean_difference_ci([v + 1 for v in base], base)
    assert unpaired.hi - unpaired.lo > 1  # the spread between seeds does not cancel


def test_jackknife_interval_of_a_mean_is_the_classical_one():
    stat = dataclasses.replace(mean_statistic([1.0, 2.0, 3.0, 4.0]), method="jackknife")
    # SE = sd / sqrt(n) = 1.290994 / 2 = 0.645497; 2.5 -+ 1.959964 * SE = 2.5 -+ 1.265151
    ci = interval(stat)
    assert (ci.lo, ci.hi) == pytest.approx((1.234849, 3.765151), abs=1e-6)


def test_ratio_statistic_is_a_ratio_of_sums():
    stat = ratio_statistic([9, 1], [3, 1])  # (9 + 1) / (3 + 1) = 2.5, not mean(3, 1) = 2
    assert stat.estimate() == 2.5
    assert ratio_statistic([3, 0], [1, 0]).count == 1  # the second has no denominator
    assert ratio_statistic([1], [0]).estimate() is None


def test_difference_of_undefined_statistics_is_na():
    empty = Statistic(lambda w: np.full(len(w), np.nan), 3, 0)
    assert difference(empty, mean_statistic([1.0, 2.0])).diff is None


# ---------------------------------------------------------------- pairing and evaluate


def test_pairing_needs_the_same_unique_keys():
    def keyed(*keys):
        plain = dialogue_from_record(sharegpt("x", "y", "q"))
        return [dataclasses.replace(plain, key=k) for k in keys]

    assert pairing_of(keyed("b", "a"), keyed("a", "b")) == ([1, 0], [0, 1])
    assert pairing_of(keyed("a", "b"), keyed("a", "c")) is None
    assert pairing_of(keyed("a", "a"), keyed("a", "a")) is None
    assert pairing_of(keyed("a", None), keyed("a", None)) is None


def test_shared_seeds_keeps_dialogues_every_variant_has():
    plain = dialogue_from_record(sharegpt("x", "y", "q"))
    a = [dataclasses.replace(plain, key=k) for k in ["1", "2", "3", None]]
    b = [dataclasses.replace(plain, key=k) for k in ["3", "1", "1"]]
    kept = shared_seeds({"a": a, "b": b})
    assert [d.key for d in kept["a"]] == ["1", "3"] and [d.key for d in kept["b"]] == ["3", "1"]
    assert pairing_of(kept["a"], kept["b"]) == ([0, 1], [1, 0])


def test_evaluate_marks_differences_to_the_baseline_and_round_trips():
    def variant(depth):
        docs = []
        for job in range(6):
            text = f"Question {job} on memory?"
            turn = turn_record(
                1, text, "An answer.", f"s{job % 3}", [draft(text, True, depth, 3)], {}
            )
            docs.append(dialogue_from_record(document(SEED, [turn], job=str(job))))
        return docs

    result = evaluate(
        {"shallow": variant(2), "ideas": variant(4)}, embedder=HashingEmbedding(), resamples=200
    )
    assert result.baseline == "ideas" and list(result.variants) == ["shallow", "ideas"]
    depth = result.variants["shallow"].differences["critic_depth"]
    assert depth.paired and depth.diff == -2.0 and depth.significant
    insight = result.variants["shallow"].differences["critic_insight"]
    assert insight.diff == 0 and not insight.significant
    assert result.variants["ideas"].differences == {}
    assert result.variants["ideas"].strategies[0] == {"id": "s0", "text": "strategy s0", "count": 2}
    data = json.loads(json.dumps(result.to_dict()))
    assert EvaluationResult.from_dict(data).to_dict() == data
    assert data["variants"]["shallow"]["differences"]["critic_depth"]["significant"] is True


def test_evaluate_without_the_baseline_compares_nothing():
    dialogues = [dialogue_from_record(sharegpt("x", "y", "q?"))]
    result = evaluate({"a": dialogues, "b": dialogues}, embedder=HashingEmbedding())
    assert result.baseline is None
    assert all(v.differences == {} for v in result.variants.values())


# ---------------------------------------------------------------- inputs


def test_ideas_document_turns_are_the_last_messages(vaccine):
    assert vaccine.source == "ideas" and vaccine.key == "seed-1"
    assert vaccine.instructions == [Q1, Q2, Q3]
    first = vaccine.turns[0]
    assert (first.position, first.previous_answer, first.answer) == (3, A0, A1)
    assert (first.strategy_id, first.strategy_text, first.selection) == ("s1", "strategy s1", "llm")
    assert (first.depth, first.insight) == (4, 3) and len(first.drafts) == 2
    assert vaccine.history(first)[0] == Message(role="system", content="Be brief.")
    assert vaccine.library_size == 20 and vaccine.status == "ended_early"
    third = vaccine.turns[2]
    assert third.depth is None and third.verdict.reason == "accepted"


def test_a_document_whose_turns_do_not_match_is_refused(tmp_path):
    broken = vaccine_document()
    broken["messages"] = broken["messages"][:3]
    path = tmp_path / "broken.json"
    path.write_text(json.dumps(broken))
    with pytest.raises(EvalInputError, match="broken.json: record 1: turn 1 does not match"):
        load_dialogues(path)


def test_foreign_dialogues_count_user_turns_after_the_first():
    share = dialogue_from_record(
        sharegpt("Hi", "Hello", "Why?", "Because", "How?", record_id="conv-7")
    )
    assert share.source == "sharegpt" and share.key == "conv-7"
    assert share.instructions == ["Why?", "How?"]
    assert share.turns[1].answer is None and share.cost is None
    openai = dialogue_from_record(
        {
            "messages": [
                {"role": "system", "content": "sys"},
                {"role": "user", "content": [{"type": "text", "text": "Q"}]},
                {"role": "assistant", "content": "A"},
                {"role": "user", "content": "Q2"},
            ]
        }
    )
    assert openai.source == "openai" and openai.instructions == ["Q2"]
    assert openai.turns[0].previous_answer == "A" and openai.messages[1].content == "Q"


def test_load_dialogues_reads_every_shape(tmp_path):
    ideas, share = vaccine_document(), sharegpt("a", "b", "c?")
    openai = {"messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}]}
    (tmp_path / "one.json").write_text(json.dumps(ideas))
    (tmp_path / "list.json").write_text(json.dumps([share, openai]))
    (tmp_path / "bare.json").write_text(json.dumps(openai["messages"]))
    lines = "\n".join(json.dumps(r) for r in [ideas, share, openai]) + "\n"
    (tmp_path / "many.jsonl").write_text(lines)
    (tmp_path / "many.jsonl.gz").write_bytes(gzip.compress(lines.encode()))
    batch = tmp_path / "runs" / "ablate"
    batch.mkdir(parents=True)
    (batch / "dialogues.jsonl").write_text(lines + '{"format": "ideas-dia')  # partial tail
    assert [d.source for d in load_dialogues(tmp_path / "one.json")] == ["ideas"]
    assert [d.source for d in load_dialogues(tmp_path / "list.json")] == ["sharegpt", "openai"]
    assert [d.source for d in load_dialogues(tmp_path / "bare.json")] == ["openai"]
    for path in [tmp_path / "many.jsonl", tmp_path / "many.jsonl.gz", batch]:
        loaded = load_dialogues(path)
        assert [d.source for d in loaded] == ["ideas", "sharegpt", "openai"], path
    assert loaded[1].id == "dialogues.jsonl#2"


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ('{"text": "no dialogue"}', "record 1: neither an ideas-dialogue/1"),
        ('{"messages": [{"role": "robot", "content": "x"}]}', "unknown role 'robot'"),
        ('{"a": 1}\nnot json\n{"b": 2}\n', "line 2: invalid JSON"),
        ("[]", "no dialogues"),
    ],
)
def test_load_dialogues_refuses_bad_input(tmp_path, content, message):
    path = tmp_path / "bad.json"
    path.write_text(content)
    with pytest.raises(EvalInputError, match=message):
        load_dialogues(path)
    with pytest.raises(EvalInputError, match="no such file"):
        load_dialogues(tmp_path / "missing.json")


def test_reference_dialogues_from_real_pairs():
    history = (
        Turn("user", "Q0"),
        Turn("assistant", "A0"),
        Turn("user", "Q1"),
        Turn("assistant", "A1"),
    )
    (dialogue,) = reference_dialogues([Pair("real.jsonl", "m7", 2, history, "Q2 about it?")])
    assert dialogue.source == "reference" and dialogue.id == "real.jsonl:m7:2"
    assert dialogue.instructions == ["Q2 about it?"]
    assert dialogue.turns[0].previous_answer == "A1" and dialogue.turns[0].position == 4
    # vs 'Q0' or 'Q1': keep 'Q', substitute one, insert 10 -> 1 - 11/12
    assert m.repetition(dialogue) == pytest.approx([1 / 12])


# ---------------------------------------------------------------- judge


def test_judge_scores_each_instruction_given_its_history(vaccine):
    chat = scripted(
        tool_reply("JudgeScores", depth=7, insight=6, coherence=9, reason="Builds on memory."),
        tool_reply("JudgeScores", depth=3, insight=4, coherence=8, reason="Generic."),
        tool_reply("JudgeScores", depth=5, insight=5, coherence=2, reason="Off topic."),
    )
    judge = Judge(chat, concurrency=1, history_messages=2, message_chars=30)
    (judged,) = asyncio.run(judge.judge_dialogues([vaccine]))
    assert [t.judge.depth for t in judged.turns] == [7, 3, 5]
    assert judged.turns[0].judge.model_dump() == {
        "depth": 7,
        "insight": 6,
        "coherence": 9,
        "reason": "Builds on memory.",
    }
    assert m.judge_score(judged, "coherence") == pytest.approx(19 / 3)
    assert vaccine.turns[0].judge is None  # the input is left as it was
    first = chat.model.prompts[0][0].text
    assert "rate the quality of the USER's new message" in first
    assert "[assistant]\nVaccines show the immune syste [...]" in first  # cut to 30 characters
    assert '"""\nWhich memory cells form first?\n"""' in first
    assert "Be brief." not in first  # system message not shown
    third = chat.model.prompts[2][0].text
    # 6 messages before Q3 (system left out), the last 2 shown
    assert "(4 earlier messages omitted)" in third
    assert "[user]\nCan you give an example of tha [...]" in third
    assert judge.usage.calls == 3 and judge.usage.input_tokens == 150
    assert chat.model.unused == 0


def test_judge_gives_none_after_invalid_ratings(vaccine):
    bad = tool_reply("JudgeScores", depth=11, insight=6, coherence=9, reason="x")
    chat = scripted(bad, bad, bad)
    judge = Judge(chat)
    dialogue = dataclasses.replace(vaccine, turns=vaccine.turns[:1])
    (judged,) = asyncio.run(judge.judge_dialogues([dialogue]))
    assert judged.turns[0].judge is None
    assert m.judge_score(judged, "depth") is None
    assert len(judge.failures) == 1 and judge.usage.calls == 3


# ---------------------------------------------------------------- domain fit


def test_strategy_misfit_flags_programming_strategies_in_dialogues_without_code():
    turns = [
        turn_record(1, "Which memory cells form first?", A1, "s1", [draft("x")], {}),
        turn_record(
            2, "Can you give an example?", "```python\nprint(1)\n```", "s2", [draft("y")], {}
        ),
        turn_record(3, "Why does it fail?", A3, "s3", [draft("z")], {}),
        turn_record(4, "Go on.", A3, None, [draft("w")], {}),
    ]
    turns[0]["strategy"]["text"] = "Paste the failing test and ask for a fix"  # no code yet: misfit
    turns[1]["strategy"]["text"] = "Ask for a concrete example"  # not programming: fits
    turns[2]["strategy"]["text"] = "Ask why the function raises an error"  # code before: fits
    dialogue = dialogue_from_record(document(SEED, turns), "fit")
    assert m.strategy_misfit(dialogue) == pytest.approx(1 / 3)
    plain = dialogue_from_record(document(SEED, turns[3:]), "plain")
    assert m.strategy_misfit(plain) is None  # no strategy: n/a, not 0
    result = evaluate({"ideas": [dialogue]}, embedder=HashingEmbedding(), resamples=50)
    assert result.variants["ideas"].metrics["strategy_misfit"].mean == pytest.approx(1 / 3)


def test_fit_rule_reads_code_and_programming_words():
    from dialogues.domain import holds_code, is_programming_strategy

    assert holds_code("Try this:\n```\nx = 1\n```")
    assert holds_code("def f(x):\n    return x")
    assert holds_code("int x = 3;")
    assert not holds_code("Vaccines train the immune system; memory cells remain.")
    assert is_programming_strategy("Paste the next method and ask for the same review")
    assert is_programming_strategy("Report the errors you got")
    assert not is_programming_strategy("Ask about the classic example")  # 'class' as a word only
    assert not is_programming_strategy("Ask for a concrete example")
