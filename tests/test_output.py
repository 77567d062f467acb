import json
import os
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

from dialogues.output import (
    OutputError,
    StagedWrites,
    check_writable,
    remove_stale_temps,
    write_json_atomic,
)

ROOT = Path(__file__).resolve().parents[1]

DOC = {"dialogue": [{"role": "user", "content": "Qu'est-ce qu'un café ☕ ?"}], "turns": 1}


def leftovers(directory):
    return sorted(p.name for p in directory.iterdir() if p.name.startswith("."))


# write_json_atomic


def test_writes_pretty_utf8_json(tmp_path):
    path = tmp_path / "out.json"
    write_json_atomic(path, DOC)
    text = path.read_text(encoding="utf-8")
    assert json.loads(text) == DOC
    assert "café ☕" in text
    assert text.startswith('{\n  "dialogue"')
    assert leftovers(tmp_path) == []


def test_creates_parent_directories(tmp_path):
    path = tmp_path / "a" / "b" / "out.json"
    write_json_atomic(str(path), DOC)
    assert json.loads(path.read_text(encoding="utf-8")) == DOC
    assert leftovers(path.parent) == []


def test_replaces_an_existing_file_and_keeps_its_mode(tmp_path):
    path = tmp_path / "out.json"
    path.write_text("old", encoding="utf-8")
    path.chmod(0o640)
    write_json_atomic(path, DOC)
    assert json.loads(path.read_text(encoding="utf-8")) == DOC
    assert stat.S_IMODE(path.stat().st_mode) == 0o640


@pytest.mark.skipif(os.name != "posix", reason="POSIX permissions")
def test_new_file_is_not_private_to_the_temp_mode(tmp_path):
    path = tmp_path / "out.json"
    umask = os.umask(0o022)
    try:
        write_json_atomic(path, DOC)
    finally:
        os.umask(umask)
    assert stat.S_IMODE(path.stat().st_mode) == 0o644


def test_unserialisable_data_keeps_the_old_file(tmp_path):
    path = tmp_path / "out.json"
    path.write_text('{"old": true}', encoding="utf-8")
    with pytest.raises(TypeError):
        write_json_atomic(path, {"bad": object()})
    assert path.read_text(encoding="utf-8") == '{"old": true}'
    assert leftovers(tmp_path) == []


@pytest.mark.parametrize("step", ["fsync", "replace"])
def test_failure_midway_removes_the_temp_file(tmp_path, monkeypatch, step):
    path = tmp_path / "out.json"
    path.write_text('{"old": true}', encoding="utf-8")

    def fail(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, step, fail)
    with pytest.raises(OutputError) as info:
        write_json_atomic(path, DOC)
    assert str(info.value) == f"{path}: cannot write: no space left on device"
    assert path.read_text(encoding="utf-8") == '{"old": true}'
    assert leftovers(tmp_path) == []


def test_unexpected_error_midway_removes_the_temp_file(tmp_path, monkeypatch):
    def boom(*args, **kwargs):
        raise RuntimeError("boom")

    monkeypatch.setattr(os, "replace", boom)
    with pytest.raises(RuntimeError):
        write_json_atomic(tmp_path / "out.json", DOC)
    assert list(tmp_path.iterdir()) == []


def test_writing_onto_a_directory_fails_cleanly(tmp_path):
    target = tmp_path / "out.json"
    target.mkdir()
    with pytest.raises(OutputError) as info:
        write_json_atomic(target, DOC)
    assert "\n" not in str(info.value)
    assert leftovers(tmp_path) == []


# check_writable


def test_check_writable_accepts_a_new_path_and_creates_its_directory(tmp_path):
    path = tmp_path / "runs" / "x" / "dialogue.json"
    check_writable(path)
    assert path.parent.is_dir()
    assert not path.exists()
    assert list(path.parent.iterdir()) == []


def test_check_writable_accepts_an_existing_file(tmp_path):
    path = tmp_path / "dialogue.json"
    path.write_text("{}", encoding="utf-8")
    check_writable(path)
    assert path.read_text(encoding="utf-8") == "{}"


def test_check_writable_rejects_a_directory(tmp_path):
    with pytest.raises(OutputError, match="is a directory") as info:
        check_writable(tmp_path)
    assert str(info.value).startswith(f"{tmp_path}: ")


def test_check_writable_rejects_a_trailing_separator(tmp_path):
    with pytest.raises(OutputError, match="is a directory"):
        check_writable(f"{tmp_path}/new/")


@pytest.mark.parametrize("depth", [1, 2])
def test_check_writable_rejects_a_file_in_the_way(tmp_path, depth):
    blocker = tmp_path / "blocker"
    blocker.write_text("", encoding="utf-8")
    path = blocker / "sub" / "out.json" if depth == 2 else blocker / "out.json"
    with pytest.raises(OutputError, match="a file is in the way") as info:
        check_writable(path)
    message = str(info.value)
    assert "\n" not in message and "out.json" in message


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0, reason="root can write anywhere")
def test_check_writable_rejects_a_read_only_directory(tmp_path):
    directory = tmp_path / "ro"
    directory.mkdir()
    directory.chmod(0o500)
    try:
        with pytest.raises(OutputError, match="not writable"):
            check_writable(directory / "out.json")
    finally:
        directory.chmod(0o700)


def test_check_writable_reports_a_refused_probe(tmp_path, monkeypatch):
    def refuse(*args, **kwargs):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr("tempfile.NamedTemporaryFile", refuse)
    with pytest.raises(OutputError) as info:
        check_writable(tmp_path / "out.json")
    assert str(info.value) == (
        f"{tmp_path / 'out.json'}: directory {str(tmp_path)!r} is not writable: permission denied"
    )


def test_output_error_is_a_value_error():
    assert isinstance(OutputError("x.json", "a\nb"), ValueError)
    assert str(OutputError("x.json", "a\nb")) == "x.json: a b"


# stale temporary files (a writer killed before its rename)

WRITER = """
import sys
from dialogues.output import write_lines_atomic

def lines():
    yield "x" * 100_000
    print("writing", flush=True)
    sys.stdin.readline()  # blocks until killed
    yield "never"

write_lines_atomic(sys.argv[1], lines())
"""


def test_a_killed_writers_temp_file_is_removed_by_the_next_write(tmp_path):
    target = tmp_path / "out.json"
    writer = subprocess.Popen(
        [sys.executable, "-c", WRITER, str(target)],
        cwd=ROOT,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert writer.stdout.readline() == "writing\n"
    assert len(leftovers(tmp_path)) == 1  # its temp file, being written
    writer.kill()
    writer.wait()
    write_json_atomic(target, DOC)
    assert json.loads(target.read_text(encoding="utf-8")) == DOC
    assert leftovers(tmp_path) == []


def test_only_temp_files_of_gone_writers_are_removed(tmp_path):
    gone = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True
    )
    dead = int(gone.stdout)
    alive = os.getppid()
    names = {
        "dead": f".out.json.{dead}-abc123.tmp",
        "dead probe": f".out.json.{dead}-abc123.probe",
        "alive": f".out.json.{alive}-def456.tmp",
        "mine": f".out.json.{os.getpid()}-ghi789.tmp",
        "old, no pid": ".out.json.m4y0xsqm.tmp",
        "fresh, no pid": ".out.json.q2w3e4r5.tmp",
        "other target": f".other.json.{dead}-abc123.tmp",
    }
    for name in names.values():
        (tmp_path / name).write_text("partial")
    two_hours_ago = time.time() - 7200
    os.utime(tmp_path / names["old, no pid"], (two_hours_ago, two_hours_ago))
    assert remove_stale_temps(tmp_path / "out.json") == 3
    kept = {"alive", "mine", "fresh, no pid", "other target"}
    assert leftovers(tmp_path) == sorted(names[k] for k in kept)


# files written together


def test_staged_files_land_together_or_not_at_all(tmp_path, monkeypatch):
    data, card = tmp_path / "x.jsonl", tmp_path / "x.jsonl.card.json"
    data.write_text("old data\n")
    card.write_text('{"old": true}\n')
    calls = []
    real_fsync = os.fsync

    def full_disk_on_the_second_file(fd):
        calls.append(fd)
        if len(calls) == 2:
            raise OSError(28, "No space left on device")
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", full_disk_on_the_second_file)
    with pytest.raises(OutputError, match="no space left on device"), StagedWrites() as staged:
        staged.write_lines(data, ["new data"])
        staged.write_json(card, {"new": True})
    assert data.read_text() == "old data\n" and card.read_text() == '{"old": true}\n'
    assert leftovers(tmp_path) == []
    monkeypatch.setattr(os, "fsync", real_fsync)
    with StagedWrites() as staged:
        staged.write_lines(data, ["new data"])
        staged.write_json(card, {"new": True})
    assert data.read_text() == "new data\n" and json.loads(card.read_text()) == {"new": True}
    assert leftovers(tmp_path) == []
