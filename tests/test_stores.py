import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from stores.base import Provenance, StrategyRecord, StrategyStore
from stores.chroma import ChromaStrategyStore, connect, list_libraries, open_store
from stores.embeddings import EmbeddingUnavailable, MiniLMEmbedding, model_files
from stores.memory import HashingEmbedding, InMemoryStrategyStore
from stores.starter import (
    LibraryNotFound,
    ensure_library,
    load_starter,
    read_starter,
    starter_metadata,
)

RECORDS = [
    StrategyRecord(id="h1", text="ask for a bread recipe with steps"),
    StrategyRecord(id="h2", text="ask about the history of bread"),
    StrategyRecord(id="h3", text="challenge the claim about quantum physics"),
    StrategyRecord(
        id="e1",
        text="what flour should I use for bread",
        level="extracted",
        parent_id="h1",
        support=3,
        provenance=[Provenance(source="data/a.jsonl", record_id="r7", turn=2)],
    ),
]

StoreFactory = Callable[[str], StrategyStore]


@pytest.fixture(params=["memory", "chroma"])
def make_store(request, tmp_path: Path) -> StoreFactory:
    """Return a factory of empty stores of one implementation (both use the hashing embedding)."""
    if request.param == "memory":
        return lambda library: InMemoryStrategyStore(library, HashingEmbedding())
    return lambda library: open_store(
        library, path=tmp_path / "chroma", embedding=HashingEmbedding()
    )


@pytest.fixture(scope="module")
def minilm() -> MiniLMEmbedding:
    try:
        model_files()
    except EmbeddingUnavailable as error:
        pytest.skip(str(error))
    return MiniLMEmbedding()


def test_store_satisfies_protocol(make_store):
    assert isinstance(make_store("lib"), StrategyStore)


def test_add_get_records_count(make_store):
    store = make_store("lib")
    assert store.count() == 0 and store.records() == [] and store.get("h1") is None
    store.add(RECORDS)
    assert store.count() == 4
    assert store.count("high") == 3 and store.count("extracted") == 1
    assert store.get("e1") == RECORDS[3]
    assert [r.id for r in store.records()] == ["e1", "h1", "h2", "h3"]
    assert [r.id for r in store.records("extracted")] == ["e1"]
    assert store.get("missing") is None


def test_add_updates_by_id(make_store):
    store = make_store("lib")
    store.add(RECORDS)
    store.add([StrategyRecord(id="h2", text="ask about the history of quantum physics", support=5)])
    assert store.count() == 4
    assert store.get("h2").support == 5
    assert store.search("quantum physics history", 1)[0].id == "h2"


def test_search_ranks_filters_and_excludes(make_store):
    store = make_store("lib")
    assert store.search("bread", 3) == []
    store.add(RECORDS)
    found = store.search("a recipe for bread with steps", 2)
    assert [c.id for c in found] == ["h1", "h2"]
    assert [c.rank for c in found] == [0, 1]
    assert found[0].score > found[1].score and found[0].score <= 1.0 + 1e-6
    assert {c.id for c in store.search("bread", 10)} == {"h1", "h2", "h3"}
    assert [c.id for c in store.search("flour for bread", 5, level="extracted")] == ["e1"]
    excluded = store.search("a recipe for bread with steps", 2, exclude=["h1"])
    assert [c.id for c in excluded] == ["h2", "h3"] and excluded[0].rank == 0
    assert store.search("bread", 0) == []


def test_metadata_round_trip_and_replace(make_store):
    store = make_store("lib")
    assert store.metadata() == {}
    meta = {"version": "2", "induced": True, "sources": ["a.jsonl"], "models": {"x": 1}}
    store.set_metadata(meta)
    assert store.metadata() == meta
    store.set_metadata({"version": "3"})
    assert store.metadata() == {"version": "3"}


def test_libraries_are_separate(make_store):
    first, second = make_store("one"), make_store("two")
    first.add(RECORDS[:1])
    assert second.count() == 0 and first.count() == 1


def test_chroma_persists_across_clients(tmp_path: Path):
    store = open_store("lib", path=tmp_path, embedding=HashingEmbedding())
    store.add(RECORDS)
    store.set_metadata({"version": "7"})
    reopened = open_store("lib", path=tmp_path, embedding=HashingEmbedding())
    assert reopened.count() == 4 and reopened.metadata() == {"version": "7"}
    assert reopened.get("e1") == RECORDS[3]
    assert reopened.search("bread recipe steps", 1)[0].id == "h1"
    assert list_libraries(connect(tmp_path)) == ["lib"]


def test_chroma_refuses_mixing_embeddings(tmp_path: Path):
    open_store("lib", path=tmp_path, embedding=HashingEmbedding(64)).add(RECORDS)
    with pytest.raises(ValueError, match="embedded with"):
        open_store("lib", path=tmp_path, embedding=HashingEmbedding(128))


def test_chroma_rejects_bad_library_name(tmp_path: Path):
    with pytest.raises(ValueError, match="invalid library name"):
        open_store("no spaces!", path=tmp_path, embedding=HashingEmbedding())


def test_chroma_with_minilm_finds_by_meaning(tmp_path: Path, minilm):
    store = open_store("starter", path=tmp_path, embedding=minilm)
    ensure_library(store)
    found = store.search("Could you show me a concrete example of that?", 3)
    assert len(found) == 3 and found[0].score > 0.3
    assert any("example" in c.text.lower() for c in found)
    assert store.metadata()["count"] == store.count()
    assert isinstance(ChromaStrategyStore(connect(tmp_path), "starter", minilm).count(), int)


def test_starter_file_is_valid():
    starter = read_starter()
    texts = [s.text for s in starter.strategies]
    ids = [s.id for s in starter.strategies]
    assert starter.library == "starter" and 30 <= len(texts) <= 60
    assert len(set(ids)) == len(ids) and len(set(texts)) == len(texts)
    assert all(len(t.split()) <= 20 for t in texts)
    assert all(i.startswith("starter-") for i in ids)
    for record in starter.strategies:
        assert record.level == "high" and record.support == 1 and record.parent_id is None
        assert [p.source for p in record.provenance] == ["starter"]


def test_ensure_library_loads_starter_once(make_store):
    store = make_store("starter")
    ensure_library(store)
    expected = read_starter()
    assert store.count() == len(expected.strategies)
    assert store.metadata() == starter_metadata(expected)
    assert store.metadata()["induced"] is False
    ensure_library(store)
    assert load_starter(store) == 0 and store.count() == len(expected.strategies)


def test_ensure_library_rejects_empty_named_library(make_store):
    with pytest.raises(LibraryNotFound, match="'induced-v1' is empty or missing"):
        ensure_library(make_store("induced-v1"))


def test_ensure_library_accepts_filled_named_library(make_store):
    store = make_store("induced-v1")
    store.add(RECORDS)
    ensure_library(store)
    assert store.count() == 4


@pytest.fixture
def chroma_server(tmp_path: Path):
    """Start `chroma run` on a free local port; yield its URL."""
    chroma = shutil.which("chroma", path=str(Path(sys.executable).parent))
    if chroma is None:
        pytest.skip("the chroma CLI is not installed")
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = subprocess.Popen(
        [
            chroma,
            "run",
            "--path",
            str(tmp_path / "server"),
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                connect(chroma_url=url).heartbeat()
                break
            except Exception:
                if time.monotonic() > deadline or server.poll() is not None:
                    pytest.fail("chroma server did not start")
                time.sleep(0.2)
        yield url
    finally:
        server.terminate()
        server.wait(timeout=10)


@pytest.mark.slow
def test_chroma_server_round_trip(chroma_server: str):
    store = open_store("lib", chroma_url=chroma_server, embedding=HashingEmbedding())
    store.add(RECORDS)
    store.set_metadata({"version": "1"})
    reopened = open_store("lib", chroma_url=chroma_server, embedding=HashingEmbedding())
    assert reopened.count() == 4 and reopened.metadata() == {"version": "1"}
    assert reopened.search("bread recipe steps", 1)[0].id == "h1"
    assert reopened.location == chroma_server
    assert list_libraries(connect(chroma_url=chroma_server)) == ["lib"]
