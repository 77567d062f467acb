"""A batch's run directory: manifest, append-only dialogue store and job index, crash-safe.

Layout of `runs/NAME/`:

- `batch.json`: the manifest (seed source and its hash, n, turns, settings), written atomically.
- `dialogues.jsonl`: one finished dialogue document per line, appended and fsynced, never edited.
- `index.jsonl`: one line per job outcome (`done` with the dialogue's byte offset, or `failed`
  with the reason), appended after the dialogue line is on disk. A later line for the same job
  supersedes an earlier one (a failed job retried, say).
- `checkpoints.sqlite`: LangGraph's checkpoints of dialogues in flight (see `batch.runner`).

A process killed at any point leaves at most one partial line at the end of a JSONL file: it has
no trailing newline, is ignored by readers and cut off when the store is next opened for writing.
A dialogue line that reached the disk before its index line is found and indexed on open.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from dialogues.output import utf8, write_json_atomic

MANIFEST = "batch.json"
DIALOGUES = "dialogues.jsonl"
INDEX = "index.jsonl"
CHECKPOINTS = "checkpoints.sqlite"
FORMAT = "ideas-batch/1"


class BatchStoreError(ValueError):
    """The run directory is missing, unreadable or not a batch; one line for the user."""


def load_manifest(run_dir: Path) -> dict[str, Any]:
    """Return the manifest of the batch in `run_dir`.

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
    return manifest


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


def iter_dialogues(run_dir: Path) -> Iterator[dict[str, Any]]:
    """Yield the finished dialogue documents of a batch, in the order they were stored."""
    for _, line in _complete_lines(Path(run_dir) / DIALOGUES):
        yield json.loads(line)


def read_index(run_dir: Path) -> dict[str, dict[str, Any]]:
    """Return the latest index entry per job id."""
    entries: dict[str, dict[str, Any]] = {}
    for _, line in _complete_lines(Path(run_dir) / INDEX):
        entry = json.loads(line)
        entries[entry["job"]] = entry
    return entries


def job_counts(run_dir: Path) -> dict[str, int]:
    """Return how many jobs are done and how many failed (latest outcome per job)."""
    counts = {"done": 0, "failed": 0}
    for entry in read_index(run_dir).values():
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

    @classmethod
    def open(cls, run_dir: Path) -> BatchStore:
        """Open `run_dir` for appending, repairing what a crash may have left behind."""
        run_dir = Path(run_dir)
        run_dir.mkdir(parents=True, exist_ok=True)
        for name in (DIALOGUES, INDEX):
            _truncate_partial_tail(run_dir / name)
        store = cls(run_dir, read_index(run_dir))
        store._index_unindexed_dialogues()
        return store

    def _index_unindexed_dialogues(self) -> None:
        indexed = [e["offset"] for e in self.index.values() if e["status"] == "done"]
        start = 0
        if indexed:
            last = max(indexed)
            start = last + len(next(_complete_lines(self.run_dir / DIALOGUES, last))[1])
        for offset, line in _complete_lines(self.run_dir / DIALOGUES, start):
            document = json.loads(line)
            self._index_done(document, offset)
            self.repaired += 1

    @property
    def dialogues_path(self) -> Path:
        """The append-only file of finished dialogues."""
        return self.run_dir / DIALOGUES

    @property
    def checkpoints_path(self) -> Path:
        """The SQLite file of LangGraph checkpoints for dialogues in flight."""
        return self.run_dir / CHECKPOINTS

    def write_manifest(self, manifest: dict[str, Any]) -> None:
        """Write the manifest atomically."""
        write_json_atomic(self.run_dir / MANIFEST, {"format": FORMAT, **manifest})

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

    def turns_done(self) -> int:
        """Return the number of generated turns in stored dialogues."""
        return sum(e.get("turns", 0) for e in self.index.values() if e["status"] == "done")

    def strategy_uses(self) -> dict[str, int]:
        """Return strategy id -> number of stored turns that applied it."""
        uses: dict[str, int] = {}
        for entry in self.index.values():
            for sid in entry.get("strategies", []) if entry["status"] == "done" else []:
                uses[sid] = uses.get(sid, 0) + 1
        return uses


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")
