"""Answer-context retrieval: strategies ranked by the real answers that preceded them."""

from __future__ import annotations

import numpy as np
import pytest

from stores.base import StrategyRecord
from stores.chroma import ChromaStrategyStore, connect
from stores.contexts import AnswerContext, ContextRetriever, InMemoryContextIndex
from stores.memory import HashingEmbedding, InMemoryStrategyStore

EMB = HashingEmbedding()
RECORDS = [
    StrategyRecord(id="example", text="Ask for a concrete example"),
    StrategyRecord(id="doubt", text="Challenge a claim and ask for evidence"),
    StrategyRecord(id="steps", text="Ask for step by step instructions"),
]
CONTEXTS = [
    ("c1", "example", "photosynthesis converts light into chemical energy in plants"),
    ("c2", "doubt", "the stock market always goes up over any ten year period"),
    ("c3", "steps", "to install the package run the installer and configure the path"),
]


def contexts():
    return [AnswerContext(i, s, EMB.embed([t])[0]) for i, s, t in CONTEXTS]


def memory_setup():
    store = InMemoryStrategyStore("t", EMB)
    store.add(RECORDS)
    index = InMemoryContextIndex()
    index.add(contexts())
    return store, index


def chroma_setup(tmp_path):
    store = ChromaStrategyStore(connect(tmp_path), "t", EMB, str(tmp_path))
    store.add(RECORDS)
    index = store.contexts()
    index.add(contexts())
    return store, index


@pytest.fixture(params=["memory", "chroma"])
def setup(request, tmp_path):
    return memory_setup() if request.param == "memory" else chroma_setup(tmp_path)


def test_context_ranks_the_strategy_real_users_applied_after_similar_answers(setup):
    store, index = setup
    retriever = ContextRetriever(store, index, EMB)
    found = retriever.search("the stock market goes up over a ten year period", 3)
    assert found[0].id == "doubt"
    assert [c.rank for c in found] == [0, 1, 2]
    assert len({c.id for c in found}) == 3


def test_excluded_strategies_are_skipped_and_text_similarity_fills_up(setup):
    store, index = setup
    retriever = ContextRetriever(store, index, EMB)
    found = retriever.search(
        "the stock market goes up over a ten year period", 3, exclude={"doubt"}
    )
    assert "doubt" not in {c.id for c in found}
    assert len(found) == 2


def test_clearing_a_chroma_library_drops_records_and_contexts(tmp_path):
    store, index = chroma_setup(tmp_path)
    assert index.count() == 3
    store.clear()
    assert store.count() == 0 and store.contexts().count() == 0


def test_in_memory_nearest_orders_by_cosine():
    index = InMemoryContextIndex()
    index.add(
        [
            AnswerContext("a", "s1", np.array([1.0, 0.0])),
            AnswerContext("b", "s2", np.array([0.6, 0.8])),
        ]
    )
    assert [s for s, _ in index.nearest(np.array([0.0, 1.0]), 2)] == ["s2", "s1"]
