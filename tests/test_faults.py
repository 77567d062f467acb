"""A broken model server, fault by fault: one line, the right exit code, never a hang.

Every fault comes from `tests/fake_openai.py` in one of its modes (real HTTP, no model).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from batch.store import BatchStore
from cli.main import main
from runtime.session import Session
from tests.fake_openai import FakeOpenAI

ROOT = Path(__file__).resolve().parents[1]
SEED = [
    {"role": "user", "content": "How do vaccines train the immune system?"},
    {"role": "assistant", "content": "They show it a harmless antigen so memory cells form."},
]


@pytest.fixture(scope="module")
def store_dir(tmp_path_factory) -> Path:
    """One strategy store for the module (filling it embeds the starter library once)."""
    return tmp_path_factory.mktemp("store")


@pytest.fixture(autouse=True)
def env(monkeypatch, store_dir):
    for name in list(os.environ):
        if name.upper().startswith("IDEAS_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("IDEAS_STORE", str(store_dir))
    monkeypatch.setenv("IDEAS_LIBRARY", "starter")
    monkeypatch.setenv("IDEAS_MODEL__MAX_RETRIES", "0")
    monkeypatch.setenv("IDEAS_MODEL__TIMEOUT", "2")
    monkeypatch.setenv("COLUMNS", "1000")

    def refuse(self, model):
        raise AssertionError("a test tried to start the embedded llama.cpp server")

    monkeypatch.setattr(Session, "embedded_url", refuse)


@pytest.fixture
def seed_file(tmp_path) -> Path:
    path = tmp_path / "seed.json"
    path.write_text(json.dumps(SEED), encoding="utf-8")
    return path


def seeds_file(tmp_path: Path) -> Path:
    path = tmp_path / "seeds.txt"
    path.write_text("How do hash tables work?\nWhy is the sky blue?\nHow do tides work?\n")
    return path


def run_cli(capsys, *argv: object) -> tuple[int, str, str]:
    code = main([str(a) for a in argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.strip()]


def generate(capsys, fake: FakeOpenAI, seed: Path, out: Path, *extra: object):
    argv = ["--seed", seed, "--turns", 2, "--out", out, "--base-url", fake.base_url, *extra]
    return run_cli(capsys, *argv)


def batch(capsys, fake: FakeOpenAI, tmp_path: Path, *extra: object):
    argv = ["batch", "--seeds", seeds_file(tmp_path), "--out", tmp_path / "run", "--turns", 1]
    return run_cli(capsys, *argv, "--base-url", fake.base_url, "--quiet", *extra)


# --- every other fault: one line, exit 1 (generate) or a stopped batch (exit 1) -----------------

FAULTS = {
    "close-mid-reply": "did not answer",
    "error500:1000": "model server error 500",
    "hang": "did not",
    "non-json": "model server",
    "not-completion": "model server sent an invalid response",
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
        code, _, err = generate(capsys, fake, seed_file, out, "--turns", 1)
    assert (code, err) == (0, "")
    assert json.loads(out.read_text())["status"] == "complete"


def test_unknown_mode_is_refused():
    with pytest.raises(ValueError, match="unknown mode 'error500'"):
        FakeOpenAI(mode="error500")
