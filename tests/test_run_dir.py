"""Run directories under abuse: two writers at once, and damage no crash causes (F1-F4, F12)."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from rich.console import Console

from batch.card import card_paths
from batch.store import (
    CHECKPOINTS,
    DIALOGUES,
    INDEX,
    BatchStore,
    RunDirBusy,
    Skipped,
    hold_run_dir,
    iter_dialogues,
    read_index,
)
from cli.export import export_command
from cli.main import main
from dialogues.output import OutputError
from evaluation.inputs import load_dialogues
from tests.batch_docs import make_doc, make_run_dir
from tests.fake_openai import FakeOpenAI

ROOT = Path(__file__).resolve().parents[1]

HOLDER = """
import sys
from pathlib import Path
from batch.store import hold_run_dir

with hold_run_dir(Path(sys.argv[1])):
    print("locked", flush=True)
    sys.stdin.readline()  # holds the lock until killed
"""


def hold_in_another_process(run_dir: Path) -> subprocess.Popen:
    """Start a process that holds `run_dir`'s lock; return once it holds it."""
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(run_dir)],
        cwd=ROOT,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert holder.stdout.readline() == "locked\n"
    return holder


def seeds(tmp_path: Path) -> Path:
    path = tmp_path / "seeds.txt"
    path.write_text("How do tides work?\nWhat is inflation?\nWhy is the sky blue?\n")
    return path


def batch_argv(tmp_path: Path, fake: FakeOpenAI, n: int) -> list[str]:
    return [
        "batch",
        "--seeds", str(seeds(tmp_path)),
        "--out", str(tmp_path / "run"),
        "--n", str(n),
        "--turns", "1",
        "--base-url", fake.base_url,
        "--library", "starter",
        "--store", str(tmp_path / "store"),
        "--quiet",
    ]  # fmt: skip


def jobs(run_dir: Path) -> list[str]:
    return [d.job for d in iter_dialogues(run_dir)]


def export_openai(run_dir: Path, out: Path) -> tuple[int, str]:
    console = Console(file=io.StringIO(), width=300)
    argv = [str(run_dir), "--format", "openai", "--out", str(out), "--no-dedup"]
    code = export_command([*argv, "--min-turns", "0"], console)
    return code, console.file.getvalue()


def exported_jobs(out: Path) -> list[str]:
    return [json.loads(line)["ideas"]["job"] for line in out.read_text().splitlines()]


# --- F1: one writer per run directory ---------------------------------------------------------


def test_a_second_batch_on_a_run_directory_in_use_is_refused(tmp_path, capsys):
    run = tmp_path / "run"
    holder = hold_in_another_process(run)
    try:
        with FakeOpenAI() as fake:
            code = main(batch_argv(tmp_path, fake, 2))
            out, err = capsys.readouterr()
            assert code == 2
            assert (
                err == f"error: another run is using {run} (pid {holder.pid}); wait for it "
                "to end or use another --out\n"
            )
            assert sorted(p.name for p in run.iterdir()) == [".lock"]  # nothing written
            assert fake.requests == []
            holder.kill()  # the kernel releases the lock of a killed process
            holder.wait()
            assert main(batch_argv(tmp_path, fake, 2)) == 0
    finally:
        holder.kill()
        holder.wait()
    assert sorted(jobs(run)) == ["000000.0", "000001.0"]


def test_the_lock_is_exclusive_within_one_process_too(tmp_path):
    with hold_run_dir(tmp_path), pytest.raises(RunDirBusy, match=f"pid {os.getpid()}"):
        with hold_run_dir(tmp_path):
            pass
    with hold_run_dir(tmp_path):  # released at the end of the block
        pass


def test_a_second_ablate_on_the_same_out_is_refused(tmp_path, capsys):
    report = tmp_path / "report"
    holder = hold_in_another_process(report)
    try:
        with FakeOpenAI() as fake:
            argv = [
                "ablate",
                "--seeds", str(seeds(tmp_path)),
                "--variants", "ideas,plain",
                "--n", "1",
                "--turns", "1",
                "--out", str(report),
                "--base-url", fake.base_url,
                "--library", "starter",
                "--store", str(tmp_path / "store"),
                "--quiet",
            ]  # fmt: skip
            code = main(argv)
            assert fake.requests == []
    finally:
        holder.kill()
        holder.wait()
    err = capsys.readouterr().err
    assert code == 2
    assert err.startswith(f"error: another run is using {report} (pid {holder.pid})")
    assert err.count("\n") == 1
    assert not (report / "runs").exists()


def duplicated_run_dir(tmp_path: Path) -> Path:
    """A run directory two writers filled before the lock existed: every job stored twice."""
    docs = [make_doc("0.0", ["Why?", "How?"]), make_doc("1.0", ["When?", "Where?"])]
    run = make_run_dir(tmp_path / "run", docs)
    lines = (run / DIALOGUES).read_bytes()
    index = (run / INDEX).read_bytes()
    with (run / DIALOGUES).open("ab") as handle:
        handle.write(lines)
    with (run / INDEX).open("ab") as handle:
        handle.write(index)
    return run


def test_a_directory_with_duplicated_jobs_is_read_and_exported_once(tmp_path):
    run = duplicated_run_dir(tmp_path)
    skipped = Skipped()
    assert [d.job for d in iter_dialogues(run, skipped)] == ["0.0", "1.0"]
    assert skipped.duplicates == 2
    out = tmp_path / "x.jsonl"
    code, printed = export_openai(run, out)
    assert code == 0
    assert exported_jobs(out) == ["0.0", "1.0"]
    assert "skipped 2 duplicate lines in dialogues.jsonl" in printed
    card = json.loads(card_paths(out)[1].read_text())
    assert card["counts"]["dialogues_stored"] == 2
    assert card["skipped"]["duplicate_lines"] == 2
    assert "| duplicate dialogue lines skipped | 2 |" in card_paths(out)[0].read_text()
    assert [d.key for d in load_dialogues(run)] == ["0.0", "1.0"]  # eval counts them once too
    store = BatchStore.open(run)
    assert store.done() == {"0.0", "1.0"} and store.requeued == []


# --- F2-F4: a damaged run directory is never a dead end ----------------------------------------


def run_dir_of_three(tmp_path: Path) -> Path:
    docs = [make_doc(f"{i}.0", [f"Question {i}?", f"And then {i}?"]) for i in range(3)]
    return make_run_dir(tmp_path / "run", docs, failures={"3.0": "model server error 500"})


def tear_middle_line(path: Path) -> None:
    lines = path.read_bytes().split(b"\n")
    lines[1] = lines[1][:300]
    path.write_bytes(b"\n".join(lines))


def truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[:-500])


DAMAGE = {
    "dialogues cut short": (lambda run: truncate(run / DIALOGUES), ["2.0"]),
    "dialogues deleted": (lambda run: (run / DIALOGUES).unlink(), ["0.0", "1.0", "2.0"]),
    "dialogues emptied": (lambda run: (run / DIALOGUES).write_bytes(b""), ["0.0", "1.0", "2.0"]),
    "a middle line torn": (lambda run: tear_middle_line(run / DIALOGUES), ["1.0"]),
}


@pytest.mark.parametrize("damage", DAMAGE)
def test_jobs_whose_dialogue_cannot_be_read_are_requeued(tmp_path, damage):
    run = run_dir_of_three(tmp_path)
    spoil, lost = DAMAGE[damage]
    spoil(run)
    store = BatchStore.open(run)
    assert store.requeued == lost
    assert store.done() == {"0.0", "1.0", "2.0"} - set(lost)
    assert store.failed() == {"3.0": "model server error 500"}
    assert f"{len(lost)} stored dialogue" in store.damage
    store.add_dialogue(make_doc(lost[0], ["Again?"]))  # regenerated
    assert BatchStore.open(run).done() == {"0.0", "1.0", "2.0"} - set(lost[1:])


def test_garbage_index_lines_are_skipped_and_the_dialogues_reindexed(tmp_path):
    run = run_dir_of_three(tmp_path)
    lines = (run / INDEX).read_text().splitlines()
    lines[0] = "{garbage"
    lines.insert(2, '{"job": 5}')
    (run / INDEX).write_text("\n".join(lines) + "\n")
    store = BatchStore.open(run)
    assert store.done() == {"0.0", "1.0", "2.0"}
    assert store.repaired == 1 and store.requeued == []
    assert store.damage.endswith(
        "skipped 2 unreadable lines in index.jsonl (index.jsonl line 1: not JSON (Expecting "
        "property name enclosed in double quotes); index.jsonl line 3: job: Input should be a "
        "valid string)"
    )
    assert "skipped 2 unreadable lines in index.jsonl" in BatchStore.open(run).damage
    assert read_index(run)["0.0"].status == "done"


def test_junk_checkpoints_are_moved_aside(tmp_path):
    run = run_dir_of_three(tmp_path)
    (run / CHECKPOINTS).write_bytes(os.urandom(5000))
    store = BatchStore.open(run)
    assert "checkpoints.sqlite unreadable, moved to checkpoints.sqlite.broken" in store.damage
    assert not (run / CHECKPOINTS).exists()
    assert (run / f"{CHECKPOINTS}.broken").stat().st_size == 5000
    assert store.done() == {"0.0", "1.0", "2.0"}
    assert BatchStore.open(run).damage is None


def test_resume_of_a_damaged_run_directory_warns_and_regenerates(tmp_path, capsys):
    run = tmp_path / "run"
    with FakeOpenAI() as fake:
        assert main(batch_argv(tmp_path, fake, 3)) == 0
        tear_middle_line(run / DIALOGUES)
        lines = (run / INDEX).read_text().splitlines()
        (run / INDEX).write_text("\n".join(["{garbage", *lines]) + "\n")
        (run / CHECKPOINTS).write_bytes(b"not a database" * 300)
        capsys.readouterr()
        code = main(batch_argv(tmp_path, fake, 4))
    out, err = capsys.readouterr()
    assert (code, err) == (0, "")
    warning = [line for line in out.splitlines() if line.startswith("warning:")]
    assert warning == [
        f"warning: {run}: damaged run directory: 1 stored dialogue missing or unreadable "
        "(generated again); skipped 1 unreadable line in dialogues.jsonl, 1 unreadable line in "
        "index.jsonl (index.jsonl line 1: not JSON (Expecting property name enclosed in double "
        "quotes); dialogues.jsonl line 2: not JSON (Invalid control character at)); "
        "checkpoints.sqlite unreadable, moved to checkpoints.sqlite.broken "
        "(dialogues in flight start over)"
    ]
    assert "stored now          2" in out  # the torn job and the new one
    assert sorted(jobs(run)) == ["000000.0", "000000.1", "000001.0", "000002.0"]
    out_file = tmp_path / "x.jsonl"
    code, printed = export_openai(run, out_file)
    assert code == 0
    assert sorted(exported_jobs(out_file)) == ["000000.0", "000000.1", "000001.0", "000002.0"]
    assert "skipped 1 unreadable line in dialogues.jsonl, 1 unreadable line in index.jsonl" in (
        printed
    )


def test_export_skips_and_counts_lines_of_the_wrong_shape(tmp_path):
    run = run_dir_of_three(tmp_path)
    bad = make_doc("9.0", ["Odd?"]).dump() | {"turns": 5}
    with (run / DIALOGUES).open("a") as handle:
        handle.write(json.dumps(bad) + "\n")
        handle.write('{"format": "ideas-dialogue/1", "batch": {"job": "8.0"}, "messages": [\n')
    out = tmp_path / "x.jsonl"
    code, printed = export_openai(run, out)
    assert code == 0
    assert exported_jobs(out) == ["0.0", "1.0", "2.0"]
    assert "skipped 2 unreadable lines in dialogues.jsonl" in printed
    card = json.loads(card_paths(out)[1].read_text())
    assert card["skipped"] == {
        "unreadable_lines": 2,
        "duplicate_lines": 0,
        "unreadable_index_lines": 0,
    }
    assert card["counts"]["dialogues_stored"] == 3


# --- F12: the export and its card land together -----------------------------------------------


def test_a_failed_export_leaves_the_old_export_and_card_untouched(tmp_path):
    run = run_dir_of_three(tmp_path)
    out = tmp_path / "x.jsonl"
    assert export_openai(run, out)[0] == 0
    md_path, json_path = card_paths(out)
    before = {p: p.read_bytes() for p in (out, md_path, json_path)}
    with (run / DIALOGUES).open("a") as handle:
        handle.write(json.dumps(make_doc("4.0", ["More?"]).dump()) + "\n")
    md_path.unlink()
    md_path.mkdir()  # the card cannot be written: found after the export data was written
    with pytest.raises(OutputError, match="x.jsonl.card.md: cannot write: is a directory"):
        export_openai(run, out)
    assert out.read_bytes() == before[out]
    assert json_path.read_bytes() == before[json_path]
    names = ["run", "x.jsonl", md_path.name, json_path.name]
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(names)  # no temporary files
