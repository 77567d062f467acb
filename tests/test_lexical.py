"""Lexical diversity (MATTR, Yule's K, HD-D) against hand-computed values, and the realism rows."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.stats import wasserstein_distance

from evaluation.dataset import dialogue_length_statistic, zscore_statistic
from evaluation.evaluate import evaluate
from evaluation.inputs import dialogue_from_record, reference_dialogues
from evaluation.lexical import hdd, mattr, yules_k
from induction.records import Pair, Turn
from stores.memory import HashingEmbedding


def test_mattr_by_hand():
    # windows of 2 over a a b a: {a,a} 1/2, {a,b} 1, {b,a} 1 -> mean 5/6
    assert mattr(list("aaba"), window=2) == pytest.approx(5 / 6)
    assert mattr(list("abcd"), window=4) == 1.0
    assert mattr(list("aaaa"), window=2) == 0.5
    assert mattr(list("abc"), window=4) is None  # shorter than the window
    with pytest.raises(ValueError):
        mattr(list("abc"), window=0)


def test_mattr_sliding_counts_match_the_plain_definition():
    tokens = "the cat sat on the mat and the cat ran to the mat again".split()
    for window in (1, 3, 5, 14):
        plain = [len(set(tokens[i : i + window])) / window for i in range(len(tokens) - window + 1)]
        assert mattr(tokens, window) == pytest.approx(sum(plain) / len(plain))


def test_yules_k_by_hand():
    # a b a c: V_1 = 2 (b, c), V_2 = 1 (a); sum i^2 V_i = 6; K = 1e4 (6/16 - 1/4) = 1250
    assert yules_k(list("abac")) == pytest.approx(1250)
    assert yules_k(list("abcd")) == 0.0  # no repetition
    assert yules_k(list("aaaa")) == pytest.approx(1e4 * (16 / 16 - 1 / 4))
    assert yules_k([]) is None


def test_hdd_by_hand():
    # a a b, 2 draws: P(a in sample) = 1, P(b in sample) = 1 - C(2,2)/C(3,2) = 2/3; (1 + 2/3) / 2
    assert hdd(list("aab"), draws=2) == pytest.approx(5 / 6)
    assert hdd(list("abcdefghij"), draws=5) == pytest.approx(1.0)  # all distinct: always 1
    assert hdd(list("ab"), draws=3) is None


def test_zscore_is_the_mean_against_the_real_turns_spread():
    reference = [1.0, 2.0, 3.0, None]  # mean 2, sd 1
    stat = zscore_statistic([4.0, None, 2.0], owners=[0, 0, 1], units=2, reference=reference)
    assert stat.compute(np.ones((1, 2)))[0] == pytest.approx(1.0)  # (mean(4, 2) - 2) / 1
    assert stat.compute(np.array([[1.0, 0.0]]))[0] == pytest.approx(2.0)
    flat = zscore_statistic([1.0], owners=[0], units=1, reference=[5.0, 5.0])
    assert math.isnan(flat.compute(np.ones((1, 1)))[0])  # no spread: no z-score


def test_dialogue_length_distance_is_scipys_wasserstein():
    generated, real = [6, 6, 6, 2], [2, 1, 3, 7, 2]
    stat = dialogue_length_statistic(generated, real)
    assert stat.compute(np.ones((1, 4)))[0] == pytest.approx(wasserstein_distance(generated, real))


def sharegpt(*texts):
    roles = ["human", "gpt"]
    return {"conversations": [{"from": roles[i % 2], "value": t} for i, t in enumerate(texts)]}


def test_the_report_has_the_realism_rows_per_variant():
    long = (
        "please explain in great detail every single step of the whole process to me now "
        "and then explain again every single step of the process with more detail"
    )
    dialogues = [
        dialogue_from_record(sharegpt("hi", "hello", long, "ok", long + " again", "fine")),
        dialogue_from_record(sharegpt("hi", "hello", long, "ok")),
    ]
    history = (Turn("user", "hi"), Turn("assistant", "hello"))
    followups = [
        "why is that so and what would happen if it were not so in the end",
        "and then what happens next to it when the cells meet it again",
        "thanks that works for me and my class of twelve year old students",
    ]
    reference = reference_dialogues(
        [Pair("real.json", f"r{i}", 1, history, t) for i, t in enumerate(followups)]
    )
    result = evaluate(
        {"ideas": dialogues},
        embedder=HashingEmbedding(),
        reference=reference,
        reference_lengths=[2, 2, 1],
        resamples=50,
    )
    metrics = result.variants["ideas"].metrics
    assert metrics["turn_length_z"].mean > 3  # 27-28 words against 13-16
    assert metrics["dialogue_length_w1"].mean == pytest.approx(
        wasserstein_distance([3, 2], [2, 2, 1])
    )
    for name in ("mattr_z", "yules_k_z", "hdd_z"):
        assert metrics[name].mean is not None and math.isfinite(metrics[name].mean)
    without = evaluate({"ideas": dialogues}, embedder=HashingEmbedding(), resamples=50)
    assert without.variants["ideas"].metrics["turn_length_z"].mean is None
