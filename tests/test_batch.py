"""Batch generation: seed sources, the job plan, the crash-safe store, the concurrent runner."""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from pathlib import Path

import pytest

from batch.jobs import Job, load_seed_set, plan_jobs
from batch.runner import BalancedRetriever, Batch, BatchOptions
from batch.store import DIALOGUES, INDEX, BatchStore, iter_dialogues, job_counts, read_index
from dialogues.models import BatchInfo, ChatMessage, DialogueDocument, StrategyRef, TurnRecord
from dialogues.seeds import SeedError
from runtime.settings import Settings
from stores.base import Candidate
from tests.data_paths import DATA
from tests.fake_openai import FakeOpenAI
from wiring.session import Session

# --- seed sources ---------------------------------------------------------------------------


def test_text_file_gives_one_question_per_line(tmp_path):
    path = tmp_path / "q.txt"
    path.write_text("What is a monad?\n\n  Why is the sky blue?  \n")
    seeds = load_seed_set(path)
    assert seeds.format == "questions"
    assert [s.to_openai_messages() for s in seeds.seeds] == [
        [{"role": "user", "content": "What is a monad?"}],
        [{"role": "user", "content": "Why is the sky blue?"}],
    ]
    assert seeds.seeds[1].source == f"{path}:3"
    assert len(seeds.sha256) == 64


def test_jsonl_of_strings_and_question_objects_counts_bad_records(tmp_path):
    path = tmp_path / "q.jsonl"
    lines = ['"What is entropy?"', '{"question": "How do tides work?"}', '{"x": 1}', '""']
    path.write_text("\n".join(lines) + "\n")
    seeds = load_seed_set(path)
    assert [s.messages[0].content for s in seeds.seeds] == [
        "What is entropy?",
        "How do tides work?",
    ]
    assert sum(seeds.skipped.values()) == 2


def test_openai_seed_dialogues_are_used_whole_unless_opening_only(tmp_path):
    dialogue = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Name a prime."},
        {"role": "assistant", "content": "7."},
        {"role": "user", "content": "Another?"},
        {"role": "assistant", "content": "11."},
    ]
    path = tmp_path / "seeds.jsonl"
    path.write_text(json.dumps({"messages": dialogue}) + "\n")
    whole = load_seed_set(path)
    assert whole.format == "openai"
    assert whole.seeds[0].to_openai_messages() == dialogue
    opening = load_seed_set(path, opening_only=True).seeds[0]
    assert opening.to_openai_messages() == dialogue[1:3]


def test_real_corpus_gives_each_dialogues_opening_exchange():
    seeds = load_seed_set(DATA / "mtbench101" / "mtbench101.jsonl")
    assert seeds.format == "mtbench101"
    assert len(seeds.seeds) > 1000
    first = seeds.seeds[0].to_openai_messages()
    assert [m["role"] for m in first] == ["user", "assistant"]
    assert first[0]["content"].startswith("Now there are three people A, B and C.")


def test_sharegpt_fixture_loads_whole_dialogues():
    seeds = load_seed_set(DATA / "fastchat-sharegpt-fixture" / "dummy_conversation.json")
    assert seeds.format == "sharegpt"
    assert all(s.messages[0].role == "user" for s in seeds.seeds)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (None, "file not found"),
        ("", "empty file"),
        ('{"x": 1}\n{"y": 2}\n', "no usable seed"),
    ],
)
def test_unusable_seed_sources_are_one_line_errors(tmp_path, content, message):
    path = tmp_path / "seeds.jsonl"
    if content is not None:
        path.write_text(content)
    with pytest.raises(SeedError, match=message) as err:
        load_seed_set(path)
    assert "\n" not in str(err.value)


def test_plan_cycles_through_seeds_with_stable_ids():
    jobs = plan_jobs(3, 7)
    assert [j.id for j in jobs] == [
        "000000.0", "000001.0", "000002.0", "000000.1", "000001.1", "000002.1", "000000.2",
    ]  # fmt: skip
    assert plan_jobs(3, 4) == jobs[:4]
    assert len({j.number for j in jobs}) == 7
    assert plan_jobs(0, 5) == []


# --- the store --------------------------------------------------------------------------------


def doc(job: str, strategies: list[str] | None = None) -> DialogueDocument:
    turns = [TurnRecord(strategy=StrategyRef(id=s, text=s)) for s in strategies or []]
    messages = [
        ChatMessage(role="user", content="Why?"),
        ChatMessage(role="assistant", content="Because."),
    ]
    return DialogueDocument(
        messages=messages * (1 + len(turns)), turns=turns, batch=BatchInfo(job=job)
    )


def test_store_appends_indexes_and_reopens(tmp_path):
    store = BatchStore.open(tmp_path)
    store.add_dialogue(doc("a", ["s1", "s2"]))
    store.add_failure("b", "model server error 500")
    store.add_dialogue(doc("c", ["s1"]))
    again = BatchStore.open(tmp_path)
    assert again.done() == {"a", "c"}
    assert again.failed() == {"b": "model server error 500"}
    assert again.strategy_uses() == {"s1": 2, "s2": 1}
    assert [d.job for d in iter_dialogues(tmp_path)] == ["a", "c"]
    assert job_counts(tmp_path) == {"done": 2, "failed": 1}
    with pytest.raises(ValueError, match="already stored"):
        again.add_dialogue(doc("a"))


def test_a_retried_failure_is_superseded_by_its_dialogue(tmp_path):
    store = BatchStore.open(tmp_path)
    store.add_failure("a", "timeout")
    store.add_failure("a", "timeout")
    assert store.index["a"].attempts == 2
    store.add_dialogue(doc("a"))
    assert read_index(tmp_path)["a"].status == "done"


def test_partial_lines_from_a_crash_are_cut_and_never_read(tmp_path):
    store = BatchStore.open(tmp_path)
    store.add_dialogue(doc("a"))
    with (tmp_path / DIALOGUES).open("a") as handle:
        handle.write('{"format": "ideas-dialogue/1", "batch": {"job": "b"')  # killed mid-write
    with (tmp_path / INDEX).open("a") as handle:
        handle.write('{"job": "x", "sta')
    assert [d.job for d in iter_dialogues(tmp_path)] == ["a"]
    again = BatchStore.open(tmp_path)
    assert again.done() == {"a"}
    assert (tmp_path / DIALOGUES).read_bytes().endswith(b"}\n")
    again.add_dialogue(doc("b"))
    assert [d.job for d in iter_dialogues(tmp_path)] == ["a", "b"]


def test_a_dialogue_stored_before_its_index_line_is_indexed_on_open(tmp_path):
    store = BatchStore.open(tmp_path)
    store.add_dialogue(doc("a"))
    with (tmp_path / DIALOGUES).open("a") as handle:  # the process died before indexing "b"
        handle.write(json.dumps(doc("b", ["s9"]).dump()) + "\n")
    again = BatchStore.open(tmp_path)
    assert again.repaired == 1
    assert again.done() == {"a", "b"}
    assert again.strategy_uses() == {"s9": 1}
    assert BatchStore.open(tmp_path).repaired == 0


# --- balance ----------------------------------------------------------------------------------


class FixedRetriever:
    def __init__(self, ids: list[str]) -> None:
        self.ids = ids
        self.asked: list[tuple[int, tuple]] = []

    def search(self, text, k, *, exclude=()):
        self.asked.append((k, tuple(exclude)))
        return [
            Candidate(id=i, text=i, score=1.0 - n / 10, rank=n) for n, i in enumerate(self.ids)
        ][:k]


def test_balanced_retrieval_prefers_the_least_used_of_a_wider_pool():
    inner = FixedRetriever(["a", "b", "c", "d", "e", "f"])
    uses = Counter({"a": 5, "b": 1, "d": 1})
    balanced = BalancedRetriever(inner, uses, widen=3)
    picked = balanced.search("answer", 2, exclude=["z"])
    assert inner.asked == [(6, ("z",))]
    assert [c.id for c in picked] == ["c", "e"]  # unused first, in retrieval order
    assert [c.rank for c in picked] == [0, 1]
    uses.update({"c": 3, "e": 3, "f": 3})
    assert [c.id for c in balanced.search("answer", 3)] == ["b", "d", "c"]


# --- the runner against a fake OpenAI-compatible server ---------------------------------------


def seed_file(tmp_path: Path, count: int = 3) -> Path:
    path = tmp_path / "seeds.txt"
    topics = ["hash tables", "vaccines", "photosynthesis", "tides", "inflation", "compilers"]
    path.write_text("\n".join(f"How do {t} work?" for t in topics[:count]) + "\n")
    return path


def make_batch(tmp_path, store, fake, n, *, seeds=3, options=None, **settings) -> Batch:
    model = {"base_url": fake.base_url, "max_retries": 0}
    config = Settings(model=model, turns=settings.pop("turns", 2), **settings)
    session = Session(config, store=store)
    seed_set = load_seed_set(seed_file(tmp_path, seeds))
    return Batch(
        store=BatchStore.open(tmp_path / "run"),
        seeds=seed_set,
        jobs=plan_jobs(len(seed_set.seeds), n),
        wiring=session,
        library={"name": "test"},
        options=options or BatchOptions(concurrency=3),
    )


def stored_jobs(tmp_path) -> list[str]:
    return [d.job for d in iter_dialogues(tmp_path / "run")]


def test_batch_grows_every_planned_dialogue_concurrently(tmp_path, store):
    with FakeOpenAI(latency=0.01) as fake:
        batch = make_batch(tmp_path, store, fake, n=5)
        report = asyncio.run(batch.run())
    assert sorted(stored_jobs(tmp_path)) == sorted(j.id for j in plan_jobs(3, 5))
    assert report.done == 5 and report.failed == 0
    assert fake.max_inflight > 1
    docs = list(iter_dialogues(tmp_path / "run"))
    assert all(d.status in ("complete", "ended_early") for d in docs)
    assert report.turns == sum(len(d.turns) for d in docs)
    repeat = next(d for d in docs if d.job == "000000.1")
    assert repeat.seed.source.endswith("seeds.txt:1")
    assert repeat.batch.sampling_seed == 1_000_000


def test_endpoint_limit_bounds_requests_in_flight(tmp_path, store):
    with FakeOpenAI(latency=0.01) as fake:
        batch = make_batch(tmp_path, store, fake, n=4, endpoint_concurrency=1)
        asyncio.run(batch.run())
    assert len(stored_jobs(tmp_path)) == 4
    assert fake.max_inflight == 1


def test_requests_carry_sampling_seeds_derived_from_each_job(tmp_path, store):
    def opening_seeds(fake) -> list[int]:
        """Seeds of the requests answering the seed question itself (same text in every job)."""
        question = "How do hash tables work?"
        return sorted(r["seed"] for r in fake.requests if r["messages"][-1]["content"] == question)

    runs = []
    for name in ("first", "second"):
        (tmp_path / name).mkdir()
        with FakeOpenAI() as fake:
            asyncio.run(make_batch(tmp_path / name, store, fake, n=3, seeds=1).run())
        assert all(isinstance(r.get("seed"), int) for r in fake.requests)
        runs.append(opening_seeds(fake))
    assert len(runs[0]) == 3 and len(set(runs[0])) == 3  # same question, three jobs, three seeds
    assert runs[0] == runs[1]  # and the same three when the batch is run again


def test_a_failing_dialogue_is_recorded_and_retried_only_when_asked(tmp_path, store):
    def fail(body):
        return any("vaccines" in str(m.get("content")) for m in body["messages"])

    with FakeOpenAI(fail=fail) as fake:
        report = asyncio.run(make_batch(tmp_path, store, fake, n=3).run())
    assert report.done == 2 and report.failed == 1
    assert "000001.0" not in stored_jobs(tmp_path)
    [reason] = BatchStore.open(tmp_path / "run").failed().values()
    assert "500" in reason

    with FakeOpenAI() as fake:
        again = asyncio.run(make_batch(tmp_path, store, fake, n=3).run())
        assert again.skipped_failed == 1 and again.done == 0
        assert fake.requests == []
        options = BatchOptions(concurrency=2, retry_failed=True)
        retried = asyncio.run(make_batch(tmp_path, store, fake, n=3, options=options).run())
    assert retried.done == 1
    assert sorted(stored_jobs(tmp_path)) == ["000000.0", "000001.0", "000002.0"]


def test_a_failed_dialogue_resumes_from_its_checkpoint(tmp_path, store):
    def fail_late(body):  # the model dies once the dialogue has grown past its first turn
        return len(body["messages"]) >= 6

    with FakeOpenAI(fail=fail_late) as fake:
        first = asyncio.run(make_batch(tmp_path, store, fake, n=1, turns=3).run())
        generated_before = {
            str(m.get("content")) for body in fake.requests for m in body["messages"]
        }
    assert first.failed == 1
    with FakeOpenAI() as fake:
        options = BatchOptions(retry_failed=True)
        second = asyncio.run(make_batch(tmp_path, store, fake, n=1, turns=3, options=options).run())
    assert second.done == 1 and second.resumed == 1
    [document] = iter_dialogues(tmp_path / "run")
    assert document.batch.resumed is True
    assert document.messages[1].content in generated_before  # not generated again
    assert document.turns[0].instruction in generated_before


def test_repeated_failures_stop_the_batch(tmp_path, store):
    with FakeOpenAI(fail=lambda body: True) as fake:
        options = BatchOptions(concurrency=1, max_failures_in_row=2)
        report = asyncio.run(make_batch(tmp_path, store, fake, n=6, options=options).run())
    assert report.failed == 2
    assert report.aborted.startswith("2 failures in a row, last: model server error 500")


def test_balance_spreads_strategies_across_the_dataset(tmp_path, store):
    with FakeOpenAI() as fake:
        options = BatchOptions(concurrency=1, balance=True)
        asyncio.run(make_batch(tmp_path, store, fake, n=5, options=options, top_k=2).run())
    uses = BatchStore.open(tmp_path / "run").strategy_uses()
    assert sum(uses.values()) >= 8
    assert max(uses.values()) - min(uses.values()) <= 1  # five strategies used in turn
    assert len(uses) == 5


def test_job_number_makes_repeats_sample_differently():
    assert Job(2, 0).number != Job(2, 1).number


def test_shuffled_seeds_keep_their_sources_in_a_fixed_order(tmp_path):
    seeds = load_seed_set(seed_file(tmp_path, 6))
    once, again = seeds.shuffled(7), seeds.shuffled(7)
    assert [s.source for s in once.seeds] == [s.source for s in again.seeds]
    assert [s.source for s in once.seeds] != [s.source for s in seeds.seeds]
    assert sorted(s.source for s in once.seeds) == sorted(s.source for s in seeds.seeds)
    assert once.describe()["order"] == "shuffled (seed 7)"
    assert seeds.describe()["order"] == "file"
