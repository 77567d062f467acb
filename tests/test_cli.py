"""The CLI contract: exit codes, one-line errors, no stray output files, the live trace.

Nothing here starts the embedded llama.cpp server: model traffic goes to scripted fakes injected
into the Session, to a closed port, or to a tiny in-process HTTP server.
"""

from __future__ import annotations

import http.server
import io
import json
import os
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console

import cli.generate as generate_module
from cli.main import main
from cli.tracer import Tracer
from dialogues.models import GENERATION_ROLES, Candidate, Scores, StrategyRef
from graphs.events import (
    AnswerEvent,
    DraftEvent,
    EndedEvent,
    SelectionEvent,
    TurnEvent,
    VerdictEvent,
)
from tests.cli_helpers import SEED, isolate_cli, lines, run_cli, write_seed
from tests.fakes import ScriptedChatModel, text_reply, tool_reply

REPO = Path(__file__).resolve().parents[1]
SECRET = "sk-test-secret-0123456789"


# --- fixtures and helpers ------------------------------------------------------------------------


def _clean_environ(environ: dict[str, str]) -> dict[str, str]:
    """Drop settings and terminal variables of the developer's shell."""
    drop = {"COLUMNS", "LINES", "FORCE_COLOR", "TTY_COMPATIBLE", "TTY_INTERACTIVE"}
    return {
        k: v for k, v in environ.items() if not k.upper().startswith("IDEAS_") and k not in drop
    }


@pytest.fixture(autouse=True)
def cli_env(monkeypatch, tmp_path):
    isolate_cli(monkeypatch, tmp_path / "store")


@pytest.fixture
def seed_file(tmp_path) -> Path:
    return write_seed(tmp_path)


@pytest.fixture
def out(tmp_path) -> Path:
    return tmp_path / "result" / "out.json"


def assert_one_line_error(err: str, *fragments: str) -> None:
    assert "Traceback" not in err
    (line,) = lines(err)
    assert line.startswith("error: ")
    for fragment in fragments:
        assert fragment in line


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def run_py(*argv: Any, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "run.py", *map(str, argv)],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.fixture
def sub_env(tmp_path) -> dict[str, str]:
    env = _clean_environ(dict(os.environ))
    env["IDEAS_STORE"] = str(tmp_path / "store")
    return env


class ChatModels:
    """Scripted chat models injected into the CLI's Session, one per role."""

    def __init__(self, monkeypatch, **scripts: list) -> None:
        self.models: dict[str, ScriptedChatModel] = {
            role: ScriptedChatModel(script=script) for role, script in scripts.items()
        }
        real = generate_module.Session
        monkeypatch.setattr(
            generate_module, "Session", lambda settings: real(settings, chat_models=self.models)
        )

    def add(self, role: str, model: ScriptedChatModel) -> None:
        self.models[role] = model

    def assert_all_used(self) -> None:
        for role, model in self.models.items():
            assert model.unused == 0, f"{role}: {model.unused} scripted replies unused"


def good_verdict():
    return tool_reply(
        "CriticScores", correct=True, coherent=True, depth=4, insight=4, feedback="Fine."
    )


def bad_verdict():
    return tool_reply(
        "CriticScores", correct=False, coherent=True, depth=2, insight=2, feedback="Go deeper."
    )


QUESTIONS = [
    "Which cells remember the antigen, and for how long?",
    "Could you compare mRNA vaccines with inactivated ones in a table?",
    "Why do some vaccines need boosters while others last for life?",
]


# --- bad input: exit 2, one line on stderr, nothing written --------------------------------------


@pytest.mark.parametrize(
    ("content", "fragment"),
    [
        (None, "file not found"),
        ("{bad json", "invalid JSON at line 1"),
        ('{"foo": 1}', "not a seed"),
        ('[{"role": "robot", "content": "hi"}]', "message 1 has role 'robot'"),
        ("", "the seed is empty"),
        ("[]", "the seed is empty"),
    ],
    ids=["missing", "invalid-json", "wrong-shape", "bad-role", "empty-file", "empty-list"],
)
def test_bad_seed_exits_2_with_one_line(capsys, tmp_path, out, content, fragment):
    seed = tmp_path / "seed.json"
    if content is not None:
        seed.write_text(content, encoding="utf-8")
    code, stdout, err = run_cli(capsys, "--seed", seed, "--out", out, "--base-url", "http://unused")

    assert code == 2
    assert_one_line_error(err, str(seed), fragment)
    assert stdout == ""
    assert not out.exists() and not out.parent.exists()


def test_out_is_an_existing_directory(capsys, seed_file, tmp_path):
    target = tmp_path / "existing"
    target.mkdir()
    code, _, err = run_cli(
        capsys, "--seed", seed_file, "--out", target, "--base-url", "http://unused"
    )

    assert code == 2
    assert_one_line_error(err, str(target), "is a directory")
    assert list(target.iterdir()) == []


def test_out_below_a_file(capsys, seed_file, tmp_path):
    blocker = tmp_path / "file.txt"
    blocker.write_text("x", encoding="utf-8")
    code, _, err = run_cli(
        capsys, "--seed", seed_file, "--out", blocker / "out.json", "--base-url", "http://unused"
    )
    assert code == 2
    assert_one_line_error(err, "a file is in the way")
    assert blocker.read_text(encoding="utf-8") == "x"


def test_missing_gguf_exits_2(capsys, seed_file, out, tmp_path):
    gguf = tmp_path / "nope.gguf"
    code, _, err = run_cli(capsys, "--seed", seed_file, "--out", out, "--gguf", gguf)
    assert code == 2
    assert_one_line_error(err, str(gguf), "GGUF model not found")
    assert not out.exists()


def test_port_in_use_exits_2(capsys, seed_file, out):
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        port = sock.getsockname()[1]
        code, _, err = run_cli(capsys, "--seed", seed_file, "--out", out, "--port", port)
    assert code == 2
    assert_one_line_error(err, f"port {port} is already in use")
    assert not out.exists()


def test_missing_config_file_exits_2(capsys, seed_file, tmp_path, out):
    config = tmp_path / "nope.toml"
    code, _, err = run_cli(capsys, "--seed", seed_file, "--out", out, "--config", config)
    assert code == 2
    assert_one_line_error(err, str(config), "config file not found")
    assert not out.exists()


def test_invalid_toml_exits_2(capsys, seed_file, tmp_path, out, monkeypatch):
    config = tmp_path / "bad.toml"
    config.write_text("turns = = 3\n[model\n", encoding="utf-8")
    monkeypatch.setenv("IDEAS_CONFIG", str(config))  # the environment's way to name it
    code, _, err = run_cli(capsys, "--seed", seed_file, "--out", out)
    assert code == 2
    assert_one_line_error(err, "invalid TOML")
    assert not out.exists()


@pytest.mark.parametrize(
    ("name", "value", "fragment"),
    [
        ("IDEAS_TURNS", "abc", "invalid setting turns"),
        ("IDEAS_CRITIC__TEMPERATURE", "hot", "invalid setting critic.temperature"),
        ("IDEAS_TOP_K", "0", "invalid setting top_k"),
    ],
)
def test_bad_env_value_exits_2(capsys, seed_file, out, monkeypatch, name, value, fragment):
    monkeypatch.setenv(name, value)
    code, _, err = run_cli(capsys, "--seed", seed_file, "--out", out, "--base-url", "http://unused")
    assert code == 2
    assert_one_line_error(err, fragment)
    assert not out.exists()


def test_unparseable_nested_env_value_exits_2(capsys, seed_file, out, monkeypatch):
    monkeypatch.setenv("IDEAS_MODEL", "not-json")
    code, _, err = run_cli(capsys, "--seed", seed_file, "--out", out, "--base-url", "http://unused")
    assert code == 2
    assert_one_line_error(err, "model")


def test_bad_cli_value_exits_2(capsys, seed_file):
    code, _, err = run_cli(
        capsys, "--seed", seed_file, "--turns", "0", "--base-url", "http://unused"
    )
    assert code == 2
    assert_one_line_error(err, "invalid setting turns")


@pytest.mark.parametrize(
    ("argv", "fragment"),
    [
        (["--critic", "psychic"], "invalid choice: 'psychic'"),
        (["--turns", "many"], "invalid int value"),
        (["--quiet", "--verbose"], "not allowed with argument"),
    ],
)
def test_argparse_errors_exit_2(capsys, seed_file, argv, fragment):
    with pytest.raises(SystemExit) as info:
        main(["--seed", str(seed_file), *argv])
    assert info.value.code == 2
    assert fragment in capsys.readouterr().err


def test_missing_seed_argument_exits_2(capsys):
    with pytest.raises(SystemExit) as info:
        main([])
    assert info.value.code == 2
    assert "--seed" in capsys.readouterr().err


def test_subprocess_missing_seed_exits_2_without_traceback(sub_env, tmp_path):
    out = tmp_path / "out.json"
    result = run_py("--seed", "missing.json", "--out", out, env=sub_env)

    assert result.returncode == 2
    assert result.stdout == ""
    assert "Traceback" not in result.stderr
    assert lines(result.stderr) == ["error: missing.json: file not found"]
    assert not out.exists()


def test_subprocess_long_error_stays_on_one_line(sub_env, seed_file):
    sub_env["IDEAS_TURNS"] = "abc"
    result = run_py("--seed", seed_file, "--base-url", "http://unused", env=sub_env)
    assert result.returncode == 2
    assert len(lines(result.stderr)) == 1


# --- model server failures -----------------------------------------------------------------------


def test_subprocess_model_server_not_answering_exits_1(sub_env, seed_file, tmp_path):
    out = tmp_path / "out.json"
    sub_env["IDEAS_MODEL__MAX_RETRIES"] = "0"
    sub_env["COLUMNS"] = "1000"
    base_url = f"http://127.0.0.1:{closed_port()}/v1"
    result = run_py(
        "--seed", seed_file, "--turns", 1, "--out", out, "--base-url", base_url, env=sub_env
    )

    assert result.returncode == 1
    both = result.stdout + result.stderr
    assert "Traceback" not in both
    mentions = [line for line in lines(both) if "model server" in line]
    assert len(mentions) == 1
    assert "did not answer" in mentions[0]
    assert not out.exists()  # nothing was generated


class BadServer:
    """A threaded HTTP server answering every POST with 200 and a fixed body."""

    def __init__(self, body: str, content_type: str) -> None:
        payload = body.encode()

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - the http.server API
                self.rfile.read(int(self.headers.get("content-length", 0)))
                self.send_response(200)
                self.send_header("content-type", content_type)
                self.send_header("content-length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(
            target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/v1"

    def __enter__(self) -> BadServer:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()


INVALID_OUTPUT_BUG = (
    "BUG: a model server answering HTTP 200 with a body that is not a chat completion makes "
    "langchain-openai raise ValueError/TypeError/JSONDecodeError, which ChatClient._invoke does "
    "not turn into ModelError, so the CLI crashes with a traceback"
)


@pytest.fixture(
    params=[
        ("not json", "text/plain"),
        ("not json", "application/json"),
        ('{"foo": 1}', "application/json"),
    ],
    ids=["text", "broken-json", "wrong-json"],
)
def bad_server(request) -> Iterator[BadServer]:
    with BadServer(*request.param) as server:
        yield server


def test_invalid_model_output_is_one_line_not_a_traceback(
    capsys, monkeypatch, seed_file, out, bad_server
):
    monkeypatch.setenv("IDEAS_MODEL__MAX_RETRIES", "0")
    code, stdout, err = run_cli(
        capsys, "--seed", seed_file, "--turns", 1, "--out", out, "--base-url", bad_server.base_url
    )
    assert code != 0
    assert "Traceback" not in stdout + err
    assert [line for line in lines(err)] == [lines(err)[0]]
    assert lines(err)[0].startswith("error: model server sent an invalid response")
    assert not out.exists()


def test_subprocess_invalid_model_output_has_no_traceback(sub_env, seed_file, tmp_path):
    out = tmp_path / "out.json"
    sub_env["IDEAS_MODEL__MAX_RETRIES"] = "0"
    with BadServer("not json", "text/plain") as server:
        result = run_py(
            "--seed",
            seed_file,
            "--turns",
            1,
            "--out",
            out,
            "--base-url",
            server.base_url,
            env=sub_env,
        )
    assert "Traceback" not in result.stdout + result.stderr
    assert result.returncode in (1, 2)
    assert not out.exists()


# --- successful runs with scripted models --------------------------------------------------------


def test_happy_path_writes_a_complete_dialogue(capsys, monkeypatch, seed_file, out):
    monkeypatch.setenv("IDEAS_MODEL__API_KEY", SECRET)
    monkeypatch.setenv("IDEAS_CRITIC__API_KEY", SECRET + "-critic")
    chats = ChatModels(
        monkeypatch,
        strategist=[tool_reply("StrategyChoice", choice="1") for _ in range(2)],
        simulator=[text_reply(q) for q in QUESTIONS[:2]],
        critic=[good_verdict() for _ in range(2)],
        assistant=[text_reply("Memory B and T cells, for decades."), text_reply("| mRNA | ... |")],
    )
    code, stdout, err = run_cli(
        capsys, "--seed", seed_file, "--turns", 2, "--out", out, "--base-url", "http://unused"
    )

    assert code == 0, err
    assert err == ""
    chats.assert_all_used()
    text = out.read_text(encoding="utf-8")
    assert SECRET not in text and "api_key" not in text
    doc = json.loads(text)
    assert doc["status"] == "complete" and doc["reason"] is None
    assert doc["format"] == "ideas-dialogue/1"
    roles = [m["role"] for m in doc["messages"]]
    assert roles == ["user", "assistant"] * 3
    assert [m["content"] for m in doc["messages"][:2]] == [m["content"] for m in SEED]
    assert [m["content"] for m in doc["messages"][2::2]] == QUESTIONS[:2]
    assert len(doc["turns"]) == 2
    for index, turn in enumerate(doc["turns"], 1):
        assert {"candidates", "strategy", "drafts", "critic", "usage"} <= set(turn)
        assert turn["index"] == index
        assert turn["candidates"] and turn["strategy"]["id"] == turn["candidates"][0]["id"]
        assert turn["critic"]["accepted"] is True and turn["critic"]["scores"]["depth"] == 4
        assert set(turn["usage"]) == set(GENERATION_ROLES)
    assert doc["turns"][0]["strategy"]["id"] != doc["turns"][1]["strategy"]["id"]
    assert doc["summary"]["turns"] == 2 and doc["summary"]["llm_calls"] == 8
    assert doc["settings"]["turns"] == 2
    assert doc["settings"]["agents"]["critic"] == "llm"  # auto, with a server for the critic
    assert doc["settings"]["model"]["base_url"] == "http://unused"
    assert doc["library"]["name"] == "default" and doc["library"]["induced"] is True
    assert doc["library"]["counts"]["high"] > 0
    assert doc["seed"]["source"] == str(seed_file)

    assert "turn 1 of 2" in stdout and "turn 2 of 2" in stdout
    assert "candidate strategies" in stdout
    assert QUESTIONS[0] in stdout
    (summary,) = [line for line in lines(stdout) if line.startswith("done: ")]
    assert summary.startswith("done: complete  turns 2/2, rejections 0, LLM calls 8")
    assert f"wrote {out}" in stdout


def test_quiet_prints_only_the_summary(capsys, monkeypatch, seed_file):
    ChatModels(
        monkeypatch,
        simulator=[text_reply(QUESTIONS[0])],
        assistant=[text_reply("Memory cells.")],
    )
    code, stdout, _ = run_cli(
        capsys,
        "--seed", seed_file, "--turns", 1, "--quiet", "--base-url", "http://unused",
        "--strategist", "random", "--critic", "novelty",
    )  # fmt: skip
    assert code == 0
    assert "turn 1 of 1" not in stdout and QUESTIONS[0] not in stdout
    assert lines(stdout)[-1].startswith("done: complete  turns 1/1")
    assert "wrote" not in stdout  # no --out


def test_auto_critic_on_the_bundled_model_shows_a_notice(capsys, monkeypatch, seed_file, out):
    # Every role is injected, so the embedded server is never needed despite no --base-url.
    ChatModels(
        monkeypatch,
        strategist=[tool_reply("StrategyChoice", choice="1")],
        simulator=[text_reply(QUESTIONS[0])],
        assistant=[text_reply("Memory cells.")],
    )
    code, stdout, _ = run_cli(capsys, "--seed", seed_file, "--turns", 1, "--out", out)
    assert code == 0
    assert "note: critic: novelty check only" in stdout
    doc = json.loads(out.read_text(encoding="utf-8"))
    assert doc["settings"]["agents"]["critic"] == "novelty"
    assert doc["turns"][0]["critic"]["reason"] == "novel"


def test_too_many_rejections_end_early_with_exit_0(capsys, monkeypatch, seed_file, out):
    chats = ChatModels(
        monkeypatch,
        strategist=[tool_reply("StrategyChoice", choice="1") for _ in range(2)],
        simulator=[text_reply(q) for q in QUESTIONS],
        critic=[good_verdict(), bad_verdict(), bad_verdict()],
        assistant=[text_reply("Memory B and T cells, for decades.")],
    )
    code, stdout, _ = run_cli(
        capsys,
        "--seed", seed_file, "--turns", 3, "--out", out, "--base-url", "http://unused",
        "--critic", "llm", "--max-rejections", 2,
    )  # fmt: skip

    assert code == 0
    chats.assert_all_used()
    doc = json.loads(out.read_text(encoding="utf-8"))
    assert doc["status"] == "ended_early"
    assert doc["reason"] == "2 drafts rejected in a row at turn 2"
    assert len(doc["turns"]) == 1 and len(doc["messages"]) == 4
    assert doc["summary"]["rejections"] == 2
    assert "ended early: 2 drafts rejected in a row at turn 2" in stdout
    assert "done: ended_early (2 drafts rejected in a row at turn 2)" in stdout


def test_the_user_ends_the_conversation_before_the_cap(capsys, monkeypatch, seed_file, out):
    chats = ChatModels(
        monkeypatch,
        strategist=[tool_reply("StrategyChoice", choice="1") for _ in range(2)],
        simulator=[text_reply(QUESTIONS[0]), text_reply("<|endconversation|>")],
        critic=[good_verdict()],
        assistant=[text_reply("Memory B and T cells, for decades.")],
    )
    code, stdout, _ = run_cli(
        capsys,
        "--seed", seed_file, "--turns", 5, "--out", out, "--base-url", "http://unused",
        "--critic", "llm", "--min-turns", 1,
    )  # fmt: skip

    assert code == 0
    chats.assert_all_used()  # the critic was asked about the question only
    doc = json.loads(out.read_text(encoding="utf-8"))
    assert (doc["status"], doc["reason"]) == (
        "ended_by_user",
        "the user ended the conversation instead of turn 2",
    )
    assert len(doc["turns"]) == 1 and doc["unfinished_turn"]["drafts"][-1]["ending"] is True
    assert (doc["settings"]["min_turns"], doc["settings"]["ending"]) == (1, "learned")
    assert "the user ended the conversation (turn 2 not taken)" in stdout
    assert "done: ended_by_user (the user ended the conversation instead of turn 2)" in stdout


# --- Ctrl-C --------------------------------------------------------------------------------------


class InterruptingModel(ScriptedChatModel):
    """Answers from the script, but its `interrupt_at`-th call raises KeyboardInterrupt."""

    interrupt_at: int = 1

    def _check(self, messages) -> None:
        if len(self.prompts) + 1 == self.interrupt_at:
            self.prompts.append(list(messages))
            raise KeyboardInterrupt

    def _generate(self, messages, *args, **kwargs):
        self._check(messages)
        return super()._generate(messages, *args, **kwargs)

    async def _agenerate(self, messages, *args, **kwargs):
        # Raised on the event loop's thread, where a real Ctrl-C lands.
        self._check(messages)
        return super()._generate(messages, *args, **kwargs)


def test_ctrl_c_at_turn_2_keeps_turn_1(capsys, monkeypatch, seed_file, out):
    chats = ChatModels(
        monkeypatch,
        simulator=[text_reply(QUESTIONS[0])],
        critic=[good_verdict()],
        assistant=[text_reply("Memory B and T cells, for decades.")],
    )
    strategist = InterruptingModel(
        script=[tool_reply("StrategyChoice", choice="1")], interrupt_at=2
    )
    chats.add("strategist", strategist)
    code, stdout, _ = run_cli(
        capsys, "--seed", seed_file, "--turns", 3, "--out", out, "--base-url", "http://unused"
    )

    assert code == 130
    assert len(strategist.prompts) == 2  # the interrupt came from turn 2's call
    doc = json.loads(out.read_text(encoding="utf-8"))
    assert doc["status"] == "interrupted"
    assert "Ctrl-C" in doc["reason"]
    assert [t["index"] for t in doc["turns"]] == [1]
    assert [m["role"] for m in doc["messages"]] == ["user", "assistant"] * 2
    assert doc["messages"][2]["content"] == QUESTIONS[0]
    assert "done: interrupted" in stdout


def test_ctrl_c_before_generation_writes_nothing(capsys, monkeypatch, seed_file, out):
    def interrupted(settings):
        raise KeyboardInterrupt

    monkeypatch.setattr(generate_module, "Session", interrupted)
    code, _, err = run_cli(capsys, "--seed", seed_file, "--out", out, "--base-url", "http://unused")
    assert code == 130
    assert lines(err) == ["interrupted before anything was generated"]
    assert not out.exists()


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGHUP], ids=["SIGTERM", "SIGHUP"])
def test_a_termination_signal_keeps_what_was_generated(tmp_path, seed_file, out, signum):
    """`timeout`, `kill`, `docker stop` or a closed terminal stop a run the way Ctrl-C does."""
    from tests.fake_openai import FakeOpenAI

    requests, enough = [], threading.Event()

    def count(body: dict) -> bool:
        requests.append(body)
        if len(requests) >= 5:  # turn 1 is answered (strategist, simulator, assistant, ...)
            enough.set()
        return False

    with FakeOpenAI(latency=0.2, fail=count) as fake:
        argv = ["--seed", seed_file, "--turns", "30", "--out", out, "--critic", "novelty"]
        argv += ["--base-url", fake.base_url, "--library", "starter", "--quiet"]
        env = _clean_environ(os.environ) | {"IDEAS_STORE": str(tmp_path / "store")}
        process = subprocess.Popen(
            [sys.executable, "run.py", *map(str, argv)],
            cwd=REPO,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            assert enough.wait(60), "the run never got going"
            process.send_signal(signum)
            _, stderr = process.communicate(timeout=60)
        finally:
            process.kill()
    assert process.returncode == 128 + signum, stderr
    doc = json.loads(out.read_text(encoding="utf-8"))
    assert doc["status"] == "interrupted" and doc["reason"] == signal.Signals(signum).name
    assert len(doc["turns"]) >= 1
    assert "Traceback" not in stderr


def test_an_empty_simulator_adapter_is_an_error_not_the_default(capsys, seed_file):
    code, _, err = run_cli(capsys, "--seed", seed_file, "--simulator-adapter", "")
    assert code == 2
    assert lines(err) == [
        "error: invalid setting simulator.adapter: an adapter is `trained`, `none`, a folder or "
        "a served name, not empty"
    ]


# --- the tracer ----------------------------------------------------------------------------------

MARKUP = "[/bold] [red]x[/red]"


def recording_tracer(verbosity: str = "verbose") -> tuple[Tracer, Console]:
    console = Console(record=True, width=200, file=io.StringIO(), color_system=None)
    return Tracer(console, verbosity), console


def test_model_text_with_rich_markup_is_printed_literally():
    tracer, console = recording_tracer()
    candidate = Candidate(id="s1", text=MARKUP, score=0.5, rank=0)
    tracer.seed([{"role": "user", "content": MARKUP}], "seed.json")
    tracer.notice(MARKUP)
    tracer.event(TurnEvent(turn=1, of=1))
    tracer.event(
        SelectionEvent(
            candidates=[candidate],
            strategy=StrategyRef(id="s1", text=MARKUP),
            method="llm",
            note=MARKUP,
        )
    )
    tracer.event(DraftEvent(attempt=1, text=MARKUP))
    tracer.event(
        VerdictEvent(
            accepted=False,
            reason=MARKUP,
            similarity=0.1,
            scores=Scores(correct=True, coherent=True, depth=1, insight=1, feedback=MARKUP),
        )
    )
    tracer.event(AnswerEvent(turn=1, text=MARKUP))
    tracer.event(EndedEvent(reason=MARKUP))

    text = console.export_text()
    assert text.count(MARKUP) == 10


@pytest.mark.parametrize("source", ["seed[red].json", "seed[/bold].json"])
def test_seed_path_with_brackets_is_printed_literally(source):
    tracer, console = recording_tracer()
    tracer.seed([{"role": "user", "content": "hi"}], source)
    assert f"seed {source}" in console.export_text()


def test_quiet_tracer_prints_no_events_but_notices():
    tracer, console = recording_tracer("quiet")
    tracer.event(DraftEvent(attempt=1, text="hidden draft"))
    tracer.seed([{"role": "user", "content": "hidden seed"}], "seed.json")
    tracer.notice("shown")
    text = console.export_text()
    assert "hidden" not in text and "note: shown" in text


def test_long_texts_are_clipped_unless_verbose():
    long = "word " * 400
    normal, normal_console = recording_tracer("normal")
    verbose, verbose_console = recording_tracer("verbose")
    for tracer in (normal, verbose):
        tracer.event(AnswerEvent(turn=1, text=long.strip() + " END"))
    normal_text, verbose_text = normal_console.export_text(), verbose_console.export_text()
    assert "END" not in normal_text and " ..." in normal_text
    assert "END" in verbose_text
