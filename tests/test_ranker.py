"""The learned candidate ranker, its retriever and the learned strategist."""

from __future__ import annotations

import asyncio
from collections import Counter
from dataclasses import replace

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
    FEATURES,
    LEGACY_FEATURES,
    Contexts,
    LearnedRetriever,
    RankerModel,
    code_fit,
    distribution,
    pair_features,
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


def test_code_fit_is_the_log_of_the_smoothed_code_share_by_provenance():
    # strategy 0: three contexts, two with code; strategy 1: one context, no code
    contexts = Contexts(
        vectors=np.eye(4),
        strategy=np.array([0, 0, 0, 1]),
        groups=np.array(["d1", "d2", "d3", "d3"]),
        code=np.array([True, True, False, False]),
    )
    shares = np.array([2.5 / 4, 0.5 / 2])
    fit = code_fit(np.array([True, False]), 2, contexts)
    np.testing.assert_allclose(fit, [np.log(shares), np.log(1 - shares)])
    # training: an answer's own dialogue is left out of the shares (d3: strategy 0 has 2 of 2)
    left_out = code_fit(np.array([True]), 2, contexts, answer_groups=np.array(["d3"]))
    np.testing.assert_allclose(left_out, [[np.log(2.5 / 3), np.log(0.5 / 1)]])
    # the same in the full features: the last column; unknown flags give 0
    features = pair_features(
        np.eye(4)[:2], np.eye(4)[:2], np.ones(2), contexts, answer_code=np.array([True, False])
    )
    assert features.shape == (2, 2, len(FEATURES)) and FEATURES[-1] == "code_fit"
    np.testing.assert_allclose(features[:, :, -1], fit)
    unknown = Contexts(contexts.vectors, contexts.strategy, contexts.groups)
    assert not pair_features(
        np.eye(4)[:2], np.eye(4)[:2], np.ones(2), unknown, answer_code=np.array([True, False])
    )[:, :, -1].any()
    assert not pair_features(np.eye(4)[:2], np.eye(4)[:2], np.ones(2), contexts)[:, :, -1].any()


def test_a_ranker_stored_before_code_fit_scores_exactly_as_before():
    old_weights = [4.573543, 0.520129, 0.07589, 0.110707, 0.672215, -3.622338]
    old = {
        "version": 1,
        "features": list(LEGACY_FEATURES),
        "weights": old_weights,
        "bias": 0.0,
        "pairs": 10,
        "cv": {},
    }
    model = RankerModel.from_metadata(old)
    assert model.weights.tolist() == [*old_weights, 0.0]
    _, strategies, contexts = synthetic(2)
    flagged = replace(contexts, code=np.arange(len(contexts.strategy)) % 3 == 0)
    answers = contexts.vectors[:20]
    features = pair_features(
        answers, strategies, np.full(10, 12.0), flagged, answer_code=np.arange(20) % 2 == 0
    )
    assert np.abs(features[:, :, -1]).min() > 0  # the new feature is there, and ignored
    before = features[:, :, : len(LEGACY_FEATURES)] @ np.array(old_weights)
    np.testing.assert_allclose(model.logits(features), before, rtol=0, atol=1e-12)
    assert (np.argsort(-model.logits(features), axis=1) == np.argsort(-before, axis=1)).all()
    with pytest.raises(ValueError, match="unsupported ranker"):
        RankerModel.from_metadata({**old, "weights": old_weights[:5]})
    with pytest.raises(ValueError, match="unsupported ranker"):
        RankerModel.from_metadata({**old, "features": list(LEGACY_FEATURES[:5])})


def code_rule_store(flags: bool) -> InMemoryStrategyStore:
    """Answers with a fenced code block were followed by strategy `s0`, all others by `s1`.

    Every vector is random, so neither the strategy texts nor the neighbours can tell the two
    apart: only the answers' code flags can (when the contexts carry them).
    """
    rng = np.random.default_rng(4)
    dim, answers = 24, 80
    table = {f"strategy {i}": v for i, v in enumerate(unit(rng.normal(size=(6, dim))))}
    vectors = unit(rng.normal(size=(answers + 10, dim)))
    table |= {"```\ncode answer\n```": vectors[answers], "a prose answer": vectors[answers + 1]}
    store = InMemoryStrategyStore("code", VectorEmbedding(table))
    store.add([StrategyRecord(id=f"s{i}", text=f"strategy {i}", support=40) for i in range(6)])
    code = np.arange(answers) % 2 == 0
    store.contexts().add(
        [
            AnswerContext(
                f"c{n}", "s0" if c else "s1", vectors[n], f"d{n // 2}", c if flags else None
            )
            for n, c in enumerate(code)
        ]
    )
    store.set_metadata({"ranker": train_for_store(store).to_metadata()})
    return store


def test_the_code_flag_lets_the_ranker_follow_the_domain_of_the_answer():
    store = code_rule_store(flags=True)
    model = RankerModel.from_metadata(store.metadata()["ranker"])
    assert model.weights[-1] > 1.0
    assert model.cv["mean_rank"]["learned"] < 1.1  # s0 or s1 first, by the flag alone
    retriever = choose_retriever(store, "learned")
    assert retriever.rank("```\ncode answer\n```")[0].record.id == "s0"
    assert retriever.rank("a prose answer")[0].record.id == "s1"


def test_without_flags_the_ranker_cannot_tell_code_answers_apart():
    store = code_rule_store(flags=False)
    model = RankerModel.from_metadata(store.metadata()["ranker"])
    assert model.weights[-1] == 0.0
    assert model.cv["mean_rank"]["learned"] > 1.3
    retriever = choose_retriever(store, "learned")
    first = {retriever.rank(t)[0].record.id for t in ("```\ncode answer\n```", "a prose answer")}
    assert len(first) == 1  # the same strategy first for both: the rule is invisible
