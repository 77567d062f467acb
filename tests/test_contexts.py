"""Answer-context retrieval: strategies ranked by the real answers that preceded them."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from stores.base import StrategyRecord
from stores.chroma import ChromaStrategyStore, connect
from stores.contexts import (
    AnswerContext,
    ContextRetriever,
    InMemoryContextIndex,
    has_code_block,
)
from stores.memory import HashingEmbedding, InMemoryStrategyStore
from stores.packaged import export_library, load_packaged

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


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Here:\n```python\nprint(1)\n```\n", True),
        ("  ~~~\nls -l\n~~~", True),
        ("```\nno language\n```", True),
        ("Use the `print` function inline.", False),
        ("The fence ``` in the middle of a line is not a block.", False),
        ("def f():\n    return 1", False),  # unfenced code: not this flag's business
    ],
)
def test_has_code_block_means_a_fenced_block(text, expected):
    assert has_code_block(text) is expected


def flagged_contexts():
    return [
        AnswerContext("c1", "example", EMB.embed(["one"])[0], "d1", True),
        AnswerContext("c2", "doubt", EMB.embed(["two"])[0], "d1", False),
        AnswerContext("c3", "steps", EMB.embed(["three"])[0], "d2", None),
    ]


@pytest.mark.parametrize("kind", ["memory", "chroma"])
def test_the_code_flag_round_trips_through_the_context_index(kind, tmp_path):
    if kind == "memory":
        index = InMemoryContextIndex()
    else:
        index = ChromaStrategyStore(connect(tmp_path), "t", EMB, str(tmp_path)).contexts()
    index.add(flagged_contexts())
    rows = index.rows()
    assert rows.ids == ["c1", "c2", "c3"]
    assert rows.code == [True, False, None]
    assert rows.groups == ["d1", "d1", "d2"]


def test_a_chroma_context_rewritten_with_a_flag_keeps_it(tmp_path):
    _, index = chroma_setup(tmp_path)
    index.add(flagged_contexts())  # upsert by id
    assert index.count() == 3 and index.rows().code == [True, False, None]


def test_an_old_chroma_context_without_the_flag_reads_as_unknown(tmp_path):
    store, index = chroma_setup(tmp_path)  # `contexts()`: added with no flag
    assert index.rows().code == [None, None, None]


def packaged_round_trip(tmp_path, contexts_to_write):
    store = InMemoryStrategyStore("t", EMB)
    export_library(tmp_path / "lib", RECORDS, {"name": "t"}, contexts_to_write)
    load_packaged(store, tmp_path / "lib")
    return store.contexts().rows(), np.load(tmp_path / "lib" / "contexts.npz")


def test_the_code_flag_round_trips_through_a_packaged_library(tmp_path):
    flagged = [replace(c, code=c.code is not False) for c in flagged_contexts()]
    rows, data = packaged_round_trip(tmp_path, flagged)
    assert data["code"].dtype == bool and data["code"].tolist() == [True, False, True]
    assert rows.code == [True, False, True]


def test_a_packaged_library_without_flags_loads_them_as_unknown(tmp_path):
    rows, data = packaged_round_trip(tmp_path, contexts())  # as written before the flag
    assert "code" not in data.files
    assert rows.code == [None, None, None]
    # one unknown flag: the array is left out rather than guessed
    rows, data = packaged_round_trip(tmp_path, flagged_contexts())
    assert "code" not in data.files and rows.code == [None, None, None]
