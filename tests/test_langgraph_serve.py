"""The graph served by LangGraph's own server: `langgraph dev` from `langgraph.json`, the SDK.

One real server for the module (`langgraph dev --no-reload`, blocking calls refused as it does by
default), every role pointed at `tests/fake_openai.py`. Through `langgraph_sdk` a dialogue runs
to its end with its per-turn events streamed, the thread's state is read, and a person writes a
turn through `interrupt()` and `Command(resume=...)`. The server and all its children are gone
afterwards. Needs the `serve` extra (skipped without it).
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import httpx
import pytest

pytest.importorskip("langgraph_api", reason="needs the serve extra: pip install -e '.[serve]'")
langgraph_sdk = pytest.importorskip("langgraph_sdk", reason="needs the serve extra")

from graphs.deduction import build_graph  # noqa: E402
from graphs.state import Deps  # noqa: E402
from runtime.settings import SettingsError  # noqa: E402
from tests.fake_openai import FakeOpenAI  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
LANGGRAPH = Path(sys.executable).with_name("langgraph")
INPUT = json.loads((ROOT / "examples" / "langgraph_input.json").read_text(encoding="utf-8"))
STARTUP_SECONDS = 180
HUMAN = {"configurable": {"settings": {"agents": {"simulator": "human"}}}}
TURN = "Which of these steps would a booster shot repeat, and why?"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def descendants(pid: int) -> set[int]:
    """Every live process below `pid` (Linux /proc), whatever session or group it moved to."""
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            parents[int(entry.name)] = int(stat.rsplit(")", 1)[1].split()[1])
    found, frontier = set(), {pid}
    while frontier:
        frontier = {child for child, parent in parents.items() if parent in frontier} - found
        found |= frontier
    return found


def alive(pid: int) -> bool:
    try:
        state = (Path("/proc") / str(pid) / "stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def wait_healthy(process: subprocess.Popen, url: str, log: Path) -> None:
    deadline = time.monotonic() + STARTUP_SECONDS
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"langgraph dev exited ({process.returncode}):\n{log.read_text()[-3000:]}")
        try:
            if httpx.get(f"{url}/ok", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.5)  # polling a starting server, not waiting out a race
    pytest.fail(f"langgraph dev not healthy in {STARTUP_SECONDS} s:\n{log.read_text()[-3000:]}")


@pytest.fixture(scope="module")
def server(tmp_path_factory) -> Iterator[str]:
    """`langgraph dev` on a free port, roles at the fake model server; stopped with its children."""
    if not Path("/proc").is_dir():
        pytest.skip("the child-process check reads /proc (Linux)")
    workdir = tmp_path_factory.mktemp("langgraph")
    log = workdir / "server.log"
    env = {k: v for k, v in os.environ.items() if not k.upper().startswith("IDEAS_")}
    with FakeOpenAI() as fake:
        env |= {
            "PYTHONPATH": str(ROOT),  # this checkout, not another editable install
            "IDEAS_STORE": str(workdir / "store"),
            "IDEAS_LIBRARY": "starter",
            "IDEAS_MODEL__BASE_URL": fake.base_url,
            "IDEAS_MODEL__MAX_RETRIES": "0",
            "IDEAS_AGENTS__CRITIC": "novelty",  # the fake's scores would reject at random
            "LANGGRAPH_CLI_NO_ANALYTICS": "1",
            "LANGSMITH_TRACING": "false",
        }
        port = free_port()
        command = [str(LANGGRAPH), "dev", "--no-browser", "--no-reload"]
        command += ["--port", str(port), "--host", "127.0.0.1"]
        command += ["--config", str(ROOT / "langgraph.json")]
        with log.open("wb") as out:
            process = subprocess.Popen(
                command, cwd=workdir, env=env, stdout=out, stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL, start_new_session=True,
            )  # fmt: skip
        children: set[int] = set()
        try:
            url = f"http://127.0.0.1:{port}"
            wait_healthy(process, url, log)
            yield url
            children = descendants(process.pid)
        finally:
            children |= descendants(process.pid)
            os.killpg(process.pid, signal.SIGTERM)
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
        for pid in children:
            deadline = time.monotonic() + 10
            while alive(pid) and time.monotonic() < deadline:
                time.sleep(0.1)
        assert not [pid for pid in children if alive(pid)], "a child of the server outlived it"
        text = log.read_text()
        assert "BlockingError" not in text, "a blocking call ran on the event loop"
        assert "ideas: closed 2 session(s) at shutdown" in text  # plain and human settings


def run(coroutine: Any) -> Any:
    return asyncio.run(coroutine)


async def stream(client, thread_id: str, assistant: str, **kwargs) -> list[tuple[str, Any]]:
    """Stream one run; return its (event, data) parts."""
    parts = client.runs.stream(thread_id, assistant, stream_mode=["custom", "updates"], **kwargs)
    return [(part.event, part.data) async for part in parts]


def test_a_dialogue_runs_to_its_end_with_its_events_and_state(server):
    async def go():
        client = langgraph_sdk.get_client(url=server)
        thread = await client.threads.create()
        parts = await stream(client, thread["thread_id"], "ideas", input=INPUT)
        state = await client.threads.get_state(thread["thread_id"])
        return parts, state

    parts, state = run(go())
    events = [data for event, data in parts if event == "custom"]
    assert [e["turn"] for e in events if e["event"] == "turn"] == [1, 2]
    assert [e["turn"] for e in events if e["event"] == "answer"] == [1, 2]
    assert all(e["author"] == "simulator" for e in events if e["event"] == "draft")
    nodes = [next(iter(data)) for event, data in parts if event == "updates"]
    assert nodes[:4] == ["select_strategy", "draft_instruction", "critique", "respond"]
    values = state["values"]
    assert values["status"] == "complete" and state["next"] == []
    assert [t["index"] for t in values["turns"]] == [1, 2]
    assert len(values["messages"]) == len(INPUT["messages"]) + 4


def test_the_documented_sdk_example_grows_the_example_input(server):
    client = ROOT / "examples" / "langgraph_client.py"
    assert f"```python\n{client.read_text(encoding='utf-8')}```" in (
        ROOT / "docs" / "serve.md"
    ).read_text(encoding="utf-8")
    done = subprocess.run(
        [sys.executable, str(client), server], cwd=ROOT, capture_output=True, text=True,
        timeout=120, check=False,
    )  # fmt: skip

    assert done.returncode == 0, done.stderr
    printed = done.stdout.splitlines()
    assert [line.split(":")[0].strip() for line in printed[:-1]] == ["draft", "answer"] * 2
    assert printed[-1] == "status: complete turns: 2"


def test_invalid_settings_fail_the_run_with_the_cli_message(server):
    async def go():
        client = langgraph_sdk.get_client(url=server)
        bad = {"configurable": {"settings": {"agents": {"simulator": "nobody"}}}}
        assistant = await client.assistants.create("ideas", config=bad)
        thread = await client.threads.create()
        return await stream(client, thread["thread_id"], assistant["assistant_id"], input=INPUT)

    errors = [data for event, data in run(go()) if event == "error"]
    assert len(errors) == 1
    assert "invalid setting agents.simulator: unknown simulator 'nobody'" in str(errors[0])


def questions(parts: list[tuple[str, Any]]) -> list[dict[str, Any]]:
    """The values of the interrupts a run paused on."""
    pauses = [data["__interrupt__"] for _, data in parts if "__interrupt__" in data]
    return [i["value"] for pause in pauses for i in pause]


def test_a_person_writes_a_turn_and_takes_a_draft_through_interrupt_and_resume(server):
    async def go():
        client = langgraph_sdk.get_client(url=server)
        assistant = await client.assistants.create("ideas", config=HUMAN)
        thread = await client.threads.create()
        ids = thread["thread_id"], assistant["assistant_id"]
        first = await stream(client, *ids, input=INPUT)
        paused = await client.threads.get_state(thread["thread_id"])
        second = await stream(client, *ids, command={"resume": TURN})
        third = await stream(client, *ids, command={"resume": ""})  # take the drafted turn
        done = await client.threads.get_state(thread["thread_id"])
        return first, paused, second, third, done

    first, paused, second, third, done = run(go())
    (question,) = questions(first)
    assert question["strategy"] and len(question["candidates"]) > 1
    assert question["strategy"] in question["candidates"] and question["draft"]
    assert paused["next"] == ["draft_instruction"] and paused["values"]["status"] == "running"
    assert paused["interrupts"][0]["value"] == question

    drafts = [data for event, data in second if event == "custom" and data["event"] == "draft"]
    assert drafts == [{"event": "draft", "attempt": 1, "text": TURN, "author": "human"}]
    (next_question,) = questions(second)
    assert questions(third) == []
    assert done["values"]["status"] == "complete" and done["next"] == []
    typed, taken = done["values"]["turns"]
    assert typed["instruction"] == TURN
    assert taken["instruction"] == next_question["draft"]  # the draft shown, not a redraft
    for turn in (typed, taken):
        assert turn["critic"]["author"] == "human" and turn["critic"]["accepted"]
        assert turn["usage"]["simulator"]["calls"] == 1


# --- the factory itself (no server) ---------------------------------------------------------


SETTINGS = {
    "model": {"base_url": "http://127.0.0.1:9/v1"},  # nothing is sent: no run here
    "agents": {"strategist": "none", "simulator": "plain", "critic": "novelty"},
}


@pytest.fixture
def sessions(monkeypatch):
    """`wiring.serve` with no session open; records the deps it binds and the sessions it closes."""
    import wiring.serve as serve
    from wiring.session import Session

    for name in list(os.environ):
        if name.upper().startswith("IDEAS_"):
            monkeypatch.delenv(name)
    closed: list[Session] = []
    bound: list[Deps | None] = []
    build = serve.build_served_graph
    monkeypatch.setattr(Session, "close", lambda self: closed.append(self))
    monkeypatch.setattr(serve, "SESSIONS", serve.Sessions())
    monkeypatch.setattr(serve, "build_served_graph", lambda deps: bound.append(deps) or build(deps))
    return serve, closed, bound


def factory(sessions, settings: dict, execution: bool) -> tuple[Any, Deps | None]:
    """Call the factory as the server does; return the graph and the deps bound into it."""
    serve, _, bound = sessions
    config = {"configurable": {"settings": settings}}
    runtime = SimpleNamespace(execution_runtime=object() if execution else None)

    async def enter():
        async with serve.make_graph(config, runtime) as graph:
            return graph

    return asyncio.run(enter()), bound[-1]


def test_reads_get_the_bare_graph_and_open_nothing(sessions):
    serve, _, _ = sessions
    graph, deps = factory(sessions, SETTINGS, execution=False)

    assert deps is None and serve.SESSIONS._open == {}
    assert graph.get_graph().draw_mermaid() == build_graph().get_graph().draw_mermaid()


def test_runs_with_equal_settings_share_a_session_closed_at_shutdown(sessions):
    serve, closed, _ = sessions
    _, first = factory(sessions, SETTINGS, execution=True)
    _, again = factory(sessions, json.loads(json.dumps(SETTINGS)), execution=True)
    _, other = factory(sessions, {**SETTINGS, "max_rejections": 2}, execution=True)

    assert first is again and other is not first and other.max_rejections == 2
    assert type(first.agents.simulator).__name__ == "PlainSimulator" and closed == []

    async def serve_and_stop():
        async with serve.lifespan(serve.app):
            pass

    asyncio.run(serve_and_stop())
    assert len(closed) == 2 and serve.SESSIONS._open == {}


def test_bad_settings_fail_the_run_with_one_line(sessions):
    with pytest.raises(SettingsError, match="invalid setting agents.simulator"):
        factory(sessions, {"agents": {"simulator": "nobody"}}, execution=True)
    with pytest.raises(SettingsError, match="must be an object"):
        factory(sessions, "turns=2", execution=True)
