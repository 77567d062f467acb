"""End to end on the real embedded model (SmolLM2-135M via llama-cpp-python): slow-ish, few."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.embedded


def run_cli(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "IDEAS_STORE": str(tmp_path / "store"), "COLUMNS": "100"}
    return subprocess.run(
        [sys.executable, "run.py", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )


def test_two_turns_on_the_embedded_default(tmp_path):
    out = tmp_path / "dialogue.json"
    result = run_cli(tmp_path, "--seed", "examples/seed.json", "--turns", "2", "--out", str(out))

    assert result.returncode == 0, result.stderr
    document = json.loads(out.read_text())
    assert document["status"] == "complete"
    roles = [m["role"] for m in document["messages"]]
    assert roles == ["user", "assistant"] * 3
    assert all(m["content"].strip() for m in document["messages"])
    for turn in document["turns"]:
        assert turn["strategy"]["id"].startswith("t2-")  # a top-tier induced strategy
        assert turn["selection"]["method"] == "learned"  # the default strategist on this model
        assert turn["usage"]["strategist"]["calls"] == 0  # a draw from the ranker, no LLM call
        assert turn["usage"]["assistant"]["output_tokens"] > 0
    assert document["settings"]["agents"]["strategist"] == "learned"
    assert document["settings"]["agents"]["critic"] == "novelty"
    assert "turn 2 of 2" in result.stdout and "done: complete" in result.stdout


def test_llm_critic_on_the_embedded_model_parses_and_records_verdicts(tmp_path):
    out = tmp_path / "dialogue.json"
    result = run_cli(
        tmp_path,
        "--seed",
        "examples/question.txt",
        "--turns",
        "1",
        "--critic",
        "llm",
        "--max-rejections",
        "2",
        "--out",
        str(out),
        "--quiet",
    )

    assert result.returncode == 0, result.stderr
    document = json.loads(out.read_text())
    assert document["opening"]["answer"].strip()
    if document["status"] == "ended_early":
        assert document["reason"] == "2 drafts rejected in a row at turn 1"
        drafts = document["unfinished_turn"]["drafts"]
        assert [d["accepted"] for d in drafts] == [False, False]
    else:
        assert document["status"] == "complete"
        drafts = document["turns"][0]["drafts"]
    assert document["summary"]["per_agent"]["critic"]["calls"] >= 1
    assert document["summary"]["llm_calls"] >= 4
    assert all(d["reason"] for d in drafts)


def test_a_batch_on_the_embedded_model_repeats_at_any_concurrency(tmp_path):
    seeds = tmp_path / "seeds.txt"
    seeds.write_text("How do vaccines train the immune system?\nWhy is the sky blue?\n")
    runs = []
    for concurrency in ("1", "2"):
        out = tmp_path / f"run-{concurrency}"
        args = ["batch", "--seeds", str(seeds), "--n", "3", "--turns", "1", "--quiet"]
        result = run_cli(tmp_path, *args, "--concurrency", concurrency, "--out", str(out))
        assert result.returncode == 0, result.stderr
        lines = (out / "dialogues.jsonl").read_text().splitlines()
        runs.append({d["batch"]["job"]: d["messages"] for d in map(json.loads, lines)})

    # each request's sampling seed depends only on its job and messages, not on the order in
    # which concurrent jobs reach the server
    assert runs[0] == runs[1] and len(runs[0]) == 3
    # and two repeats of one seed sample differently (their jobs' seeds differ)
    assert runs[0]["000000.0"] != runs[0]["000000.1"]


def test_the_prefix_cache_serves_each_roles_history_on_the_second_turn(tmp_path):
    out = tmp_path / "dialogue.json"
    args = ["--seed", "examples/seed.json", "--turns", "2", "--strategist", "llm"]
    result = run_cli(tmp_path, *args, "--out", str(out))

    assert result.returncode == 0, result.stderr
    first, second = json.loads(out.read_text())["turns"]
    assert first["usage"]["strategist"]["cached_tokens"] < 50  # the first call: nothing cached
    for role in ("strategist", "simulator", "assistant"):
        before, after = first["usage"][role], second["usage"][role]
        # Another role called in between, so without the server's cache only the few tokens that
        # open every chat prompt would be reused; with it, this role's history from turn 1.
        assert after["cached_tokens"] > 100, (role, before, after)
        assert after["cached_tokens"] >= before["input_tokens"] - 300, (role, before, after)
    assistant = first["usage"]["assistant"], second["usage"]["assistant"]
    assert assistant[1]["cached_tokens"] >= assistant[0]["input_tokens"] - 10  # all of turn 1's


def test_one_server_switches_adapters_per_request_without_leaking_state():
    """The simulator's adapter answers its requests; the base model's are as without it."""
    import httpx

    from runtime.adapters import all_shipped
    from runtime.server import EmbeddedServer

    served = all_shipped("base")
    assert served, "no shipped trained simulator (scripts/build_simulators.sh)"
    adapter = next(iter(served))
    messages = [{"role": "user", "content": "Explain what a hash map is in two sentences."}]

    def ask(model: str) -> tuple[str, int]:
        body = {"model": model, "messages": messages, "temperature": 0, "max_tokens": 24}
        reply = httpx.post(f"{server.base_url}/chat/completions", json=body, timeout=120).json()
        cached = reply["usage"]["prompt_tokens_details"]["cached_tokens"]
        return reply["choices"][0]["message"]["content"], cached

    with EmbeddedServer(alias="base", adapters=served) as server:
        base, _ = ask("base")
        trained, _ = ask(adapter)
        base_again, base_cached = ask("base")
        trained_again, trained_cached = ask(adapter)
    assert trained != base  # the adapter is applied
    assert (base_again, trained_again) == (base, trained)  # and removed: nothing leaks
    assert base_cached > 10 and trained_cached > 10  # each kept its own cached prefix
