"""A batch's run directory: manifest, append-only dialogue store and job index, crash-safe.

Layout of `runs/NAME/`:

- `batch.json`: the manifest (seed source and its hash, n, turns, settings), written atomically.
- `dialogues.jsonl`: one finished dialogue document per line, appended and fsynced, never edited.
- `index.jsonl`: one line per job outcome (`done` with the dialogue's byte offset, or `failed`
  with the reason), appended after the dialogue line is on disk. A later line for the same job
  supersedes an earlier one (a failed job retried, say).
- `checkpoints.sqlite`: LangGraph's checkpoints of dialogues in flight (see `batch.runner`).

- `.lock`: the writer lock (see `hold_run_dir`); one process writes a run directory at a time.

A process killed at any point leaves at most one partial line at the end of a JSONL file: it has
no trailing newline, is ignored by readers and cut off when the store is next opened for writing.
A dialogue line that reached the disk before its index line is found and indexed on open.

Damage a crash cannot cause (a file cut short or edited, a line torn in the middle, junk in the
index or the checkpoints, a job stored twice by two processes before the lock existed) never
stops a reader or a resume: readers skip and count lines that are not a dialogue, take the first
readable line of each job, and `BatchStore.open` re-queues jobs whose dialogue cannot be read and
moves unusable checkpoints aside, reporting all of it in `BatchStore.damage`.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import sqlite3
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from dialogues.errors import InputError
from dialogues.models import BATCH_FORMAT, BatchManifest
from dialogues.output import utf8, write_json_atomic

MANIFEST = "batch.json"
DIALOGUES = "dialogues.jsonl"
INDEX = "index.jsonl"
CHECKPOINTS = "checkpoints.sqlite"
LOCK = ".lock"
FORMAT = BATCH_FORMAT


class BatchStoreError(InputError, ValueError):
    """The run directory is missing, unreadable or not a batch; one line for the user."""


class RunDirBusy(BatchStoreError):
    """Another process holds the run directory's writer lock."""


@contextlib.contextmanager
def hold_run_dir(run_dir: Path) -> Iterator[None]:
    """Hold the exclusive writer lock of `run_dir` (created if missing) for the `with` block.

    The lock is an `fcntl.flock` on `run_dir/.lock`, which records the holder's pid for the
    message a second process gets. The kernel releases it when the holding process ends in any
    way (SIGKILL and power loss included), so a stale lock never blocks a resume. The descriptor
    is close-on-exec: a child process (a model server) never inherits the lock.

    Raises:
        RunDirBusy: Another process holds the lock; nothing was written.
        BatchStoreError: The directory or its lock file cannot be created.
    """
    run_dir = Path(run_dir)
    path = run_dir / LOCK
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    except OSError as exc:
        raise BatchStoreError(f"{path}: cannot create the lock file ({_why(exc)})") from None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
            pid = f" (pid {holder})" if holder.isdigit() else ""
            raise RunDirBusy(
                f"another run is using {run_dir}{pid}; wait for it to end or use another --out"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode("ascii"), 0)
        yield
    finally:
        os.close(fd)


@contextlib.contextmanager
def hold_run_dirs(run_dirs: Iterable[Path]) -> Iterator[None]:
    """Hold the writer locks of several run directories (see `hold_run_dir`)."""
    with contextlib.ExitStack() as stack:
        for run_dir in run_dirs:
            stack.enter_context(hold_run_dir(run_dir))
        yield


def load_manifest(run_dir: Path) -> BatchManifest:
    """Return the manifest of the batch in `run_dir`, typed.

    Raises:
        BatchStoreError: There is no batch there, or its manifest is not valid.
    """
    path = Path(run_dir) / MANIFEST
    if not Path(run_dir).is_dir():
        raise BatchStoreError(f"{run_dir}: no such batch directory")
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise BatchStoreError(f"{run_dir}: not a batch directory (no {MANIFEST})") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise BatchStoreError(f"{path}: unreadable manifest ({exc})") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise BatchStoreError(f"{path}: not a {FORMAT} manifest")
    try:
        return BatchManifest.model_validate(manifest)
    except ValidationError as exc:
        reason = " ".join(str(exc).split("\n")[:3])
        raise BatchStoreError(f"{path}: not a valid {FORMAT} manifest ({reason})") from None


def _complete_lines(path: Path, start: int = 0) -> Iterator[tuple[int, bytes]]:
    """Yield (offset, line) for each newline-terminated line from `start` (partial tail skipped)."""
    try:
        handle = path.open("rb")
    except FileNotFoundError:
        return
    with handle:
        handle.seek(start)
        offset = start
        for line in handle:
            if not line.endswith(b"\n"):
                return
            yield offset, line
            offset += len(line)


@dataclass
class Skipped:
    """Lines a reader passed over; all zero for an undamaged run directory."""

    unreadable: int = 0
    """Lines of `dialogues.jsonl` that are not a dialogue document (torn, not JSON, bad shape)."""
    duplicates: int = 0
    """Lines of `dialogues.jsonl` for a job already read (two writers before the lock existed)."""
    index: int = 0
    """Lines of `index.jsonl` that are not a job outcome."""

    def describe(self) -> str:
        """Return what was skipped, for one line of text ('' when nothing was)."""
        parts = []
        if self.unreadable:
            parts.append(f"{_lines(self.unreadable, 'unreadable ')} in {DIALOGUES}")
        if self.duplicates:
            parts.append(f"{_lines(self.duplicates, 'duplicate ')} in {DIALOGUES}")
        if self.index:
            parts.append(f"{_lines(self.index, 'unreadable ')} in {INDEX}")
        return ", ".join(parts)

    def as_dict(self) -> dict[str, int]:
        """Return the counts as plain JSON data."""
        return {
            "unreadable_lines": self.unreadable,
            "duplicate_lines": self.duplicates,
            "unreadable_index_lines": self.index,
        }


def _lines(count: int, kind: str) -> str:
    return f"{count} {kind}line{'s' if count != 1 else ''}"


def dialogue_shape_error(document: Any) -> str | None:
    """Return why `document` is not a stored dialogue the readers can use, or None if it is.

    Checks the parts every reader relies on: a job id, a list of text messages, and a list of
    turn records (no more than the messages hold) whose sub-records have the expected types.
    """
    if not isinstance(document, dict):
        return "not a JSON object"
    batch = document.get("batch")
    if not isinstance(batch, dict) or not isinstance(batch.get("job"), str) or not batch["job"]:
        return "no batch job id"
    messages = document.get("messages")
    if not isinstance(messages, list) or not all(
        isinstance(m, dict) and isinstance(m.get("role"), str) and isinstance(m.get("content"), str)
        for m in messages
    ):
        return "messages are not a list of text messages"
    turns = document.get("turns", [])
    if not isinstance(turns, list) or not all(isinstance(t, dict) for t in turns):
        return "turns are not a list of turn records"
    if 2 * len(turns) > len(messages):
        return "more turns than messages"
    for turn in turns:
        for key, kind in _TURN_FIELDS.items():
            value = turn.get(key)
            if value is not None and not isinstance(value, kind):
                return f"a turn's {key} is not a {kind.__name__}"
        for key in ("candidates", "drafts"):
            if not all(isinstance(item, dict) for item in turn.get(key) or []):
                return f"a turn's {key} are not records"
    return None


_TURN_FIELDS: dict[str, type] = {
    "strategy": dict,
    "selection": dict,
    "critic": dict,
    "usage": dict,
    "candidates": list,
    "drafts": list,
}


def _read_dialogue(line: bytes) -> dict[str, Any] | None:
    """Return the dialogue document on `line`, or None if the line holds none."""
    try:
        document = json.loads(line)
    except (ValueError, RecursionError):  # JSONDecodeError and UnicodeDecodeError are both
        return None
    return None if dialogue_shape_error(document) else document


def _stored_dialogues(path: Path, skipped: Skipped) -> Iterator[tuple[int, dict[str, Any]]]:
    """Yield (offset, document) for the first readable line of each job, counting the rest."""
    seen: set[str] = set()
    for offset, line in _complete_lines(path):
        document = _read_dialogue(line)
        if document is None:
            skipped.unreadable += 1
            continue
        job = document["batch"]["job"]
        if job in seen:
            skipped.duplicates += 1
            continue
        seen.add(job)
        yield offset, document


def iter_dialogues(run_dir: Path, skipped: Skipped | None = None) -> Iterator[dict[str, Any]]:
    """Yield the finished dialogue documents of a batch, in the order they were stored.

    Each job is yielded once, from its first readable line; lines that hold no dialogue document
    and later lines of a job already yielded are passed over and counted in `skipped`.
    """
    for _, document in _stored_dialogues(Path(run_dir) / DIALOGUES, skipped or Skipped()):
        yield document


def read_index(run_dir: Path, skipped: Skipped | None = None) -> dict[str, dict[str, Any]]:
    """Return the latest index entry per job id (unreadable lines are counted in `skipped`)."""
    entries: dict[str, dict[str, Any]] = {}
    for _, line in _complete_lines(Path(run_dir) / INDEX):
        entry = _read_entry(line)
        if entry is None:
            if skipped is not None:
                skipped.index += 1
            continue
        entries[entry["job"]] = entry
    return entries


def _read_entry(line: bytes) -> dict[str, Any] | None:
    """Return the job outcome on an index line, or None if the line holds none."""
    try:
        entry = json.loads(line)
    except (ValueError, RecursionError):
        return None
    if not isinstance(entry, dict) or not isinstance(entry.get("job"), str):
        return None
    if entry.get("status") == "done" or (
        entry.get("status") == "failed" and isinstance(entry.get("reason"), str)
    ):
        return entry
    return None


def job_counts(run_dir: Path, skipped: Skipped | None = None) -> dict[str, int]:
    """Return how many jobs are done and how many failed (latest outcome per job)."""
    counts = {"done": 0, "failed": 0}
    for entry in read_index(run_dir, skipped).values():
        counts[entry["status"]] += 1
    return counts


def _truncate_partial_tail(path: Path) -> None:
    """Cut a trailing partial line (a write interrupted by a crash) off `path`."""
    if not path.exists():
        return
    with path.open("rb+") as handle:
        size = handle.seek(0, os.SEEK_END)
        if size == 0:
            return
        handle.seek(size - 1)
        if handle.read(1) == b"\n":
            return
        block, end = 4096, size
        while end > 0:
            start = max(0, end - block)
            handle.seek(start)
            chunk = handle.read(end - start)
            cut = chunk.rfind(b"\n")
            if cut >= 0:
                handle.truncate(start + cut + 1)
                break
            end = start
        else:
            handle.truncate(0)
        handle.flush()
        os.fsync(handle.fileno())


def _append_line(path: Path, record: dict[str, Any]) -> int:
    """Append one JSON line durably; return the offset it was written at."""
    data = utf8(json.dumps(record, ensure_ascii=False) + "\n")
    with path.open("ab") as handle:
        offset = handle.seek(0, os.SEEK_END)
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())
    return offset


@dataclass
class BatchStore:
    """The writable view of a run directory: who is done, who failed, and appending outcomes."""

    run_dir: Path
    index: dict[str, dict[str, Any]] = field(default_factory=dict)
    repaired: int = 0
    """Dialogue lines found on open that had no index line yet (a crash between the two)."""
    skipped: Skipped = field(default_factory=Skipped)
    """Lines passed over on open (damage no crash causes)."""
    requeued: list[str] = field(default_factory=list)
    """Jobs indexed as done whose dialogue line is missing or unreadable: they run again."""
    checkpoints_moved: Path | None = None
    """Where unusable checkpoints were moved on open (None: they were fine)."""

    @classmethod
    def open(cls, run_dir: Path) -> BatchStore:
        """Open `run_dir` for appending, repairing what a crash (or other damage) left behind.

        The caller should hold the directory's lock (`hold_run_dir`).
        """
        run_dir = Path(run_dir)
        run_dir.mkdir(parents=True, exist_ok=True)
        for name in (DIALOGUES, INDEX):
            _truncate_partial_tail(run_dir / name)
        skipped = Skipped()
        store = cls(run_dir, read_index(run_dir, skipped), skipped=skipped)
        store._reconcile()
        store._check_checkpoints()
        return store

    def _reconcile(self) -> None:
        """Make the index agree with the readable dialogue lines.

        A readable dialogue whose job is not indexed as done is indexed (the process died
        between the two appends, or the index line was damaged); a job indexed as done without a
        readable dialogue line is forgotten, so that it runs again.
        """
        found: set[str] = set()
        for offset, document in _stored_dialogues(self.dialogues_path, self.skipped):
            job = document["batch"]["job"]
            found.add(job)
            if self.status(job) != "done":
                self._index_done(document, offset)
                self.repaired += 1
        self.requeued = sorted(
            job for job, e in self.index.items() if e["status"] == "done" and job not in found
        )
        for job in self.requeued:
            del self.index[job]

    def _check_checkpoints(self) -> None:
        """Move a checkpoint file SQLite cannot read aside (it only caches dialogues in flight)."""
        path = self.checkpoints_path
        if not path.exists():
            return
        try:
            with contextlib.closing(sqlite3.connect(path)) as conn:
                healthy = conn.execute("PRAGMA quick_check").fetchone() == ("ok",)
        except sqlite3.DatabaseError:
            healthy = False
        if healthy:
            return
        moved = path.with_name(f"{CHECKPOINTS}.broken")
        for suffix in ("", "-wal", "-shm", "-journal"):
            source = path.with_name(path.name + suffix)
            if source.exists():
                os.replace(source, moved.with_name(moved.name + suffix))
        self.checkpoints_moved = moved

    @property
    def damage(self) -> str | None:
        """Return one line on what `open` found damaged and did about it (None: nothing)."""
        parts = []
        if self.requeued:
            count = len(self.requeued)
            parts.append(
                f"{count} stored dialogue{'s' if count != 1 else ''} missing or unreadable "
                "(generated again)"
            )
        if self.skipped.describe():
            parts.append(f"skipped {self.skipped.describe()}")
        if self.checkpoints_moved is not None:
            parts.append(
                f"{CHECKPOINTS} unreadable, moved to {self.checkpoints_moved.name} "
                "(dialogues in flight start over)"
            )
        return f"{self.run_dir}: damaged run directory: {'; '.join(parts)}" if parts else None

    @property
    def dialogues_path(self) -> Path:
        """The append-only file of finished dialogues."""
        return self.run_dir / DIALOGUES

    @property
    def checkpoints_path(self) -> Path:
        """The SQLite file of LangGraph checkpoints for dialogues in flight."""
        return self.run_dir / CHECKPOINTS

    def write_manifest(self, manifest: BatchManifest | dict[str, Any]) -> None:
        """Write the manifest atomically (its `format` first, set to this one)."""
        data = BatchManifest.of(manifest).dump()
        data.pop("format", None)
        write_json_atomic(self.run_dir / MANIFEST, {"format": FORMAT, **data})

    def status(self, job: str) -> str | None:
        """Return `done`, `failed` or None (never finished)."""
        entry = self.index.get(job)
        return entry["status"] if entry else None

    def done(self) -> set[str]:
        """Return the ids of jobs whose dialogue is stored."""
        return {job for job, e in self.index.items() if e["status"] == "done"}

    def failed(self) -> dict[str, str]:
        """Return job id -> reason for jobs whose latest outcome is a failure."""
        return {job: e["reason"] for job, e in self.index.items() if e["status"] == "failed"}

    def add_dialogue(self, document: dict[str, Any]) -> None:
        """Store a finished dialogue (its `batch.job` names the job), then index it."""
        job = document["batch"]["job"]
        if self.status(job) == "done":
            raise ValueError(f"job {job} is already stored")
        offset = _append_line(self.dialogues_path, document)
        self._index_done(document, offset)

    def _index_done(self, document: dict[str, Any], offset: int) -> None:
        turns = document.get("turns", [])
        entry = {
            "job": document["batch"]["job"],
            "status": "done",
            "offset": offset,
            "turns": len(turns),
            "strategies": [t["strategy"]["id"] for t in turns if t.get("strategy")],
            "at": _now(),
        }
        _append_line(self.run_dir / INDEX, entry)
        self.index[entry["job"]] = entry

    def add_failure(self, job: str, reason: str) -> None:
        """Record that `job` failed (it is retried only with `--retry-failed`)."""
        attempts = self.index.get(job, {}).get("attempts", 0) + 1
        entry = {"job": job, "status": "failed", "reason": reason, "attempts": attempts}
        _append_line(self.run_dir / INDEX, entry | {"at": _now()})
        self.index[job] = entry

    def strategy_uses(self) -> dict[str, int]:
        """Return strategy id -> number of stored turns that applied it."""
        uses: dict[str, int] = {}
        for entry in self.index.values():
            for sid in entry.get("strategies", []) if entry["status"] == "done" else []:
                uses[sid] = uses.get(sid, 0) + 1
        return uses


def _why(exc: OSError) -> str:
    return (exc.strerror or str(exc)).lower()


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")
