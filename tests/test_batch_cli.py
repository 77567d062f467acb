"""`run.py batch` as a user runs it: one-line errors, resume rules, and a kill -9 in the middle."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from batch.store import iter_dialogues, read_index
from cli.main import main
from tests.fake_openai import FakeOpenAI

ROOT = Path(__file__).resolve().parents[1]


def seeds(tmp_path: Path, count: int = 4) -> Path:
    path = tmp_path / "seeds.txt"
    topics = ["hash tables", "vaccines", "photosynthesis", "tides", "inflation", "compilers"]
    path.write_text("\n".join(f"How do {t} work?" for t in topics[:count]) + "\n")
    return path


def run_cli(argv: list[str], capsys) -> tuple[int, str, str]:
    code = main(argv)
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--n", "0"], "error: --n must be at least 1"),
        (["--concurrency", "0"], "error: --concurrency must be at least 1"),
        (["--ray-address", "ray://x:10001"], "error: --ray-address needs --executor ray"),
    ],
)
def test_bad_numbers_are_one_line_errors(tmp_path, capsys, extra, message):
    argv = ["batch", "--seeds", str(seeds(tmp_path)), "--out", str(tmp_path / "run"), *extra]
    code, _, err = run_cli(argv, capsys)
    assert code == 2
    assert err.strip() == message


def test_out_must_be_a_batch_or_new(tmp_path, capsys):
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "notes.txt").write_text("mine")
    argv = ["batch", "--seeds", str(seeds(tmp_path)), "--out", str(tmp_path / "taken")]
    code, _, err = run_cli(argv, capsys)
    assert code == 2
    assert "not empty and not a batch directory" in err
    assert (tmp_path / "taken" / "notes.txt").read_text() == "mine"


def test_missing_seed_file_is_a_one_line_error(tmp_path, capsys):
    argv = ["batch", "--seeds", str(tmp_path / "nope.jsonl"), "--out", str(tmp_path / "run")]
    code, _, err = run_cli(argv, capsys)
    assert code == 2
    assert err.strip().endswith("nope.jsonl: file not found")
    assert not (tmp_path / "run").exists()


def batch_argv(tmp_path: Path, fake: FakeOpenAI, *extra: str) -> list[str]:
    return [
        "batch",
        "--seeds", str(seeds(tmp_path)),
        "--out", str(tmp_path / "run"),
        "--turns", "2",
        "--base-url", fake.base_url,
        "--library", "starter",
        "--store", str(tmp_path / "store"),
        "--quiet",
        *extra,
    ]  # fmt: skip


def test_resume_refuses_other_settings_and_other_seeds(tmp_path, capsys):
    with FakeOpenAI() as fake:
        code, out, _ = run_cli(batch_argv(tmp_path, fake, "--n", "2"), capsys)
        assert code == 0
        assert "stored now          2" in out
        code, _, err = run_cli(batch_argv(tmp_path, fake, "--n", "2", "--top-k", "3"), capsys)
        assert (code, err.count("\n")) == (2, 1)
        assert "other settings (top_k differ)" in err
        argv = batch_argv(tmp_path, fake, "--n", "2")
        (tmp_path / "seeds.txt").write_text("A different question?\n")
        code, _, err = run_cli(argv, capsys)
    assert code == 2
    assert "the seed source differs" in err


def test_the_same_command_extends_a_finished_batch(tmp_path, capsys):
    with FakeOpenAI() as fake:
        assert run_cli(batch_argv(tmp_path, fake, "--n", "3"), capsys)[0] == 0
        code, out, _ = run_cli(batch_argv(tmp_path, fake, "--n", "6"), capsys)
    assert code == 0
    assert "stored before       3" in out
    jobs = [d.job for d in iter_dialogues(tmp_path / "run")]
    assert sorted(jobs) == ["000000.0", "000000.1", "000001.0", "000001.1", "000002.0", "000003.0"]


def test_failures_give_exit_code_3_and_are_listed(tmp_path, capsys):
    def fail(body):
        return any("tides" in str(m.get("content")) for m in body["messages"])

    with FakeOpenAI(fail=fail) as fake:
        code, out, _ = run_cli(batch_argv(tmp_path, fake, "--n", "4"), capsys)
    assert code == 3
    assert "failed now          1" in out
    assert "model server error 500" in out


def test_kill_9_mid_batch_then_resume_gives_exactly_the_requested_set(tmp_path):
    """A real batch process is SIGKILLed while dialogues are in flight, then resumed."""
    with FakeOpenAI(latency=0.03) as fake:
        argv = [sys.executable, "run.py", *batch_argv(tmp_path, fake, "--n", "10")]
        argv += ["--turns", "3", "--concurrency", "3"]
        index = tmp_path / "run" / "index.jsonl"
        process = subprocess.Popen(
            argv, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=os.environ
        )
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline and process.poll() is None:
            if index.exists() and len(index.read_text().splitlines()) >= 3:
                break
            time.sleep(0.05)
        assert process.poll() is None, process.stderr.read().decode()
        os.kill(process.pid, signal.SIGKILL)
        process.wait()
        killed_at = len(read_index(tmp_path / "run"))
        assert 3 <= killed_at < 10
        finished = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert finished.returncode == 0, finished.stderr
    jobs = [d.job for d in iter_dialogues(tmp_path / "run")]
    assert len(jobs) == 10 == len(set(jobs))
    assert set(jobs) == {f"{i % 4:06d}.{i // 4}" for i in range(10)}
    assert "resumed from a checkpoint" in finished.stdout
    lines = (tmp_path / "run" / "dialogues.jsonl").read_text().splitlines()
    assert all(json.loads(line)["format"] == "ideas-dialogue/1" for line in lines)


def test_help_lists_the_batch_flags(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["batch", "--help"])
    assert exit_.value.code == 0
    out = capsys.readouterr().out
    for flag in ["--seeds", "--n", "--concurrency", "--retry-failed", "--balance", "--executor"]:
        assert flag in out


def test_resume_refuses_a_different_seed_order(tmp_path, capsys):
    with FakeOpenAI() as fake:
        assert run_cli(batch_argv(tmp_path, fake, "--n", "1", "--shuffle"), capsys)[0] == 0
        code, _, err = run_cli(batch_argv(tmp_path, fake, "--n", "1"), capsys)
    assert code == 2
    assert "order shuffled (seed 0)" in err
