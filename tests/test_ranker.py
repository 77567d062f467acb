"""The learned candidate ranker, its retriever and the learned strategist."""

from __future__ import annotations

import asyncio
from collections import Counter

import numpy as np
import pytest
from langchain_core.messages import AIMessage, HumanMessage

from agents.registry import build_agents
from agents.strategist import LearnedStrategist
from runtime.settings import load_settings
from stores.base import StrategyRecord
from stores.contexts import AnswerContext, ContextRetriever
from stores.memory import InMemoryStrategyStore
from stores.packaged import export_library, load_packaged
from stores.ranker import (
    Contexts,
    LearnedRetriever,
    RankerModel,
    distribution,
    ranks_of,
    train_for_store,
    train_ranker,
)
from tests.fakes import ScriptedChatModel
from wiring.session import RetrievalUnavailable, Session, choose_retriever


def unit(rows: np.ndarray) -> np.ndarray:
    return rows / np.linalg.norm(rows, axis=-1, keepdims=True)


def synthetic(seed: int, per_topic: int = 12, topics: int = 10, dim: int = 32):
    """Answers around `topics` centres; after topic t real users applied strategy t.

    The strategy texts' vectors are unrelated to the answers, so text similarity cannot find the
    rule: only the answer contexts (who did what after answers like this) can. Support is equal.
    """
    rng = np.random.default_rng(seed)
    centres = unit(rng.normal(size=(topics, dim)))
    strategies = unit(rng.normal(size=(topics, dim)))
    labels = np.repeat(np.arange(topics), per_topic)
    answers = unit(centres[labels] + 0.1 * rng.normal(size=(len(labels), dim)))
    groups = np.arange(len(labels)) // 2  # two follow-ups per dialogue
    return centres, strategies, Contexts(answers, labels, groups)


def test_the_ranker_finds_the_strategy_that_follows_from_the_answer():
    centres, strategies, contexts = synthetic(0)
    model = train_ranker(strategies, np.full(len(strategies), 12.0), contexts, seed=0)
    # new answers, never seen: each near a topic centre
    rng = np.random.default_rng(1)
    topics = np.arange(len(centres)).repeat(5)
    answers = unit(centres[topics] + 0.1 * rng.normal(size=(len(topics), centres.shape[1])))
    from stores.ranker import pair_features

    scores = model.logits(pair_features(answers, strategies, np.full(10, 12.0), contexts))
    ranks = ranks_of(scores, topics)
    assert np.mean(ranks == 1) > 0.9
    # cross-validated by dialogue inside training, with the popularity prior beside it
    cv = model.cv
    assert cv["split"] == "by dialogue" and cv["folds"] == 5
    assert cv["recall_at_8"]["learned"] > 0.95
    assert cv["mean_rank"]["learned"] < cv["mean_rank"]["support"]
    assert len(cv["recall_at_8"]["learned_by_fold"]) == 5


def test_training_is_deterministic_for_a_seed():
    _, strategies, contexts = synthetic(3)
    support = np.full(len(strategies), 12.0)
    one = train_ranker(strategies, support, contexts, seed=7)
    two = train_ranker(strategies, support, contexts, seed=7)
    assert np.array_equal(one.weights, two.weights)
    assert one.cv == two.cv


def test_too_little_data_is_refused():
    _, strategies, contexts = synthetic(0, per_topic=1, topics=1)
    with pytest.raises(ValueError, match="at least two"):
        train_ranker(strategies, np.ones(1), contexts)


def test_ranks_count_ties_half():
    scores = np.array([[1.0, 1.0, 1.0, 0.0], [3.0, 2.0, 1.0, 0.0]])
    assert ranks_of(scores, np.array([0, 2])).tolist() == [2.0, 3.0]


def test_distribution_temperature():
    logits = np.array([2.0, 1.0, 0.0])
    assert distribution(logits, 0).tolist() == [1.0, 0.0, 0.0]
    one = distribution(logits, 1.0)
    assert one.sum() == pytest.approx(1.0)
    assert one[0] / one[1] == pytest.approx(np.e)
    hot = distribution(logits, 10.0)
    assert hot.max() - hot.min() < one.max() - one.min()


def test_metadata_round_trip_and_version_check():
    model = RankerModel(np.arange(7, dtype=float), 0.0, pairs=3, cv={"folds": 2})
    again = RankerModel.from_metadata(model.to_metadata())
    assert np.array_equal(again.weights, model.weights) and again.pairs == 3
    with pytest.raises(ValueError, match="unsupported ranker"):
        RankerModel.from_metadata({**model.to_metadata(), "version": 99})


class VectorEmbedding:
    """Embeds known texts to fixed vectors (strategy texts and answers of the synthetic set)."""

    def __init__(self, table: dict[str, np.ndarray]) -> None:
        self.table = table

    def embed(self, texts):
        return np.stack([self.table[t] for t in texts])

    def name(self) -> str:
        return "test-vectors"


def synthetic_store(with_ranker: bool) -> tuple[InMemoryStrategyStore, np.ndarray]:
    """A library of ten strategies with answer contexts from `synthetic`, as a store."""
    centres, strategies, contexts = synthetic(0)
    table = {f"strategy {i}": v for i, v in enumerate(strategies)}
    table |= {f"answer {t}": c for t, c in enumerate(centres)}
    store = InMemoryStrategyStore("syn", VectorEmbedding(table))
    store.add([StrategyRecord(id=f"s{i}", text=f"strategy {i}", support=12) for i in range(10)])
    store.contexts().add(
        [
            AnswerContext(f"c{n}", f"s{label}", vector, f"d{group}")
            for n, (vector, label, group) in enumerate(
                zip(contexts.vectors, contexts.strategy, contexts.groups, strict=True)
            )
        ]
    )
    if with_ranker:
        store.set_metadata({"ranker": train_for_store(store).to_metadata()})
    return store, centres


def test_a_library_with_a_ranker_retrieves_with_it():
    store, _ = synthetic_store(with_ranker=True)
    retriever = choose_retriever(store, "auto")
    assert isinstance(retriever, LearnedRetriever)
    found = retriever.search("answer 4", 3, exclude={"s9"})
    assert found[0].id == "s4"
    assert [c.rank for c in found] == [0, 1, 2]
    assert found[0].score > found[1].score >= found[2].score
    assert "s9" not in {c.id for c in retriever.search("answer 9", 10, exclude={"s9"})}
    assert choose_retriever(store, "text") is store
    assert isinstance(choose_retriever(store, "context"), ContextRetriever)


def test_a_library_without_a_ranker_keeps_context_retrieval():
    store, _ = synthetic_store(with_ranker=False)
    assert isinstance(choose_retriever(store, "auto"), ContextRetriever)
    with pytest.raises(RetrievalUnavailable, match="no learned ranker"):
        choose_retriever(store, "learned")
    bare = InMemoryStrategyStore("bare", store.embedding)
    assert choose_retriever(bare, "auto") is bare


def test_a_packaged_library_keeps_its_ranker_and_dialogue_groups(tmp_path):
    store, _ = synthetic_store(with_ranker=True)
    rows = store.contexts().rows()
    contexts = [
        AnswerContext(i, s, v, g)
        for i, s, v, g in zip(rows.ids, rows.strategy_ids, rows.vectors, rows.groups, strict=True)
    ]
    export_library(tmp_path / "lib", store.records(), store.metadata(), contexts)
    again = InMemoryStrategyStore("syn", store.embedding)
    load_packaged(again, tmp_path / "lib")
    assert again.contexts().rows().groups == rows.groups
    assert isinstance(choose_retriever(again, "auto"), LearnedRetriever)


def dialogue(answer: str) -> list:
    return [HumanMessage(content="q"), AIMessage(content=answer)]


def test_learned_strategist_at_temperature_0_takes_the_most_likely():
    store, _ = synthetic_store(with_ranker=True)
    strategist = LearnedStrategist(choose_retriever(store, "learned"), k=3, temperature=0.0)
    for _ in range(5):
        selection = asyncio.run(strategist.select(dialogue("answer 2"), used=set()))
        assert selection.strategy.id == "s2"
        assert selection.method == "learned"
        record = selection.as_record()
        assert record["draw"] == {"temperature": 0.0, "probability": 1.0, "rank": 0, "pool": 10}
        assert [c["id"] for c in record["candidates"]][0] == "s2"
        assert len(record["candidates"]) == 3
    used = asyncio.run(strategist.select(dialogue("answer 2"), used={"s2"}))
    assert used.strategy.id != "s2" and used.draw["pool"] == 9


def test_learned_strategist_draws_by_the_rankers_probabilities_repeatably():
    store, _ = synthetic_store(with_ranker=True)
    retriever = choose_retriever(store, "learned")

    def draws(seed: int, temperature: float) -> list[str]:
        strategist = LearnedStrategist(retriever, k=2, temperature=temperature, seed=seed)
        return [
            asyncio.run(strategist.select(dialogue("answer 5"), used=set())).strategy.id
            for _ in range(200)
        ]

    assert draws(1, 3.0) == draws(1, 3.0)
    assert draws(1, 3.0) != draws(2, 3.0)
    expected = {r.record.id: r.probability for r in retriever.rank("answer 5", temperature=3.0)}
    counts = Counter(draws(1, 3.0))
    assert len(counts) > 2  # a hot draw varies
    top = max(expected, key=expected.get)
    assert counts.most_common(1)[0][0] == top
    assert counts[top] / 200 == pytest.approx(expected[top], abs=0.1)
    # a strategy drawn from below the top k is added to the candidates, with its true rank
    strategist = LearnedStrategist(retriever, k=2, temperature=3.0, seed=1)
    for _ in range(50):
        selection = asyncio.run(strategist.select(dialogue("answer 5"), used=set()))
        ids = [c.id for c in selection.candidates]
        assert selection.strategy.id in ids
        if selection.draw["rank"] >= 2:
            assert len(ids) == 3 and ids[-1] == selection.strategy.id
            assert selection.candidates[-1].rank == selection.draw["rank"]
            assert selection.candidates[-1].rank == selection.draw["rank"]


def test_every_ablation_variant_is_a_valid_settings_patch():
    from agents.registry import REGISTRIES, VARIANTS, variant_settings

    assert VARIANTS["learned-strategy"] == {"agents": {"strategist": "learned"}}
    settings = load_settings()
    for name, patch in VARIANTS.items():
        varied = variant_settings(settings, name)  # a bad key or value raises SettingsError
        for role, agent in patch.get("agents", {}).items():
            assert getattr(varied.agents, role) == agent and agent in REGISTRIES[role]
        assert varied.simulator.adapter == patch.get("simulator", {}).get("adapter")
    assert settings == load_settings()  # the base settings are not changed


def test_the_default_strategist_on_a_library_without_a_ranker_says_what_to_do():
    store, _ = synthetic_store(with_ranker=False)
    settings = load_settings()  # the bundled model: `auto` is the learned strategist
    with pytest.raises(RetrievalUnavailable) as raised:
        build_agents(Session(settings, store=store))
    message = str(raised.value)
    assert "no learned ranker" in message and "--strategist llm" in message
    assert "\n" not in message
    with_ranker, _ = synthetic_store(with_ranker=True)
    models = {role: ScriptedChatModel(script=[]) for role in ("simulator", "critic", "assistant")}
    agents = build_agents(Session(settings, store=with_ranker, chat_models=models))
    assert isinstance(agents.strategist, LearnedStrategist)
