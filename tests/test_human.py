"""A person plays the user: `run.py --seed ... --simulator human` asks on stdin.

The graph pauses with `interrupt()` in the human simulator; the CLI shows the question, reads a
line, and resumes. The simulator model only proposes drafts (scripted here); the critic judges
what the person wrote. Batch and ablation runs, where nobody answers, refuse the human role.
"""

from __future__ import annotations

import io
import json
import sys

import pytest

import cli.generate as generate_module
from agents.simulator import StrategySimulator
from tests.cli_helpers import isolate_cli, lines, run_cli, write_seed
from tests.fakes import ScriptedChatModel, text_reply

TYPED = "What would change for someone whose immune system is weakened?"
PROPOSALS = ["Which cells remember the antigen?", "How long does that memory last?"]
ANSWERS = ["Memory B and T cells.", "Often decades, sometimes less."]
HUMAN = ["--simulator", "human", "--strategist", "random", "--critic", "novelty"]


@pytest.fixture(autouse=True)
def cli_env(monkeypatch, tmp_path):
    isolate_cli(monkeypatch, tmp_path / "store")


@pytest.fixture
def seed_file(tmp_path):
    return write_seed(tmp_path)


@pytest.fixture
def out(tmp_path):
    return tmp_path / "out.json"


def script(monkeypatch, proposals: list[str], answers: list[str]) -> dict[str, ScriptedChatModel]:
    """Inject scripted simulator (proposals) and assistant models into the CLI's session."""
    models = {
        "simulator": ScriptedChatModel(script=[text_reply(t) for t in proposals]),
        "assistant": ScriptedChatModel(script=[text_reply(t) for t in answers]),
    }
    real = generate_module.Session
    monkeypatch.setattr(
        generate_module, "Session", lambda settings: real(settings, chat_models=models)
    )
    return models


def grow(capsys, monkeypatch, seed_file, out, stdin: str, turns: int = 2):
    monkeypatch.setattr(sys, "stdin", io.StringIO(stdin))
    argv = ["--seed", seed_file, "--turns", turns, "--out", out, "--base-url", "http://unused"]
    return run_cli(capsys, *argv, *HUMAN)


def test_a_person_types_a_turn_then_takes_the_drafted_one(capsys, monkeypatch, seed_file, out):
    models = script(monkeypatch, PROPOSALS, ANSWERS)
    code, stdout, err = grow(capsys, monkeypatch, seed_file, out, f"{TYPED}\n\n")

    assert code == 0, err
    assert err == ""
    assert all(model.unused == 0 for model in models.values())  # one proposal per turn
    doc = json.loads(out.read_text(encoding="utf-8"))
    assert doc["status"] == "complete"
    assert [t["instruction"] for t in doc["turns"]] == [TYPED, PROPOSALS[1]]
    for turn in doc["turns"]:
        assert turn["critic"]["author"] == "human" and turn["critic"]["accepted"]
        assert turn["usage"]["simulator"]["calls"] == 1
    assert doc["settings"]["agents"]["simulator"] == "human"
    assert stdout.count("your turn (human simulator)") == 2
    assert PROPOSALS[0] in stdout and "press Enter to take the drafted one" in stdout
    assert stdout.count("(written by a person)") == 2


def test_end_of_stdin_keeps_the_turns_written_and_exits_2(capsys, monkeypatch, seed_file, out):
    script(monkeypatch, PROPOSALS, ANSWERS[:1])
    code, stdout, err = grow(capsys, monkeypatch, seed_file, out, f"{TYPED}\n")

    assert code == 2
    assert lines(err) == ["error: no user turn on stdin (end of input) for the human simulator"]
    doc = json.loads(out.read_text(encoding="utf-8"))
    assert doc["status"] == "interrupted" and len(doc["turns"]) == 1
    assert doc["turns"][0]["instruction"] == TYPED
    assert "done: interrupted" in stdout


def test_empty_stdin_exits_2_and_writes_nothing(capsys, monkeypatch, seed_file, out):
    script(monkeypatch, PROPOSALS[:1], [])
    code, _, err = grow(capsys, monkeypatch, seed_file, out, "")

    assert code == 2
    assert lines(err) == ["error: no user turn on stdin (end of input) for the human simulator"]
    assert not out.exists()


def test_a_blank_line_without_a_draft_asks_again(capsys, monkeypatch, seed_file, out):
    # the proposal cleans to nothing, each time the proposer draws it again
    empty = ['""'] * (StrategySimulator.END_REDRAWS + 1)
    models = script(monkeypatch, empty, ANSWERS[:1])
    code, stdout, err = grow(capsys, monkeypatch, seed_file, out, f"\n{TYPED}\n", turns=1)

    assert code == 0, err
    assert models["simulator"].unused == 0
    assert stdout.count("your turn (human simulator)") == 2
    doc = json.loads(out.read_text(encoding="utf-8"))
    assert doc["turns"][0]["instruction"] == TYPED


@pytest.mark.parametrize("command", [["batch", "--out", "run"], ["ablate", "--out", "report"]])
def test_runs_without_a_person_refuse_the_human_simulator(capsys, tmp_path, command):
    seeds = tmp_path / "seeds.txt"
    seeds.write_text("How do tides work?\n")
    name, flag, folder = command
    code, _, err = run_cli(
        capsys, name, "--seeds", seeds, flag, tmp_path / folder, "--simulator", "human"
    )

    assert code == 2
    assert lines(err) == [
        "error: the human simulator needs a person: grow one seed at a time with "
        "`run.py --seed FILE --simulator human`, or serve the graph (docs/serve.md)"
    ]
    assert not (tmp_path / folder / "dialogues.jsonl").exists()
