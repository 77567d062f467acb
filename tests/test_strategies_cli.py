"""`run.py strategies ...` on the starter library in a temporary store."""

from __future__ import annotations

import json

import pytest

from cli.main import main


@pytest.fixture(autouse=True)
def store(tmp_path, monkeypatch):
    monkeypatch.setenv("IDEAS_STORE", str(tmp_path / "store"))
    monkeypatch.setenv("COLUMNS", "200")


def run_json(capsys, *argv, library="starter"):
    code = main(["strategies", *argv, "--json", "--library", library])
    return code, json.loads(capsys.readouterr().out)


def test_list_returns_every_high_level_strategy_by_support(capsys):
    code, data = run_json(capsys, "list")
    assert code == 0
    assert data["library"] == "starter"
    assert len(data["strategies"]) == 42
    supports = [s["support"] for s in data["strategies"]]
    assert supports == sorted(supports, reverse=True)


def test_search_ranks_the_example_strategy_first(capsys):
    code, data = run_json(capsys, "search", "can you give me an example", "-k", "3")
    assert code == 0
    assert len(data["results"]) == 3
    assert "example" in data["results"][0]["text"].lower()


def test_show_and_stats(capsys):
    _, shown = run_json(capsys, "show", "starter-001")
    assert shown["id"] == "starter-001" and shown["provenance"][0]["source"] == "starter"
    _, stats = run_json(capsys, "stats")
    assert stats["counts"] == {"high": 42}
    assert stats["metadata"]["induced"] is False


def test_show_unknown_id_is_a_one_line_error(capsys):
    assert main(["strategies", "show", "nope", "--library", "starter"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["error: no strategy 'nope' in library 'starter'"]


def test_missing_library_is_a_one_line_error(capsys):
    assert main(["strategies", "list", "--library", "nothing-here"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "nothing-here" in err[0]


def test_the_shipped_default_library_is_induced_with_provenance(capsys):
    code, stats = run_json(capsys, "stats", library="default")
    assert code == 0
    assert stats["metadata"]["induced"] is True
    assert stats["counts"]["extracted"] == 1226
    assert set(stats["metadata"]["sources"]) == {
        "en_100_tree.jsonl",
        "realistic_seed_data.json",
        "chats.jsonl",
        "document_creation_annotations_for_benchmarking.json",
    }
    _, listed = run_json(capsys, "list", library="default")
    top = listed["strategies"][0]
    assert top["support"] >= listed["strategies"][-1]["support"]
    member = top["members"][0]["id"]
    _, shown = run_json(capsys, "show", member, library="default")
    assert shown["parent_id"] == top["id"]
