"""Bad input and hostile values to every subcommand: one line, the right exit code, nothing lost.

The cases come from the reliability findings (F7-F20 of docs/RELIABILITY-FINDINGS.md in the
shared docs). Nothing here starts the embedded llama.cpp server: model traffic goes to the repo's
fake OpenAI server or to a closed port.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from cli.main import main
from tests.fake_openai import FakeOpenAI
from wiring.session import Session

ROOT = Path(__file__).resolve().parents[1]
TEAM = ROOT / "induction" / "data" / "team_extractions.jsonl"
SEED = [{"role": "user", "content": "How do vaccines train the immune system?"}]
DIALOGUE = [
    {
        "conversations": [
            {"from": "human", "value": "What is a thread?"},
            {"from": "gpt", "value": "A unit of execution inside a process."},
            {"from": "human", "value": "How does it differ from a process?"},
            {"from": "gpt", "value": "Threads share memory; processes do not."},
        ]
    }
]


@pytest.fixture(autouse=True)
def cli_env(monkeypatch, tmp_path):
    for name in list(os.environ):
        if name.upper().startswith("IDEAS_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("IDEAS_STORE", str(tmp_path / "store"))
    monkeypatch.setenv("COLUMNS", "1000")

    def refuse(self, model):
        raise AssertionError("a test tried to start the embedded llama.cpp server")

    monkeypatch.setattr(Session, "embedded_url", refuse)


def run_cli(capsys, *argv: Any) -> tuple[int, str, str]:
    code = main([str(a) for a in argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def one_line(err: str) -> str:
    assert "Traceback" not in err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    assert lines[0].startswith("error: ")
    return lines[0]


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def files_under(path: Path) -> list[Path]:
    return sorted(p for p in path.rglob("*") if p.is_file()) if path.exists() else []


@pytest.fixture
def seed_file(tmp_path) -> Path:
    path = tmp_path / "seed.json"
    path.write_text(json.dumps(SEED), encoding="utf-8")
    return path


@pytest.fixture
def questions(tmp_path) -> Path:
    path = tmp_path / "q.txt"
    path.write_text("What is a thread?\nWhy is the sky blue?\nHow do tides work?\n")
    return path


@pytest.fixture
def dialogues(tmp_path) -> Path:
    path = tmp_path / "dialogues.json"
    path.write_text(json.dumps(DIALOGUE), encoding="utf-8")
    return path


@pytest.fixture
def deep(tmp_path) -> Path:
    path = tmp_path / "deep.json"
    path.write_text("[" * 100_000 + "]" * 100_000, encoding="utf-8")
    return path


# --- F9, F19: configuration, store, Chroma, library names, URLs --------------------------------

UNUSED = "http://127.0.0.1:9/v1"


@pytest.mark.parametrize(
    ("argv", "env", "code", "fragment"),
    [
        (["--chroma-url", "http://127.0.0.1:{closed}"], {}, 1, "Chroma server"),
        (["--chroma-url", "http://127.0.0.1:99999"], {}, 2, "invalid setting chroma_url"),
        (["--chroma-url", "not a url"], {}, 2, "invalid setting chroma_url"),
        (["--library", "../../etc"], {}, 2, "invalid library name"),
        (["--library", ""], {}, 2, "invalid library name"),
        (["--library", "[/x]"], {}, 2, "invalid library name '[/x]'"),
        (["--store", "{file}"], {}, 2, "the store must be a directory"),
        (["--store", "{file}/below"], {}, 2, "cannot open the store"),
        ([], {"IDEAS_AGENTS__CRITIC": "bogus"}, 2, "unknown critic 'bogus'"),
        ([], {"IDEAS_AGENTS__STRATEGIST": "bogus"}, 2, "unknown strategist 'bogus'"),
        ([], {"IDEAS_CRITIC__BOGUS": "1"}, 2, "invalid setting critic.bogus"),
        (["--base-url", "http://127.0.0.1:99999/v1"], {}, 2, "Port out of range"),
        (["--base-url", ""], {}, 2, "empty URL"),
        (["--base-url", "ftp://host/v1"], {}, 2, "not an http:// or https:// URL"),
        ([], {"IDEAS_ASSISTANT__BASE_URL": "http://"}, 2, "has no host"),
    ],
    ids=[
        "chroma-unreachable",
        "chroma-port",
        "chroma-not-url",
        "library-dots",
        "library-empty",
        "library-markup",
        "store-is-file",
        "store-below-file",
        "agent-critic",
        "agent-strategist",
        "role-field-typo",
        "base-url-port",
        "base-url-empty",
        "base-url-scheme",
        "role-url-no-host",
    ],
)
def test_generate_configuration_errors_are_one_line(
    capsys, monkeypatch, tmp_path, seed_file, argv, env, code, fragment
):
    blocker = tmp_path / "file.txt"
    blocker.write_text("x")
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    argv = [a.format(closed=closed_port(), file=blocker) for a in argv]
    if "--base-url" not in argv:
        argv += ["--base-url", UNUSED]
    out = tmp_path / "out" / "o.json"
    got, _, err = run_cli(capsys, "--seed", seed_file, "--out", out, "--turns", 1, *argv)
    assert (got, fragment in one_line(err)) == (code, True), err
    assert not out.exists()


def test_a_server_that_is_not_chroma_is_exit_1(capsys, seed_file):
    with FakeOpenAI() as fake:
        url = fake.base_url.removesuffix("/v1")
        code, _, err = run_cli(capsys, "--seed", seed_file, "--chroma-url", url)
    assert code == 1
    assert "Chroma server" in one_line(err)


@pytest.mark.parametrize(
    ("argv", "fragment"),
    [
        (["search", "x", "--library", "../../etc"], "invalid library name"),
        (["list", "--store", "{file}"], "the store must be a directory"),
        (["list", "--chroma-url", "http://127.0.0.1:99999"], "invalid setting chroma_url"),
    ],
)
def test_strategies_configuration_errors_are_one_line(capsys, tmp_path, argv, fragment):
    blocker = tmp_path / "file.txt"
    blocker.write_text("x")
    code, _, err = run_cli(capsys, "strategies", *[a.format(file=blocker) for a in argv])
    assert code == 2
    assert fragment in one_line(err)


def test_batch_out_below_a_file_is_refused_before_anything(capsys, tmp_path, questions):
    blocker = tmp_path / "file.txt"
    blocker.write_text("x")
    argv = ["batch", "--seeds", questions, "--out", blocker / "run", "--base-url", UNUSED]
    code, _, err = run_cli(capsys, *argv)
    assert code == 2
    assert "is a file" in one_line(err)


def test_batch_out_not_writable_is_refused(capsys, tmp_path, questions, monkeypatch):
    parent = tmp_path / "readonly"
    parent.mkdir()
    real = os.access
    monkeypatch.setattr(os, "access", lambda p, mode: Path(p) != parent and real(p, mode))
    argv = ["batch", "--seeds", questions, "--out", parent / "run", "--base-url", UNUSED]
    code, _, err = run_cli(capsys, *argv)
    assert code == 2
    assert "is not writable" in one_line(err)
    assert list(parent.iterdir()) == []


def test_ablate_out_an_existing_file_is_refused(capsys, tmp_path, questions):
    target = tmp_path / "report"
    target.write_text("mine")
    argv = ["ablate", "--seeds", questions, "--out", target, "--base-url", UNUSED, "--n", 1]
    code, _, err = run_cli(capsys, *argv)
    assert code == 2
    assert "exists and is not a directory" in one_line(err)
    assert target.read_text() == "mine"


def test_eval_reference_a_directory_is_one_line(capsys, tmp_path, dialogues):
    out = tmp_path / "report"
    code, _, err = run_cli(capsys, "eval", dialogues, "--out", out, "--reference", tmp_path)
    assert code == 2
    assert "is a directory" in one_line(err)
    assert not out.exists()


def test_eval_judge_url_with_a_bad_port_is_one_line(capsys, tmp_path, dialogues):
    argv = ["eval", dialogues, "--out", tmp_path / "r", "--judge-model", "m"]
    code, _, err = run_cli(capsys, *argv, "--judge-base-url", "http://127.0.0.1:99999/v1")
    assert code == 2
    assert "--judge-base-url" in one_line(err)


@pytest.mark.parametrize("command", ["eval", "ablate"])
def test_unknown_baseline_is_refused(capsys, tmp_path, dialogues, questions, command):
    out = tmp_path / "report"
    if command == "eval":
        argv = ["eval", f"ideas={dialogues}", "--out", out, "--baseline", "nope"]
    else:
        argv = ["ablate", "--seeds", questions, "--out", out, "--base-url", UNUSED]
        argv += ["--variants", "ideas,plain", "--baseline", "nope"]
    code, _, err = run_cli(capsys, *argv)
    assert code == 2
    assert "--baseline 'nope' is not one of the variants" in one_line(err)
    assert not out.exists()


def test_filesystem_errors_are_classified_with_the_path():
    from cli.errors import classify, message

    exc = PermissionError(13, "Permission denied", "/srv/\udcfe.json")
    assert classify(exc) == 2
    assert message(exc) == "/srv/\\xfe.json: permission denied"
    assert classify(ConnectionRefusedError(111, "Connection refused")) is None


# --- F10: deeply nested JSON -------------------------------------------------------------------


@pytest.mark.parametrize(
    "argv",
    [
        ["--seed", "{deep}", "--base-url", UNUSED],
        ["batch", "--seeds", "{deep}", "--out", "{tmp}/run", "--base-url", UNUSED],
        ["eval", "{deep}", "--out", "{tmp}/rep"],
        ["eval", "{dialogues}", "--out", "{tmp}/rep", "--reference", "{deep}"],
        ["ablate", "--seeds", "{deep}", "--out", "{tmp}/ab", "--base-url", UNUSED],
        ["ablate", "--seeds", "{dialogues}", "--out", "{tmp}/ab", "--reference", "{deep}"],
        ["induce", "--dialogues", "{deep}", "--extractions", str(TEAM), "--library", "x"],
        ["induce", "--dialogues", "{dialogues}", "--extractions", "{deep}", "--library", "x"],
    ],
    ids=[
        "generate",
        "batch",
        "eval",
        "eval-reference",
        "ablate",
        "ablate-reference",
        "induce-dialogues",
        "induce-extractions",
    ],
)
def test_deeply_nested_json_is_one_line_exit_2(capsys, tmp_path, deep, dialogues, argv):
    argv = [a.format(deep=deep, tmp=tmp_path, dialogues=dialogues) for a in argv]
    code, _, err = run_cli(capsys, *argv)
    assert code == 2
    one_line(err)
    assert files_under(tmp_path / "store") == []


def test_deeply_nested_contamination_file_is_a_filter_error(deep):
    from batch.filters import FilterError
    from batch.filters.contamination import load_benchmark

    with pytest.raises(FilterError):
        load_benchmark(deep)


# --- F11: bad input found before the expensive part -------------------------------------------


def test_ablate_checks_the_reference_before_generating(capsys, tmp_path, questions):
    out = tmp_path / "ab"
    with FakeOpenAI() as fake:
        argv = ["ablate", "--seeds", questions, "--variants", "ideas,plain", "--n", 2]
        argv += ["--turns", 1, "--out", out, "--base-url", fake.base_url, "--library", "starter"]
        code, _, err = run_cli(capsys, *argv, "--reference", tmp_path / "nope.jsonl")
        assert fake.requests == []
    assert code == 2
    assert "nope.jsonl: file not found" in one_line(err)
    assert not out.exists()


def test_induce_checks_the_export_target_before_touching_the_library(capsys, tmp_path, dialogues):
    target = tmp_path / "taken"
    target.write_text("mine")
    argv = ["induce", "--dialogues", dialogues, "--extractions", TEAM, "--library", "x"]
    code, _, err = run_cli(capsys, *argv, "--export", target)
    assert code == 2
    assert f"{target}: exists and is not a directory" in one_line(err)
    assert target.read_text() == "mine"
    assert not (tmp_path / "store").exists()


# --- F14, F15: size caps ------------------------------------------------------------------------


def test_a_seed_file_over_1_mib_is_refused_before_reading(capsys, tmp_path):
    seed = tmp_path / "junk.txt"
    seed.write_text("junk " * 220_000)
    code, _, err = run_cli(capsys, "--seed", seed, "--base-url", UNUSED)
    assert code == 2
    assert "a seed file holds at most 1048576" in one_line(err)


def test_a_seed_message_over_the_cap_is_refused(capsys, tmp_path):
    seed = tmp_path / "long.json"
    seed.write_text(json.dumps([{"role": "user", "content": "x" * 32_001}]))
    code, _, err = run_cli(capsys, "--seed", seed, "--base-url", UNUSED)
    assert code == 2
    assert "message 1 is 32001 characters; the limit is 32000" in one_line(err)


def test_a_batch_reads_only_the_questions_it_uses(tmp_path):
    from batch.jobs import load_seed_set

    path = tmp_path / "many.txt"
    path.write_text("".join(f"Question number {i}?\n" for i in range(1000)) + "x" * 40_000)
    limited = load_seed_set(path, limit=5)
    assert [s.messages[0].content for s in limited.seeds][-1] == "Question number 4?"
    assert len(limited.seeds) == 5
    with pytest.raises(ValueError, match="the limit is 32000"):
        load_seed_set(path)


def test_a_batch_with_a_huge_junk_line_is_one_line(capsys, tmp_path):
    path = tmp_path / "junk.txt"
    path.write_text("y" * 2_000_000)
    argv = ["batch", "--seeds", path, "--out", tmp_path / "run", "--base-url", UNUSED]
    code, _, err = run_cli(capsys, *argv)
    assert code == 2
    assert "the limit is 32000" in one_line(err)
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize(
    ("argv", "env", "refused"),
    [
        (["--concurrency", "20000"], {}, True),
        (["--concurrency", "33"], {}, True),
        (["--concurrency", "32"], {}, False),
        (["--concurrency", "33"], {"IDEAS_ENDPOINT_CONCURRENCY": "9"}, False),
    ],
)
def test_concurrency_is_capped_by_the_endpoints(capsys, monkeypatch, tmp_path, argv, env, refused):
    from cli.batch import check_concurrency
    from runtime.settings import load_settings

    for name, value in env.items():
        monkeypatch.setenv(name, value)
    settings = load_settings(model={"base_url": UNUSED})
    if refused:
        with pytest.raises(ValueError, match="more than 4x the 8 request slots"):
            check_concurrency(int(argv[1]), settings)
    else:
        check_concurrency(int(argv[1]), settings)


def test_batch_concurrency_20000_is_one_line(capsys, tmp_path, questions):
    argv = ["batch", "--seeds", questions, "--out", tmp_path / "run", "--base-url", UNUSED]
    code, _, err = run_cli(capsys, *argv, "--concurrency", 20000)
    assert code == 2
    assert "--concurrency 20000 is more than" in one_line(err)
    assert not (tmp_path / "run").exists()


# --- F17, F18: output directories, invisible seeds ----------------------------------------------


def test_generate_out_with_a_trailing_slash_is_refused(capsys, tmp_path, seed_file):
    out = f"{tmp_path}/newdir/"
    code, _, err = run_cli(capsys, "--seed", seed_file, "--out", out, "--base-url", UNUSED)
    assert code == 2
    assert "is a directory" in one_line(err)
    assert not Path(out).exists()


def test_export_out_with_a_trailing_slash_is_refused(tmp_path):
    from cli.export import check_out
    from dialogues.output import OutputError

    with pytest.raises(OutputError, match="is a directory"):
        check_out(f"{tmp_path}/newdir/", tmp_path / "run")
    assert not (tmp_path / "newdir").exists()


@pytest.mark.parametrize(
    "content",
    [
        json.dumps([{"role": "user", "content": "\u200b\u200c\u200d\ufeff"}]),
        json.dumps("\u2060 \u200b"),
        "\ufeff\u200b\n",
    ],
    ids=["message", "json-string", "text"],
)
def test_invisible_only_seeds_are_empty(capsys, tmp_path, content):
    seed = tmp_path / "seed.json"
    seed.write_text(content, encoding="utf-8")
    code, _, err = run_cli(capsys, "--seed", seed, "--base-url", UNUSED)
    assert code == 2
    assert "empty" in one_line(err)


def test_invisible_questions_are_skipped_in_a_batch(tmp_path):
    from batch.jobs import load_seed_set

    path = tmp_path / "q.txt"
    path.write_text("\u200b\u200d\nWhat is a thread?\n", encoding="utf-8")
    assert [s.messages[0].content for s in load_seed_set(path).seeds] == ["What is a thread?"]


# --- F7, F8, F16: markup, file names, credentials, end to end on the fake server ----------------


def generate_argv(fake: FakeOpenAI, seed: Path, out: Path, base_url: str | None = None) -> list:
    return [
        "--seed", seed, "--turns", 1, "--out", out, "--base-url", base_url or fake.base_url,
        "--library", "starter", "--quiet",
    ]  # fmt: skip


def test_a_non_utf8_seed_name_and_lone_surrogates_keep_the_dialogue(capsys, tmp_path):
    seed = Path(os.fsdecode(bytes(tmp_path) + b"/\xfe.json"))
    seed.write_text('[{"role": "user", "content": "Why is the sky blue? \\ud800"}]')
    out = tmp_path / "o.json"
    with FakeOpenAI() as fake:
        code, _, err = run_cli(capsys, *generate_argv(fake, seed, out))
    assert code == 0, err
    document = json.loads(out.read_text(encoding="utf-8"))
    assert document["seed"]["source"].endswith("/\\xfe.json")
    assert "\ufffd" in json.dumps(document, ensure_ascii=False)


def test_lone_surrogates_are_embedded():
    from stores.embeddings import EmbeddingUnavailable, MiniLMEmbedding

    try:
        vectors = MiniLMEmbedding().embed(["\ud800 example", "\udcff"])
    except EmbeddingUnavailable:
        pytest.skip("offline MiniLM not installed")
    assert vectors.shape[0] == 2


def test_a_non_utf8_seeds_name_is_written_to_batch_json(capsys, tmp_path):
    seeds = Path(os.fsdecode(bytes(tmp_path) + b"/\xfe.txt"))
    seeds.write_text("What is a thread?\n")
    run_dir = tmp_path / "run"
    with FakeOpenAI() as fake:
        argv = ["batch", "--seeds", seeds, "--out", run_dir, "--turns", 1, "--quiet"]
        code, _, err = run_cli(capsys, *argv, "--base-url", fake.base_url, "--library", "starter")
    assert code == 0, err
    manifest = json.loads((run_dir / "batch.json").read_text(encoding="utf-8"))
    assert manifest["seeds"]["path"].endswith("/\\xfe.txt")


def test_markup_in_the_batch_out_path_is_printed_as_given(capsys, tmp_path, questions):
    run_dir = tmp_path / "[/x]run"
    red = tmp_path / "[red]r[/red]un"
    with FakeOpenAI() as fake:
        for out in (run_dir, red):
            argv = ["batch", "--seeds", questions, "--out", out, "--n", 1, "--turns", 1]
            code, stdout, err = run_cli(
                capsys, *argv, "--base-url", fake.base_url, "--library", "starter", "--quiet"
            )
            assert (code, err) == (0, "")
            assert f"{out}/dialogues.jsonl: 1 dialogues" in stdout
            assert f"{out}: 1 dialogues of 1 turns" in stdout


def test_markup_in_a_strategies_query_is_printed_as_given(capsys):
    code, stdout, err = run_cli(
        capsys, "strategies", "search", "[/x] example", "--library", "starter"
    )
    assert (code, err) == (0, "")
    assert "closest to: [/x] example" in stdout


def test_markup_in_eval_names_and_out_is_printed_as_given(capsys, tmp_path, dialogues):
    out = tmp_path / "[/x]rep"
    code, stdout, err = run_cli(capsys, "eval", f"[/x]={dialogues}", "--out", out)
    assert (code, err) == (0, "")
    assert "[/x]: 1 dialogues" in stdout
    assert f"in {out}" in stdout


SECRET = "sk-SECRET-0123"


def test_credentials_in_a_base_url_are_never_written(capsys, tmp_path, seed_file, questions):
    out = tmp_path / "o.json"
    run_dir = tmp_path / "run"
    with FakeOpenAI() as fake:
        url = fake.base_url.replace("http://", f"http://user:{SECRET}@") + f"?api-key={SECRET}"
        code, stdout, err = run_cli(capsys, *generate_argv(fake, seed_file, out, url))
        assert code == 0, err
        argv = ["batch", "--seeds", questions, "--out", run_dir, "--n", 1, "--turns", 1]
        code, stdout2, err2 = run_cli(capsys, *argv, "--base-url", url, "--library", "starter")
        assert code == 0, err2
    written = [out, run_dir / "batch.json", run_dir / "dialogues.jsonl"]
    for path in written:
        text = path.read_text(encoding="utf-8")
        assert SECRET not in text, path
    assert SECRET not in stdout + err + stdout2 + err2
    document = json.loads(out.read_text(encoding="utf-8"))
    assert document["settings"]["model"]["base_url"].startswith("http://***@127.0.0.1:")


def test_credentials_are_redacted_in_the_card_and_the_error_line(capsys, seed_file):
    from batch.card import role_models

    models = role_models({"critic": {"base_url": f"https://k:{SECRET}@h/v1?key={SECRET}"}})
    assert models["critic"]["endpoint"] == "https://***@h/v1?***"
    url = f"http://u:{SECRET}@127.0.0.1:{closed_port()}/v1?api-key={SECRET}"
    os.environ["IDEAS_MODEL__MAX_RETRIES"] = "0"
    try:
        code, stdout, err = run_cli(capsys, "--seed", seed_file, "--base-url", url, "--turns", 1)
    finally:
        del os.environ["IDEAS_MODEL__MAX_RETRIES"]
    assert code == 1
    assert SECRET not in stdout + err
    assert "http://***@127.0.0.1:" in one_line(err)


def test_public_dump_redacts_every_url():
    from runtime.settings import load_settings

    settings = load_settings(
        model={"base_url": f"http://a:{SECRET}@m/v1"},
        critic={"base_url": f"http://m2/v1?api-key={SECRET}"},
        chroma_url=f"http://c:{SECRET}@chroma:8000",
    )
    assert SECRET not in json.dumps(settings.public_dump())


# --- F20: an unreachable judge ------------------------------------------------------------------


def test_an_unreachable_judge_prints_exactly_one_line(tmp_path):
    data = [
        {
            "conversations": [
                {"from": "human", "value": f"What is thread number {i}?"},
                {"from": "gpt", "value": "A unit of execution."},
                {"from": "human", "value": "How does it differ from a process?"},
                {"from": "gpt", "value": "It shares memory."},
                {"from": "human", "value": "Which is cheaper to start?"},
                {"from": "gpt", "value": "A thread."},
            ]
        }
        for i in range(8)
    ]
    path = tmp_path / "d.json"
    path.write_text(json.dumps(data))
    env = {k: v for k, v in os.environ.items() if not k.startswith("IDEAS_")}
    env["IDEAS_STORE"] = str(tmp_path / "store")
    url = f"http://127.0.0.1:{closed_port()}/v1"
    result = subprocess.run(
        [sys.executable, "run.py", "eval", str(path), "--out", str(tmp_path / "r")]
        + ["--judge-model", "m", "--judge-base-url", url],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 1
    assert [line for line in result.stderr.splitlines() if line.strip()] == [
        f"error: model server {url} did not answer: Connection error."
    ]


def test_a_query_with_a_lone_surrogate_is_searched(capsys):
    argv = ["strategies", "search", "\udcff example", "--library", "starter", "-k", 1]
    code, stdout, err = run_cli(capsys, *argv)
    assert (code, err) == (0, "")
    assert "closest to: \ufffd example" in stdout


def test_resuming_a_run_directory_that_cannot_be_written_is_refused(capsys, tmp_path, questions):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "batch.json").write_text("{}")
    real = os.access
    monkeypatch = pytest.MonkeyPatch()
    monkeypatch.setattr(
        os, "access", lambda p, mode: Path(p) != run_dir / "batch.json" and real(p, mode)
    )
    try:
        argv = ["batch", "--seeds", questions, "--out", run_dir, "--base-url", UNUSED]
        code, _, err = run_cli(capsys, *argv)
    finally:
        monkeypatch.undo()
    assert code == 2
    assert "the run directory's files are not writable" in one_line(err)
