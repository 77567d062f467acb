"""The one definition of strategy entropy, and the data card and the report agreeing on it."""

from __future__ import annotations

import math

import numpy as np
import pytest

from batch.card import strategy_distribution
from dialogues.models import LibraryInfo
from dialogues.strategy_use import (
    entropy_bits,
    library_size,
    normalised_entropy,
    normalised_entropy_rows,
)
from evaluation.dataset import entropy_statistic
from evaluation.inputs import from_document
from tests.batch_docs import make_doc


@pytest.mark.parametrize("k", [2, 3, 5, 8])
def test_uniform_over_k_strategies_is_one(k):
    assert entropy_bits([4] * k) == pytest.approx(math.log2(k))
    assert normalised_entropy([4] * k) == pytest.approx(1.0)
    assert normalised_entropy([4] * k, available=k) == pytest.approx(1.0)


def test_one_strategy_is_zero_where_defined():
    assert entropy_bits([5]) == 0.0
    assert normalised_entropy([5], available=10) == 0.0  # max log2(min(10, 5 draws)) > 0
    assert normalised_entropy([5, 0, 0], available=3) == 0.0
    assert normalised_entropy([5]) is None  # 0 / log2(1 used): undefined, n/a
    assert normalised_entropy([1], available=10) is None  # one draw: nothing to spread
    assert entropy_bits([]) is None and entropy_bits([0, 0]) is None


def test_the_library_size_bounds_the_maximum():
    assert normalised_entropy([3, 3], available=4) == pytest.approx(0.5)  # 1 bit of log2(4)
    assert normalised_entropy([1, 1], available=100) == pytest.approx(1.0)  # log2(min(100, 2))


def test_rows_match_the_scalar_definition():
    rows = np.array([[2, 1, 1], [3, 0, 0], [0, 0, 0], [1.5, 0.5, 0]])
    for available in (None, 2, 10):
        expected = [normalised_entropy(r, available) for r in rows]
        got = normalised_entropy_rows(rows, available)
        assert [None if np.isnan(g) else pytest.approx(g) for g in got] == expected


def test_library_size_reads_the_high_level_count():
    assert library_size({"counts": {"high": 20, "low": 400}, "count": 420}) == 20
    assert library_size({"count": 12}) == 12
    assert library_size({"name": "default"}) is None


@pytest.mark.parametrize("library", [None, {"name": "default", "count": 10}])
def test_card_and_report_agree_on_the_same_dialogues(library):
    docs = [
        make_doc("0.0", ["a", "b", "c"], strategies=["s1", "s1", "s2"]),
        make_doc("1.0", ["a", "b", "c"], strategies=["s3", "s1", "s2"]),
    ]
    for doc in docs:
        doc.library = LibraryInfo.model_validate(library or {})
    available = library_size(library or {})
    card = strategy_distribution(docs, available=available)["entropy"]
    report = entropy_statistic([from_document(d) for d in docs], available, normalised=True)
    assert card == round(report.estimate(), 4)
    counts = [3, 2, 1]  # s1, s2, s3
    assert card == round(normalised_entropy(counts, available), 4)
    expected = entropy_bits(counts) / math.log2(6 if library else 3)  # min(10, 6 turns)
    assert card == pytest.approx(expected, abs=1e-4)
