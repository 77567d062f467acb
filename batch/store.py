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
import errno
import fcntl
import json
import os
import sqlite3
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from stat import S_ISLNK, S_ISREG
from typing import Any

from pydantic import ValidationError

from dialogues.errors import InputError
from dialogues.models import BATCH_FORMAT, BatchManifest, DialogueDocument, IndexEntry
from dialogues.output import utf8, write_json_atomic
from dialogues.text import parse_stored_json

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


class StoreFull(BatchStoreError):
    """The run directory's disk is full; everything stored before is intact."""

    def __init__(self, run_dir: Path) -> None:
        """Say where, and that a resume after freeing space goes on."""
        super().__init__(
            f"{run_dir}: no space left on the device; what was stored is kept: "
            "free some space and run the same command again to go on"
        )


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
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | _NO_FOLLOW, 0o644)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise BatchStoreError(
                f"{path}: is a symbolic link; a run directory's lock must be its own "
                "(remove the link and run again)"
            ) from None
        raise BatchStoreError(f"{path}: cannot create the lock file ({_why(exc)})") from None
    try:
        _check_own_file(path, os.fstat(fd))
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


_NO_FOLLOW = os.O_NOFOLLOW | os.O_NONBLOCK
"""Open flags for the files a run directory's writer opens in place: a symlink there is refused
(`ELOOP`) rather than followed, and a FIFO does not block the open (it is refused next)."""


def _check_own_file(path: Path, stat: os.stat_result) -> None:
    """Refuse to write a store file that is not a regular file of its own (see `_NO_FOLLOW`).

    A run directory is something people copy, share and unpack: a `.lock` or an index that is a
    link to a file elsewhere (`~/.ssh/authorized_keys`) or a FIFO must never be truncated or
    appended to.

    Raises:
        BatchStoreError: `path` is not a regular file.
    """
    if not S_ISREG(stat.st_mode):
        raise BatchStoreError(f"{path}: not a regular file; remove it and run again")


def _check_store_files(run_dir: Path) -> None:
    """Refuse a run directory whose store files are symlinks or not regular files (see above).

    The manifest is left out: it is only ever replaced by a rename, which never follows a link.

    Raises:
        BatchStoreError: One of them is.
    """
    for name in (DIALOGUES, INDEX, *_checkpoint_files()):
        path = run_dir / name
        try:
            stat = os.lstat(path)
        except FileNotFoundError:
            continue
        except OSError as exc:
            raise BatchStoreError(f"{path}: cannot be read ({_why(exc)})") from None
        if S_ISLNK(stat.st_mode):
            raise BatchStoreError(
                f"{path}: is a symbolic link; a run directory's files must be its own "
                "(remove the link and run again)"
            )
        _check_own_file(path, stat)


def _checkpoint_files() -> tuple[str, ...]:
    return tuple(CHECKPOINTS + suffix for suffix in ("", "-wal", "-shm", "-journal"))


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
        manifest = parse_stored_json(path.read_bytes())
    except FileNotFoundError:
        raise BatchStoreError(f"{run_dir}: not a batch directory (no {MANIFEST})") from None
    except (OSError, ValueError) as exc:
        raise BatchStoreError(f"{path}: unreadable manifest ({exc})") from None
    # .get: raw JSON not yet validated; the format tag is checked before the model reads it
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
    where: list[str] = field(default_factory=list)
    """The first few skipped lines, by file and line number, with why (`dialogues.jsonl line
    3: status: Input should be a valid string`)."""

    SHOWN = 3
    """How many skipped lines `where` keeps."""

    def note(self, kind: str, where: str) -> None:
        """Count one skipped line of `kind` (a counter's name), remembering where it is."""
        setattr(self, kind, getattr(self, kind) + 1)
        if len(self.where) < self.SHOWN:
            self.where.append(where)

    def describe(self) -> str:
        """Return what was skipped, for one line of text ('' when nothing was)."""
        parts = []
        if self.unreadable:
            parts.append(f"{_lines(self.unreadable, 'unreadable ')} in {DIALOGUES}")
        if self.duplicates:
            parts.append(f"{_lines(self.duplicates, 'duplicate ')} in {DIALOGUES}")
        if self.index:
            parts.append(f"{_lines(self.index, 'unreadable ')} in {INDEX}")
        if not parts:
            return ""
        more = self.unreadable + self.duplicates + self.index - len(self.where)
        shown = "; ".join(self.where) + (f"; {more} more" if more > 0 else "")
        return f"{', '.join(parts)} ({shown})"

    def as_dict(self) -> dict[str, int]:
        """Return the counts as plain JSON data."""
        return {
            "unreadable_lines": self.unreadable,
            "duplicate_lines": self.duplicates,
            "unreadable_index_lines": self.index,
        }


def _lines(count: int, kind: str) -> str:
    return f"{count} {kind}line{'s' if count != 1 else ''}"


def read_stored_dialogue(line: bytes) -> DialogueDocument | str:
    """Return the dialogue document stored on `line`, or why the line holds none.

    A readable dialogue is one that validates as a `DialogueDocument` and names its batch job:
    the one definition that resume, export and eval share, so a line is either read by all of
    them or skipped and counted by all of them (and its job generated again).
    """
    try:
        data = parse_stored_json(line)
    except ValueError as exc:
        return _not_json(exc)
    try:
        document = DialogueDocument.model_validate(data)
    except ValidationError as exc:
        return validation_reason(exc)
    return document if document.job else "no batch job id"


def validation_reason(exc: ValidationError) -> str:
    """Return the first error of a validation as one short line (`turns.0.strategy.id: ...`)."""
    first = exc.errors(include_url=False, include_context=False, include_input=False)[0]
    where = ".".join(str(part) for part in first["loc"])
    why = first["msg"].removeprefix("Value error, ")
    return f"{where}: {why}" if where else why


def _not_json(exc: ValueError) -> str:
    """Say briefly why a line is not JSON (a decoder's message without its position)."""
    if isinstance(exc, UnicodeDecodeError):
        return "not UTF-8"
    return f"not JSON ({getattr(exc, 'msg', None) or str(exc)})"


def _stored_dialogues(path: Path, skipped: Skipped) -> Iterator[tuple[int, DialogueDocument]]:
    """Yield (offset, document) for the first readable line of each job, counting the rest."""
    seen: set[str] = set()
    for number, (offset, line) in enumerate(_complete_lines(path), start=1):
        document = read_stored_dialogue(line)
        if isinstance(document, str):
            skipped.note("unreadable", f"{path.name} line {number}: {document}")
            continue
        job = document.job
        if job in seen:
            skipped.note("duplicates", f"{path.name} line {number}: job {job} again")
            continue
        seen.add(job)
        yield offset, document


def iter_dialogues(run_dir: Path, skipped: Skipped | None = None) -> Iterator[DialogueDocument]:
    """Yield the finished dialogue documents of a batch, in the order they were stored.

    Each job is yielded once, from its first readable line (see `read_stored_dialogue`); lines
    that hold no dialogue document and later lines of a job already yielded are passed over and
    counted in `skipped`.
    """
    for _, document in _stored_dialogues(Path(run_dir) / DIALOGUES, skipped or Skipped()):
        yield document


def read_index(run_dir: Path, skipped: Skipped | None = None) -> dict[str, IndexEntry]:
    """Return the latest index entry per job id (unreadable lines are counted in `skipped`)."""
    path = Path(run_dir) / INDEX
    entries: dict[str, IndexEntry] = {}
    for number, (_, line) in enumerate(_complete_lines(path), start=1):
        entry = _read_entry(line)
        if isinstance(entry, str):
            if skipped is not None:
                skipped.note("index", f"{INDEX} line {number}: {entry}")
            continue
        entries[entry.job] = entry
    return entries


def _read_entry(line: bytes) -> IndexEntry | str:
    """Return the job outcome on an index line, or why the line holds none."""
    try:
        data = parse_stored_json(line)
    except ValueError as exc:
        return _not_json(exc)
    try:
        return IndexEntry.model_validate(data)
    except ValidationError as exc:
        return validation_reason(exc)


def job_counts(run_dir: Path, skipped: Skipped | None = None) -> dict[str, int]:
    """Return how many jobs are done and how many failed (latest outcome per job)."""
    counts = {"done": 0, "failed": 0}
    for entry in read_index(run_dir, skipped).values():
        counts[entry.status] += 1
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
    """Append one JSON line durably; return the offset it was written at.

    The file is never reached through a symlink (see `_NO_FOLLOW`).

    Raises:
        StoreFull: The disk (or quota) is full; what was stored before is intact.
        OSError: Another filesystem error, naming the file.
    """
    data = utf8(json.dumps(record, ensure_ascii=False, allow_nan=False) + "\n")
    flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC | _NO_FOLLOW
    try:
        fd = os.open(path, flags, 0o644)
        with os.fdopen(fd, "ab") as handle:
            offset = handle.seek(0, os.SEEK_END)
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
    except OSError as exc:
        if is_disk_full(exc):
            raise StoreFull(path.parent) from None
        raise OSError(exc.errno, exc.strerror, str(path)) from None
    return offset


@dataclass
class BatchStore:
    """The writable view of a run directory: who is done, who failed, and appending outcomes."""

    run_dir: Path
    index: dict[str, IndexEntry] = field(default_factory=dict)
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
        _check_store_files(run_dir)
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
            job = document.job
            found.add(job)
            if self.status(job) != "done":
                self._index_done(document, offset)
                self.repaired += 1
        self.requeued = sorted(
            job for job, e in self.index.items() if e.status == "done" and job not in found
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
        entry = self.index.get(job)  # .get: job -> IndexEntry; None: never finished
        return entry.status if entry else None

    def done(self) -> set[str]:
        """Return the ids of jobs whose dialogue is stored."""
        return {job for job, e in self.index.items() if e.status == "done"}

    def failed(self) -> dict[str, str]:
        """Return job id -> reason for jobs whose latest outcome is a failure."""
        return {job: e.reason or "" for job, e in self.index.items() if e.status == "failed"}

    def add_dialogue(self, document: DialogueDocument | dict[str, Any]) -> None:
        """Store a finished dialogue (its `batch.job` names the job), then index it.

        A mapping is validated first: the store never writes a line its readers would skip.

        Raises:
            ValueError: The document is not a readable dialogue (`pydantic.ValidationError`),
                names no job, or its job is already stored.
        """
        document = DialogueDocument.of(document)
        job = document.job
        if not job:
            raise ValueError("a stored dialogue needs its batch job id")
        if self.status(job) == "done":
            raise ValueError(f"job {job} is already stored")
        offset = _append_line(self.dialogues_path, document.dump())
        self._index_done(document, offset)

    def _index_done(self, document: DialogueDocument, offset: int) -> None:
        entry = IndexEntry(
            job=document.job,
            status="done",
            offset=offset,
            turns=len(document.turns),
            strategies=[t.strategy.id for t in document.turns if t.strategy],
            at=_now(),
        )
        _append_line(self.run_dir / INDEX, entry.dump())
        self.index[entry.job] = entry

    def add_failure(self, job: str, reason: str) -> None:
        """Record that `job` failed (it is retried only with `--retry-failed`)."""
        earlier = self.index.get(job)  # .get: job -> IndexEntry; None: first attempt
        attempts = (earlier.attempts if earlier else 0) + 1
        entry = IndexEntry(job=job, status="failed", reason=reason, attempts=attempts, at=_now())
        _append_line(self.run_dir / INDEX, entry.dump())
        self.index[job] = entry

    def strategy_uses(self) -> Counter[str]:
        """Return strategy id -> number of stored turns that applied it."""
        done = (entry for entry in self.index.values() if entry.status == "done")
        return Counter(sid for entry in done for sid in entry.strategies)


def is_disk_full(exc: BaseException) -> bool:
    """Whether `exc` says the disk (or the user's quota) is full: a file's or SQLite's error."""
    if isinstance(exc, OSError):
        return exc.errno in (errno.ENOSPC, errno.EDQUOT)
    return isinstance(exc, sqlite3.Error) and (
        getattr(exc, "sqlite_errorcode", None) == sqlite3.SQLITE_FULL
    )


def _why(exc: OSError) -> str:
    return (exc.strerror or str(exc)).lower()


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")
