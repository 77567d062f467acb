"""Library induction: clusters, abstractions, provenance, support, metadata and saving."""

from __future__ import annotations

import asyncio
from collections import Counter
from dataclasses import dataclass

import numpy as np
import pytest

from induction.abstract import (
    CentroidAbstractor,
    LLMAbstractor,
    centroid_index,
    check_abstraction,
)
from induction.library import (
    Library,
    build_library_sync,
    extracted_record_id,
    save_library,
    source_digests,
)
from stores.base import StrategyRecord
from stores.memory import HashingEmbedding, InMemoryStrategyStore
from tests.fakes import scripted, tool_reply

EMB = HashingEmbedding()
STRATEGIES = [  # walked in this order; with EMB they cluster as {0, 2, 5}, {1, 4}, {3}
    "Ask for a concrete example of the idea",
    "Challenge the claim and ask for evidence",
    "Ask for one more concrete example of this idea",
    "Summarise the answer in a single sentence",
    "Challenge the main claim and ask for more evidence",
    "Ask for another concrete example of the idea",
]
DETAIL = "Ask for supporting detail behind the answer"
EVIDENCE = "Ask for supporting evidence behind the answer"
DEEPER = "Dig deeper into the reasoning behind the answer"


@dataclass
class FakeExtraction:
    source: str
    record_id: str
    turn: int
    strategy: str
    annotator: str | None = "team-written annotations"

    @property
    def key(self) -> tuple[str, str, int]:
        return (self.source, self.record_id, self.turn)


@dataclass
class FakePair:
    source: str
    record_id: str
    turn: int
    answer: str
    followup: str = "and then?"


def extractions() -> list[FakeExtraction]:
    return [
        FakeExtraction("a.jsonl" if i < 3 else "b.jsonl", f"r{i}", 1, text)
        for i, text in enumerate(STRATEGIES)
    ]


def pairs() -> dict:
    found = {}
    for e in extractions()[:-1]:  # the last extraction has no pair
        found[e.key] = FakePair(e.source, e.record_id, e.turn, f"answer number {e.record_id}")
    return found


def abstraction(text: str):
    return tool_reply("AbstractionOutput", strategy=text)


def build(abstractor, items=None, **kwargs) -> Library:
    items = extractions() if items is None else items
    kwargs.setdefault("concurrency", 1)
    return build_library_sync(items, pairs(), EMB, abstractor, **kwargs)


def children(library: Library, record: StrategyRecord) -> list[StrategyRecord]:
    return [r for r in library.records if r.parent_id == record.id]


def extracted_under(library: Library, record: StrategyRecord) -> list[StrategyRecord]:
    if record.level == "extracted":
        return [record]
    return [leaf for child in children(library, record) for leaf in extracted_under(library, child)]


def sorted_by_key(items):
    return sorted(items, key=lambda e: (e.source, e.record_id, e.turn))


def assert_provenance_chain(library: Library, items) -> None:
    """Every source key lies under exactly one high-level strategy; supports add up."""
    keys = []
    for high in library.by_level("high"):
        leaves = extracted_under(library, high)
        assert high.support == len(leaves)
        noted = sum(int(p.note.split()[0]) for p in high.provenance)
        assert noted == high.support
        assert {p.source for p in high.provenance} == {leaf.provenance[0].source for leaf in leaves}
        keys += [(p.source, p.record_id, p.turn) for leaf in leaves for p in leaf.provenance]
    assert sorted(keys) == sorted(e.key for e in items)
    assert sum(r.support for r in library.by_level("high")) == len(items)
    for record in library.records:
        if record.level != "high":
            parent = next(r for r in library.records if r.id == record.parent_id)
            assert parent.support >= record.support
            assert parent.level != "extracted"


@pytest.mark.parametrize("tiers", [1, 2, 3])
def test_centroid_library_keeps_provenance_and_support(tiers):
    library = build(CentroidAbstractor(), tiers=tiers)
    assert_provenance_chain(library, extractions())
    assert [t.clusters for t in library.tiers][0] == 3
    assert len(library.tiers) == tiers
    assert library.tiers[-1].level == "high"
    assert all(t.level == "intermediate" for t in library.tiers[:-1])
    assert library.usage.calls == 0
    tier_one = library.records[6:9]
    assert [r.support for r in tier_one] == [3, 2, 1]
    assert tier_one[0].text in {STRATEGIES[i] for i in (0, 2, 5)}
    assert tier_one[2].text == STRATEGIES[3]
    assert len(library.by_level("extracted")) == 6


def test_extracted_records_have_exact_provenance_and_answer_embeddings():
    library = build(CentroidAbstractor())
    extracted = library.by_level("extracted")
    by_key = {
        (r.provenance[0].source, r.provenance[0].record_id, r.provenance[0].turn): r
        for r in extracted
    }
    assert set(by_key) == {e.key for e in extractions()}
    assert all(r.support == 1 and len(r.provenance) == 1 for r in extracted)
    missing = by_key[extractions()[-1].key].id
    assert set(library.answer_embeddings) == {r.id for r in extracted} - {missing}
    for key, pair in pairs().items():
        vector = library.answer_embeddings[by_key[key].id]
        np.testing.assert_allclose(vector, EMB.embed([pair.answer])[0])
    highs = {r.id for r in library.by_level("high")}
    contexts = library.answer_contexts()
    assert len(contexts) == 5 and all(c.strategy_id in highs for c in contexts)


def test_ids_are_stable_and_independent_of_input_order():
    first = build(CentroidAbstractor())
    second = build(CentroidAbstractor(), items=list(reversed(extractions())))
    assert [(r.id, r.parent_id, r.text) for r in first.records] == [
        (r.id, r.parent_id, r.text) for r in second.records
    ]
    assert len({r.id for r in first.records}) == len(first.records)


def test_llm_abstractor_called_once_per_cluster_with_its_members():
    chat = scripted(abstraction(DETAIL), abstraction(EVIDENCE), abstraction(DEEPER))
    library = build(LLMAbstractor(chat), tiers=2)
    prompts = [p[0].content for p in chat.model.prompts]
    assert len(prompts) == 3 and chat.model.unused == 0
    assert all(STRATEGIES[i] in prompts[0] for i in (0, 2, 5))
    assert not any(STRATEGIES[i] in prompts[0] for i in (1, 3, 4))
    assert all(STRATEGIES[i] in prompts[1] for i in (1, 4))
    assert DETAIL in prompts[2] and EVIDENCE in prompts[2] and STRATEGIES[3] not in prompts[2]
    texts = [r.text for r in library.by_level("intermediate")]
    assert texts == [DETAIL, EVIDENCE, STRATEGIES[3]]
    assert sorted(r.text for r in library.by_level("high")) == [DEEPER, STRATEGIES[3]]
    assert library.tiers[0].methods == {"llm": 2, "singleton": 1}
    assert library.tiers[1].methods == {"llm": 1, "singleton": 1}
    assert library.usage.calls == 3
    assert_provenance_chain(library, extractions())
    assert library.metadata["abstraction"] == "llm:ScriptedChatModel"


def test_invalid_abstraction_is_retried_then_falls_back_to_the_centroid_member():
    long = "Ask " + "very " * 25 + "much"
    chat = scripted(
        abstraction("What is a good example?"), abstraction(long), abstraction(EVIDENCE)
    )
    library = build(LLMAbstractor(chat), tiers=1)
    assert chat.model.unused == 0
    retry = chat.model.prompts[1][0].content
    assert "'What is a good example?' was rejected" in retry and "imperative verb" in retry
    first, second, _ = library.by_level("high")
    members = [STRATEGIES[i] for i in (0, 2, 5)]
    assert first.text == members[centroid_index(EMB.embed(members))]
    assert "27 words" in library.fallbacks[first.id]
    assert second.text == EVIDENCE and second.id not in library.fallbacks
    assert library.tiers[0].methods == {"fallback": 1, "llm": 1, "singleton": 1}
    assert library.metadata["counts"]["fallbacks"] == 1


def test_unparseable_output_falls_back_with_the_reason():
    bad = tool_reply("AbstractionOutput", wrong="field")
    chat = scripted(*[bad] * 3)
    result = asyncio.run(
        LLMAbstractor(chat, attempts=1).abstract(STRATEGIES[:2], EMB.embed(STRATEGIES[:2]))
    )
    assert result.method == "fallback" and result.note.startswith("no valid output")
    assert result.text in STRATEGIES[:2] and result.usage.calls == 3


def test_singleton_and_duplicate_clusters_cost_no_call():
    chat = scripted()
    abstractor = LLMAbstractor(chat)
    for members in (["Ask why"], ["Ask why", "Ask why"]):
        result = asyncio.run(abstractor.abstract(members, EMB.embed(members)))
        assert (result.text, result.method, result.usage.calls) == ("Ask why", "singleton", 0)
    assert chat.model.prompts == []


@pytest.mark.parametrize(
    "text, ok",
    [
        ("Ask for a concrete example", True),
        ("Politely challenge the weakest claim", True),
        ("", False),
        ("What about examples?", False),
        ("Ask " + "more " * 20, False),
        ("Ask about the 3 steps", False),
        ("the general principle behind the group's follow-ups", False),
    ],
)
def test_check_abstraction(text, ok):
    assert (check_abstraction(text) is None) == ok


def test_metadata_describes_the_build(tmp_path):
    source = tmp_path / "a.jsonl"
    source.write_text("{}\n")
    digests = source_digests([source])
    library = build(CentroidAbstractor(), tiers=2, name="mine", version="3", sources=digests)
    meta = library.metadata
    assert meta["name"] == "mine" and meta["version"] == "3" and meta["induced"] is True
    assert meta["extraction"] == "team-written annotations"
    assert meta["abstraction"] == "centroid" and meta["embedding"] == "ideas-hashing-256"
    assert meta["threshold"] == 0.5 and meta["tiers"] == 2
    assert meta["sources"] == {"a.jsonl": digests["a.jsonl"]} and len(digests["a.jsonl"]) == 64
    counts = meta["counts"]
    assert counts["extracted"] == 6 and counts["answers"] == 5
    assert counts["clusters"][0] == 3 and counts["high"] == counts["clusters"][1]
    assert counts["intermediate"] == 3
    assert set(meta["timing"]) == {"total_s", "embed_s", "tiers_s"}
    default = build(CentroidAbstractor(), extraction="llm:x").metadata
    assert default["sources"] == {"a.jsonl": None, "b.jsonl": None}
    assert default["extraction"] == "llm:x"


def test_save_library_into_a_store():
    library = build(CentroidAbstractor(), tiers=2)
    store = InMemoryStrategyStore("induced", EMB)
    save_library(library, store, batch=4)
    assert store.count() == len(library.records)
    levels = Counter(r.level for r in library.records)
    for level in ("extracted", "intermediate", "high"):
        assert store.count(level) == levels[level]
    assert store.metadata() == library.metadata
    top = store.search("give me another example", 1)[0]
    assert store.get(top.id).level == "high"
    with pytest.raises(ValueError, match="already holds"):
        save_library(library, store)


def test_invalid_builds_are_refused():
    with pytest.raises(ValueError, match="tiers"):
        build(CentroidAbstractor(), tiers=0)
    with pytest.raises(ValueError, match="share"):
        build(CentroidAbstractor(), items=extractions() + extractions()[:1])
    with pytest.raises(ValueError, match="no extracted"):
        build(CentroidAbstractor(), items=[])


def test_real_extraction_and_pair_objects():
    from induction.extract import Extraction
    from induction.records import Pair, Turn

    history = (Turn("user", "What is a vaccine?"), Turn("assistant", "A trained defence."))
    pair = Pair("real.jsonl", "d1", 1, history, "Give me an example")
    extraction = Extraction(
        source="real.jsonl", record_id="d1", turn=1, analysis="wants one", strategy=STRATEGIES[0]
    )
    library = build_library_sync([extraction], {pair.key: pair}, EMB, CentroidAbstractor())
    (record,) = library.by_level("extracted")
    np.testing.assert_allclose(library.answer_embeddings[record.id], EMB.embed([pair.answer])[0])
    assert [r.level for r in library.records] == ["extracted", "intermediate", "high"]
    assert library.metadata["extraction"] == "unknown"


def test_answer_contexts_carry_whether_the_real_answer_held_a_fenced_code_block():
    given = pairs()
    coded = extractions()[1].key
    given[coded] = FakePair(*coded, "Try this:\n```python\nprint('hi')\n```")
    library = build_library_sync(extractions(), given, EMB, CentroidAbstractor(), concurrency=1)
    by_id = {c.id: c for c in library.answer_contexts()}
    flags = {key: by_id[extracted_record_id(*key)].code for key in given}
    assert flags[coded] is True
    assert [flag for key, flag in flags.items() if key != coded] == [False] * 4
