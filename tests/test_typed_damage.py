"""Run directories damaged in their types, links and sizes (issue 24: G1-G3, G5, G8, G10, G14-G15).

One definition of a readable dialogue (`batch.store.read_stored_dialogue`, the typed model): a
line that fails it is skipped, counted and named by file and line by every reader (resume,
export, eval), and resume generates its job again.
"""

from __future__ import annotations

import errno
import json
import os
import re
import sqlite3
from pathlib import Path

import pytest

from batch import store as batch_store
from batch.store import (
    DIALOGUES,
    INDEX,
    LOCK,
    BatchStore,
    BatchStoreError,
    Skipped,
    StoreFull,
    hold_run_dir,
    iter_dialogues,
    read_stored_dialogue,
)
from cli.main import main
from evaluation.inputs import load_dialogues
from tests.batch_docs import make_doc, make_run_dir
from tests.fake_openai import FakeOpenAI
from tests.test_run_dir import batch_argv, export_openai, exported_jobs, jobs


def run_dir_of_three(tmp_path: Path) -> Path:
    docs = [make_doc(f"{i}.0", [f"Question {i}?", f"And then {i}?"]) for i in range(3)]
    return make_run_dir(tmp_path / "run", docs)


def spoil_line(run: Path, number: int, change) -> None:
    """Rewrite line `number` (1-based) of the dialogue store with `change` applied to its data."""
    path = run / DIALOGUES
    lines = path.read_text().splitlines()
    data = json.loads(lines[number - 1])
    change(data)
    lines[number - 1] = json.dumps(data)
    path.write_text("\n".join(lines) + "\n")


def setter(*keys, value):
    def change(data):
        target = data
        for key in keys[:-1]:
            target = target[key]
        target[keys[-1]] = value

    return change


# Valid JSON, a field of the wrong type: the store's old hand-written check let each of these
# through, the typed layer refused them, and the whole directory was stuck (G1).
TYPED_DAMAGE = {
    "status": (setter("status", value=5), "status: Input should be a valid string"),
    "strategy": (setter("turns", 0, "strategy", value={}), "turns.0.strategy.id: Field required"),
    "usage calls": (
        setter("turns", 0, "usage", "assistant", "calls", value="many"),
        "turns.0.usage.assistant.calls: Input should be a valid integer",
    ),
    "library": (setter("library", value="default"), "library: Input should be a valid"),
    "seed index": (
        setter("batch", "seed_index", value="zero"),
        "batch.seed_index: Input should be a valid integer",
    ),
    "summary": (setter("summary", "turns", value="two"), "summary.turns: Input should be"),
    "draft text": (setter("turns", 0, "drafts", 0, "text", value=5), "turns.0.drafts.0.text"),
    "critic depth NaN": (
        lambda d: d["turns"][0]["critic"]["scores"].update(depth=float("nan")),
        "not JSON (NaN is not a JSON number)",
    ),
    "candidate score NaN": (
        lambda d: d["turns"][0]["candidates"][0].update(score=float("nan")),
        "not JSON (NaN is not a JSON number)",
    ),
    "tool role": (
        lambda d: d["messages"][0].update(role="tool"),
        "messages.0.role: Input should be 'system', 'user' or 'assistant'",
    ),
    "turns off the messages": (
        lambda d: d["messages"][-2].update(role="assistant"),
        "turn 2 does not match the messages",
    ),
}


@pytest.mark.parametrize("damage", TYPED_DAMAGE)
def test_a_wrongly_typed_line_is_skipped_by_every_reader_and_generated_again(tmp_path, damage):
    run = run_dir_of_three(tmp_path)
    change, why = TYPED_DAMAGE[damage]
    spoil_line(run, 2, change)
    named = f"dialogues.jsonl line 2: {why}"

    skipped = Skipped()
    assert [d.job for d in iter_dialogues(run, skipped)] == ["0.0", "2.0"]
    assert skipped.unreadable == 1 and named in skipped.describe()

    out = tmp_path / "x.jsonl"
    code, printed = export_openai(run, out)
    assert code == 0 and exported_jobs(out) == ["0.0", "2.0"]
    assert "skipped 1 unreadable line in dialogues.jsonl" in printed and named in printed

    evaluated = load_dialogues(run, skipped := Skipped())
    assert [d.key for d in evaluated] == ["0.0", "2.0"] and skipped.unreadable == 1

    store = BatchStore.open(run)  # resume: the job runs again
    assert store.requeued == ["1.0"] and store.done() == {"0.0", "2.0"}
    assert named in store.damage
    store.add_dialogue(make_doc("1.0", ["Again?"]))
    assert BatchStore.open(run).done() == {"0.0", "1.0", "2.0"}


def test_a_damaged_line_without_an_index_line_is_not_indexed_as_done(tmp_path):
    run = run_dir_of_three(tmp_path)
    bad = make_doc("5.0", ["Lost?"]).dump() | {"status": 5}
    with (run / DIALOGUES).open("a") as handle:
        handle.write(json.dumps(bad) + "\n")
    store = BatchStore.open(run)
    assert store.repaired == 0 and "5.0" not in store.done()


def test_the_store_refuses_to_write_a_line_its_readers_would_skip(tmp_path):
    store = BatchStore.open(tmp_path / "run")
    with pytest.raises(ValueError, match="status"):
        store.add_dialogue(make_doc("0.0", ["Q?"]).dump() | {"status": 5})
    with pytest.raises(ValueError, match="batch job id"):
        store.add_dialogue(make_doc("0.0", ["Q?"]).dump() | {"batch": {"seed_index": 0}})
    assert not (tmp_path / "run" / DIALOGUES).exists()


# --- G3: index lines with wrongly typed fields --------------------------------------------------

BAD_INDEX_LINES = {
    "strategies not a list": '{"job": "0.0", "status": "done", "offset": 0, "strategies": 5}',
    "strategies of lists": '{"job": "1.0", "status": "done", "strategies": [[1, 2], {"a": 1}]}',
    "attempts not a number": (
        '{"job": "7.0", "status": "failed", "reason": "x", "attempts": "many"}'
    ),
    "failed without reason": '{"job": "7.0", "status": "failed"}',
    "negative offset": '{"job": "0.0", "status": "done", "offset": -3}',
}


@pytest.mark.parametrize("line", BAD_INDEX_LINES.values(), ids=list(BAD_INDEX_LINES))
def test_wrongly_typed_index_lines_are_skipped_and_resume_goes_on(tmp_path, line):
    run = run_dir_of_three(tmp_path)
    with (run / INDEX).open("a") as handle:
        handle.write(line + "\n")
    store = BatchStore.open(run)
    assert store.done() == {"0.0", "1.0", "2.0"} and store.skipped.index == 1
    assert "index.jsonl line 4:" in store.damage
    assert sum(store.strategy_uses().values()) == 6  # every stored turn, nothing from the junk
    store.add_failure("7.0", "model server error 500")
    store.add_failure("7.0", "model server error 500")
    assert BatchStore.open(run).index["7.0"].attempts == 2


# --- G5: lone surrogate escapes written by another tool --------------------------------------


def test_lone_surrogate_escapes_are_read_as_replacement_characters(tmp_path):
    run = run_dir_of_three(tmp_path)
    path = run / DIALOGUES
    lines = path.read_text().splitlines()
    lines[1] = lines[1].replace('"job": "1.0"', '"job": "1.0", "note": "x\\ud800y"')
    lines[1] = lines[1].replace("Question 1?", "Question \\udfff1?")
    path.write_text("\n".join(lines) + "\n")
    manifest = json.loads((run / "batch.json").read_text())
    manifest["seeds"]["path"] = "seeds-\ud800.jsonl"
    (run / "batch.json").write_text(json.dumps(manifest))  # ensure_ascii: a "\ud800" escape

    out = tmp_path / "x.jsonl"
    code, _ = export_openai(run, out)
    assert code == 0 and exported_jobs(out) == ["0.0", "1.0", "2.0"]
    assert "Question \ufffd1?" in out.read_text(encoding="utf-8")
    report = tmp_path / "report"
    assert main(["eval", str(run), "--out", str(report)]) == 0
    assert (report / "report.md").is_file()


# --- G14: no NaN in an export ---------------------------------------------------------------


def test_an_export_is_strict_json(tmp_path):
    run = run_dir_of_three(tmp_path)
    spoil_line(run, 3, lambda d: d["turns"][0]["candidates"][0].update(score=float("inf")))
    out = tmp_path / "x.jsonl"
    assert export_openai(run, out)[0] == 0
    for line in out.read_text().splitlines():
        json.loads(line, parse_constant=lambda name: pytest.fail(f"{name} in the export"))
    assert exported_jobs(out) == ["0.0", "1.0"]


# --- G2, G15: the lock and the store files are never reached through a link -------------------


def test_a_symlinked_lock_is_refused_and_its_target_untouched(tmp_path, capsys):
    run = run_dir_of_three(tmp_path / "received")
    keys = tmp_path / "authorized_keys"
    keys.write_text("ssh-ed25519 AAAA me@host\n")
    (run / LOCK).symlink_to(keys)
    with pytest.raises(BatchStoreError, match="is a symbolic link"):
        with hold_run_dir(run):
            pass
    fresh, dangling = tmp_path / "run", tmp_path / "nowhere"
    fresh.mkdir()
    (fresh / LOCK).symlink_to(dangling)
    with FakeOpenAI() as fake:
        assert main(batch_argv(tmp_path, fake, 3)) == 2
    assert keys.read_text() == "ssh-ed25519 AAAA me@host\n"
    assert not dangling.exists()
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "is a symbolic link" in err and len(err.splitlines()) == 1


def test_a_lock_that_is_a_fifo_is_refused_in_one_line(tmp_path, capsys):
    run = run_dir_of_three(tmp_path)
    (run / LOCK).unlink(missing_ok=True)
    os.mkfifo(run / LOCK)
    with pytest.raises(BatchStoreError, match="not a regular file"):
        with hold_run_dir(run):
            pass


@pytest.mark.parametrize("name", [DIALOGUES, INDEX, "checkpoints.sqlite"])
def test_store_files_that_are_links_are_refused_and_their_targets_untouched(tmp_path, name):
    run = run_dir_of_three(tmp_path)
    target = tmp_path / "precious"
    target.write_bytes(b"partial line without a newline")
    if (run / name).exists():
        (run / name).unlink()
    (run / name).symlink_to(target)
    with pytest.raises(BatchStoreError, match="is a symbolic link"):
        BatchStore.open(run)
    assert target.read_bytes() == b"partial line without a newline"


def test_appending_never_follows_a_link_made_after_open(tmp_path):
    store = BatchStore.open(tmp_path / "run")
    target = tmp_path / "precious"
    target.write_text("keep\n")
    (tmp_path / "run" / INDEX).symlink_to(target)
    with pytest.raises(OSError) as caught:
        store.add_failure("0.0", "boom")
    assert caught.value.errno == errno.ELOOP and caught.value.filename.endswith(INDEX)
    assert target.read_text() == "keep\n"


# --- G10: a full disk ---------------------------------------------------------------------------


def test_a_full_disk_is_one_error_and_keeps_what_was_stored(tmp_path, monkeypatch):
    run = run_dir_of_three(tmp_path)
    real_open = os.open

    def full(path, flags, *args):
        if str(path).endswith(INDEX) and flags & os.O_APPEND:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_open(path, flags, *args)

    monkeypatch.setattr(batch_store.os, "open", full)
    store = BatchStore.open(run)
    with pytest.raises(StoreFull, match="no space left on the device; what was stored is kept"):
        store.add_failure("4.0", "model server error 500")
    monkeypatch.undo()
    assert BatchStore.open(run).done() == {"0.0", "1.0", "2.0"}


def test_a_batch_whose_checkpoints_fill_the_disk_stops_with_one_line(tmp_path, monkeypatch, capsys):
    from langgraph.checkpoint.sqlite.aio import AsyncSqliteSaver

    async def full(self, *args, **kwargs):
        error = sqlite3.OperationalError("database or disk is full")
        error.sqlite_errorcode = sqlite3.SQLITE_FULL
        raise error

    monkeypatch.setattr(AsyncSqliteSaver, "aput", full)
    with FakeOpenAI() as fake:
        code = main(batch_argv(tmp_path, fake, 2))
    err = capsys.readouterr().err
    assert code == 2
    assert err.startswith("error: ") and "no space left on the device" in err
    assert len(err.strip().splitlines()) == 1
    assert BatchStore.open(tmp_path / "run").failed() == {}  # not recorded as the jobs' fault


# --- G6, G8: refused before the run directory exists ----------------------------------------


def test_batch_with_the_learned_strategist_on_a_library_without_ranker_writes_nothing(
    tmp_path, capsys
):
    with FakeOpenAI() as fake:
        argv = batch_argv(tmp_path, fake, 3)
        assert main([*argv, "--strategist", "learned"]) == 2
        assert "has no learned ranker" in capsys.readouterr().err
        assert not (tmp_path / "run").exists()
        assert main([*argv, "--strategist", "llm"]) == 0  # the advised fix is not refused


def test_ablate_checks_every_variant_before_writing(tmp_path, capsys):
    with FakeOpenAI() as fake:
        argv = batch_argv(tmp_path, fake, 2)
        argv[0] = "ablate"
        argv[argv.index("--out") + 1] = str(tmp_path / "report")
        code = main([*argv, "--variants", "plain,learned-strategy"])
    assert code == 2 and "has no learned ranker" in capsys.readouterr().err
    assert not (tmp_path / "report").exists()


def test_n_is_bounded_by_a_setting(tmp_path, capsys, monkeypatch):
    with FakeOpenAI() as fake:
        argv = batch_argv(tmp_path, fake, 100_000_000)
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert "--n 100000000 is more than max_dialogues (1000000)" in err
        assert not (tmp_path / "run").exists()
        monkeypatch.setenv("IDEAS_MAX_DIALOGUES", "2")
        assert main(batch_argv(tmp_path, fake, 3)) == 2
        assert main(batch_argv(tmp_path, fake, 2)) == 0


def test_read_stored_dialogue_names_what_is_wrong():
    assert (
        read_stored_dialogue(b"[1, 2]\n")
        == "Input should be a valid dictionary or instance of DialogueDocument"
    )
    assert read_stored_dialogue(b"\xff\n") == "not UTF-8"
    assert read_stored_dialogue(b'{"format": "ideas-dialogue/1"}\n') == "no batch job id"
    document = read_stored_dialogue(json.dumps(make_doc("0.0", ["Q?"]).dump()).encode())
    assert document.job == "0.0"


def test_old_run_directories_still_resume_and_export(tmp_path):
    """A line as an older version wrote it: no `cached_tokens`, no index `at`; reads the same."""
    run = run_dir_of_three(tmp_path)
    path = run / DIALOGUES
    text = path.read_text().replace(', "cached_tokens": 0', "")
    path.write_text(text)
    lines = [json.loads(line) for line in (run / INDEX).read_text().splitlines()]
    (run / INDEX).write_text(
        "".join(json.dumps({k: v for k, v in e.items() if k != "at"}) + "\n" for e in lines)
    )
    store = BatchStore.open(run)
    assert store.done() == {"0.0", "1.0", "2.0"} and store.damage is None
    out = tmp_path / "x.jsonl"
    assert export_openai(run, out)[0] == 0 and exported_jobs(out) == ["0.0", "1.0", "2.0"]


def test_a_batch_run_directory_in_the_older_format_resumes_and_exports_through_the_cli(
    tmp_path, capsys
):
    """A run directory `ideas batch` wrote, turned into the older on-disk format (usage without
    `cached_tokens`, index lines without `at`), resumes (only the missing job runs) and exports."""
    run = tmp_path / "run"
    with FakeOpenAI() as fake:
        assert main(batch_argv(tmp_path, fake, 2)) == 0
        text = (run / DIALOGUES).read_text()
        older = re.sub(r', "cached_tokens": \d+|"cached_tokens": \d+, ', "", text)
        assert older != text and "cached_tokens" not in older
        (run / DIALOGUES).write_text(older)
        entries = [json.loads(line) for line in (run / INDEX).read_text().splitlines()]
        assert all("at" in e for e in entries)
        (run / INDEX).write_text(
            "".join(json.dumps({k: v for k, v in e.items() if k != "at"}) + "\n" for e in entries)
        )
        capsys.readouterr()
        code = main(batch_argv(tmp_path, fake, 3))
    out, err = capsys.readouterr()
    assert (code, err) == (0, "") and "warning" not in out
    assert "stored now          1" in out  # only the new job ran
    assert sorted(jobs(run)) == ["000000.0", "000001.0", "000002.0"]
    assert (run / DIALOGUES).read_text().startswith(older)  # the older lines kept as they were
    out_file = tmp_path / "x.jsonl"
    code, printed = export_openai(run, out_file)
    assert code == 0 and "skipped" not in printed
    assert sorted(exported_jobs(out_file)) == ["000000.0", "000001.0", "000002.0"]
