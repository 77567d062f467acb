"""A broken model server, fault by fault: one line, the right exit code, never a hang.

Every fault comes from `tests/fake_openai.py` in one of its modes (real HTTP, no model).
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
import tracemalloc
from pathlib import Path

import pytest
from langchain_core.messages import HumanMessage

from agents.chat import ChatClient, ModelError, build_chat_model
from batch.jobs import load_seed_set, plan_jobs
from batch.runner import Batch, BatchOptions
from batch.store import BatchStore, iter_dialogues
from runtime.http_client import ReplyTooLarge
from runtime.settings import ModelSettings, Settings
from tests.cli_helpers import isolate_cli, lines, run_cli, write_seed
from tests.fake_openai import FakeOpenAI
from wiring.session import Session

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def store_dir(tmp_path_factory) -> Path:
    """One strategy store for the module (filling it embeds the starter library once)."""
    return tmp_path_factory.mktemp("store")


@pytest.fixture(autouse=True)
def env(monkeypatch, store_dir):
    isolate_cli(monkeypatch, store_dir)
    monkeypatch.setenv("IDEAS_LIBRARY", "starter")
    monkeypatch.setenv("IDEAS_MODEL__MAX_RETRIES", "0")
    monkeypatch.setenv("IDEAS_MODEL__TIMEOUT", "2")


@pytest.fixture
def seed_file(tmp_path) -> Path:
    return write_seed(tmp_path)


def seeds_file(tmp_path: Path) -> Path:
    path = tmp_path / "seeds.txt"
    path.write_text("How do hash tables work?\nWhy is the sky blue?\nHow do tides work?\n")
    return path


def generate(capsys, fake: FakeOpenAI, seed: Path, out: Path, *extra: object):
    argv = ["--seed", seed, "--turns", 2, "--out", out, "--base-url", fake.base_url, *extra]
    return run_cli(capsys, *argv)


def batch(capsys, fake: FakeOpenAI, tmp_path: Path, *extra: object):
    argv = ["batch", "--seeds", seeds_file(tmp_path), "--out", tmp_path / "run", "--turns", 1]
    return run_cli(capsys, *argv, "--base-url", fake.base_url, "--quiet", *extra)


# --- F5: a reply trickled a byte at a time is cut off by the total deadline ---------------------


def test_a_trickling_reply_is_cut_off_and_retried():
    """httpx times out each chunk, not the reply: only the client's own deadline ends this."""
    settings = ModelSettings(model="m", timeout=1, max_retries=1)
    with FakeOpenAI(mode="trickle", delay=0.2) as fake:
        chat = ChatClient(build_chat_model(settings, fake.base_url))
        started = time.monotonic()
        with pytest.raises(ModelError) as caught:
            asyncio.run(asyncio.wait_for(chat.text([HumanMessage(content="Hi?")]), 30))
        seconds = time.monotonic() - started
    assert str(caught.value) == (
        f"model server {fake.base_url} did not finish a reply within 1 s (2 attempts)"
    )
    assert len(fake.requests) == 2  # the timed-out attempt was retried once
    assert seconds < 10


def test_generate_against_a_trickling_server_fails_in_one_line(tmp_path, seed_file):
    env = {k: v for k, v in os.environ.items() if k != "COLUMNS"}
    env |= {"IDEAS_MODEL__TIMEOUT": "1", "IDEAS_MODEL__MAX_RETRIES": "1"}
    out = tmp_path / "out.json"
    with FakeOpenAI(mode="trickle", delay=0.2) as fake:
        argv = ["--seed", seed_file, "--turns", "1", "--out", out, "--base-url", fake.base_url]
        result = subprocess.run(
            [sys.executable, "run.py", *map(str, argv)],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=90,
        )
    assert result.returncode == 1
    assert "Traceback" not in result.stdout + result.stderr
    [line] = lines(result.stderr)
    assert line.startswith("error: model server") and "did not finish a reply within 1 s" in line
    assert not out.exists()


def test_a_batch_against_a_trickling_server_records_failures(tmp_path, store):
    """Every dialogue fails within its deadlines; before the fix this batch never ended."""
    with FakeOpenAI(mode="trickle", delay=0.2) as fake:
        model = {"base_url": fake.base_url, "timeout": 1, "max_retries": 0}
        config = Settings(model=model, turns=1)
        seeds = load_seed_set(seeds_file(tmp_path))
        job = Batch(
            store=BatchStore.open(tmp_path / "run"),
            seeds=seeds,
            jobs=plan_jobs(len(seeds.seeds), 2),
            wiring=Session(config, store=store),
            library={"name": "test"},
            options=BatchOptions(concurrency=2),
        )
        report = asyncio.run(asyncio.wait_for(job.run(), 30))
    assert report.failed == 2 and report.done == 0
    [(reason, count)] = report.failures.items()
    assert count == 2 and reason.endswith("did not finish a reply within 1 s (1 attempt)")
    assert len(BatchStore.open(tmp_path / "run").failed()) == 2


# --- F6: empty or unusable replies fail the dialogue (retryable), never "succeed" ---------------


def test_generate_with_only_empty_replies_exits_1_in_one_line(capsys, tmp_path, seed_file):
    out = tmp_path / "out.json"
    with FakeOpenAI(mode="empty") as fake:
        code, stdout, err = generate(capsys, fake, seed_file, out)
    assert code == 1
    assert "Traceback" not in stdout + err
    assert lines(err) == [
        f"error: model server {fake.base_url} gave only empty replies (3 attempts)"
    ]
    assert not out.exists()


def test_generate_with_garbage_tool_arguments_exits_1_in_one_line(capsys, tmp_path, seed_file):
    out = tmp_path / "out.json"
    with FakeOpenAI(mode="garbage-tools") as fake:
        code, stdout, err = generate(capsys, fake, seed_file, out, "--critic", "llm")
    assert code == 1
    assert "Traceback" not in stdout + err
    [line] = lines(err)
    assert line.startswith(
        "error: the critic got no usable reply from the model: tool call arguments are not JSON"
    )
    assert not out.exists()


def test_a_batch_of_empty_replies_fails_and_is_retried_once_the_server_works(tmp_path, capsys):
    # the novelty critic: the fake's random LLM verdicts could end a dialogue early
    with FakeOpenAI(mode="empty") as fake:
        code, out, _ = batch(capsys, fake, tmp_path, "--critic", "novelty")
    assert code == 3  # every dialogue failed: none is stored as done
    assert list(iter_dialogues(tmp_path / "run")) == []
    failed = BatchStore.open(tmp_path / "run").failed()
    assert len(failed) == 3 and all("gave only empty replies" in r for r in failed.values())
    assert "3 x model server" in out

    with FakeOpenAI() as fake:
        code, out, _ = batch(capsys, fake, tmp_path, "--critic", "novelty", "--retry-failed")
    assert code == 0
    documents = list(iter_dialogues(tmp_path / "run"))
    assert len(documents) == 3 and BatchStore.open(tmp_path / "run").failed() == {}
    assert [(d.status, len(d.turns)) for d in documents] == [("complete", 1)] * 3


# --- every other fault: one line, exit 1 (generate) or a stopped batch (exit 1) -----------------

INVALID = "model server sent an invalid response: "
TOO_LARGE = INVALID + "a reply over 86,016 bytes (the max_reply_bytes setting)"
"""The default limit of a role with max_tokens 320 (the assistant): 64 KiB + 64 B a token."""

FAULTS = {
    "close-mid-reply": "did not answer",
    "error500:1000": "model server error 500",
    "hang": "did not",
    "non-json": "model server",
    "not-completion": INVALID,
    "empty-choices": INVALID + "list index out of range",
    "null-message": INVALID + "'NoneType' object has no attribute 'get'",
    "deep": INVALID,  # 100,000 nested arrays: 200 kB, over the size limit first
    "huge": INVALID + "a reply over ",
    "gzipbomb": INVALID + "a reply over ",
}


@pytest.mark.parametrize(("mode", "fragment"), FAULTS.items(), ids=list(FAULTS))
def test_generate_against_a_broken_server_exits_1_in_one_line(
    capsys, tmp_path, seed_file, mode, fragment
):
    out = tmp_path / "out.json"
    with FakeOpenAI(mode=mode) as fake:
        code, stdout, err = generate(capsys, fake, seed_file, out)
    assert code == 1
    assert "Traceback" not in stdout + err
    [line] = lines(err)
    assert line.startswith("error: ") and fragment in line
    assert not out.exists()


@pytest.mark.parametrize(("mode", "fragment"), FAULTS.items(), ids=list(FAULTS))
def test_a_batch_against_a_broken_server_stops_with_exit_1(capsys, tmp_path, mode, fragment):
    with FakeOpenAI(mode=mode) as fake:
        code, out, err = batch(capsys, fake, tmp_path, "--max-failures", 2, "--concurrency", 1)
    assert code == 1
    assert "Traceback" not in out + err
    [stopped] = [line for line in lines(out) if line.startswith("stopped: ")]
    assert stopped.startswith("stopped: 2 failures in a row, last: ") and fragment in stopped
    assert len(BatchStore.open(tmp_path / "run").failed()) == 2


def test_a_few_server_errors_are_retried_away(capsys, tmp_path, seed_file, monkeypatch):
    monkeypatch.setenv("IDEAS_MODEL__MAX_RETRIES", "2")
    out = tmp_path / "out.json"
    with FakeOpenAI(mode="error500:2") as fake:
        code, _, err = generate(capsys, fake, seed_file, out, "--turns", 1, "--critic", "novelty")
    assert (code, err) == (0, "")
    assert json.loads(out.read_text())["status"] == "complete"


def test_unknown_mode_is_refused():
    with pytest.raises(ValueError, match="unknown mode 'error500'"):
        FakeOpenAI(mode="error500")


# --- G4: a reply's size is bounded, after decompression, while it is read -------------------------


def chat_client(fake: FakeOpenAI, **settings: object) -> ChatClient:
    model = ModelSettings(model="m", timeout=30, max_retries=0, **settings)
    return ChatClient(build_chat_model(model, fake.base_url))


def ask(client: ChatClient) -> str:
    return asyncio.run(asyncio.wait_for(client.text([HumanMessage(content="Hi?")]), 60))[0]


def test_a_huge_reply_fails_the_call_as_an_invalid_response():
    with FakeOpenAI(mode="huge") as fake:
        with pytest.raises(ModelError) as caught:
            ask(chat_client(fake, max_tokens=320))
    assert str(caught.value) == TOO_LARGE
    assert len(fake.requests) == 1  # not retried: the same server would send the same


def test_the_reply_limit_is_a_setting():
    with FakeOpenAI(mode="huge", size=100_000) as fake:
        with pytest.raises(ModelError, match="a reply over 86,016 bytes"):
            ask(chat_client(fake, max_tokens=320))
        with pytest.raises(ModelError, match="a reply over 1,000 bytes"):
            ask(chat_client(fake, max_tokens=320, max_reply_bytes=1000))
        assert len(ask(chat_client(fake, max_reply_bytes=200_000))) == 100_000


def test_a_gzip_bomb_is_cut_off_while_it_inflates():
    """50 MB inflated from 50 kB; before the limit the client held it all (and sent it on)."""
    with FakeOpenAI(mode="gzipbomb", size=50_000_000) as fake:
        fake.gzip_bomb()  # compressed before measuring
        client = chat_client(fake)
        tracemalloc.start()
        try:
            with pytest.raises(ModelError) as caught:
                ask(client)
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
    assert str(caught.value) == INVALID + "a reply over 81,920 bytes (the max_reply_bytes setting)"
    assert peak < 8_000_000


@pytest.mark.parametrize("mode", ["huge", "gzipbomb"])
def test_the_sync_client_has_the_same_limit(mode):
    with FakeOpenAI(mode=mode, size=5_000_000) as fake:
        model = build_chat_model(ModelSettings(model="m", max_retries=0), fake.base_url)
        with pytest.raises(ReplyTooLarge, match="^a reply over 81,920 bytes"):
            model.invoke("Hi?")


def test_a_gzip_reply_under_the_limit_is_read():
    with FakeOpenAI(mode="gzipbomb", size=20_000) as fake:
        reply = ask(chat_client(fake))
    assert set(reply) == {"a"} and 19_000 < len(reply) < 20_000


def test_a_generate_run_with_huge_replies_keeps_nothing_and_says_why(capsys, tmp_path, seed_file):
    out = tmp_path / "out.json"
    with FakeOpenAI(mode="huge") as fake:
        code, stdout, err = generate(capsys, fake, seed_file, out, "--critic", "novelty")
    assert code == 1
    [line] = lines(err)  # the strategist's call (max_tokens 48) fails first
    assert line == f"error: {INVALID}a reply over 68,608 bytes (the max_reply_bytes setting)"
    assert not out.exists()


# --- G9: malformed 200 replies are invalid responses, in one line -------------------------------


@pytest.mark.parametrize(
    ("mode", "size", "reason"),
    [
        ("empty-choices", None, "list index out of range"),
        ("null-message", None, "'NoneType' object has no attribute 'get'"),
        ("deep", 20_000, "maximum recursion depth exceeded while decoding a JSON array"),
    ],
)
def test_a_malformed_completion_is_an_invalid_response(mode, size, reason):
    with FakeOpenAI(mode=mode, size=size) as fake:
        with pytest.raises(ModelError) as caught:
            ask(chat_client(fake))
    assert str(caught.value).startswith(INVALID + reason)


def test_a_batch_records_the_clean_reason_of_a_malformed_reply(capsys, tmp_path):
    with FakeOpenAI(mode="empty-choices") as fake:
        code, _, err = batch(capsys, fake, tmp_path, "--critic", "novelty")
    assert code == 3 and "Traceback" not in err
    failed = BatchStore.open(tmp_path / "run").failed()
    assert set(failed.values()) == {INVALID + "list index out of range"}
