"""A content-keyed, append-only cache of extraction results, so extraction runs can resume.

Each finished pair (extraction or rejection) is appended to a JSONL file as one line, written in
one call and synced to disk, so a killed run loses at most the line being written. Lines are keyed
by a hash of everything that decides the model's output - model name, prompt template, output
schema, the dialogue history and the follow-up - so a re-run repeats no LLM call for a pair it has
finished, and a changed prompt or model starts afresh on its own.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Literal, Protocol

from pydantic import BaseModel, ValidationError

from dialogues.output import OutputError
from induction.extract import Extraction, PairLike, Rejection

Result = Extraction | Rejection


class Extractor(Protocol):
    """Turns a pair into an extraction or a rejection, and keys pairs by content."""

    fingerprint: str
    """Everything besides the pair that decides the output (model, prompt, schema)."""

    async def extract(self, pair: PairLike) -> Result:
        """Extract the strategy of `pair`."""
        ...


def cache_key(fingerprint: str, pair: PairLike) -> str:
    """Return the sha256 hex digest of `fingerprint`, the pair's history and its follow-up."""
    history = [[turn.role, turn.text] for turn in pair.history]
    payload = json.dumps([fingerprint, history, pair.followup], ensure_ascii=False)
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()


class _Line(BaseModel):
    cache_key: str
    key: tuple[str, str, int]
    outcome: Literal["extraction", "rejection"]
    result: dict


class ExtractionCache:
    """An append-only JSONL file of finished pairs, read into memory when opened.

    On opening, an incomplete last line (a crash mid-write) is cut off the file, and complete lines
    that do not parse are skipped and counted in `invalid_lines`; both only cost a repeated call.
    """

    def __init__(self, path: str | Path) -> None:
        """Open (or start) the cache at `path`; the file is created on the first `put`."""
        self.path = Path(path)
        self.invalid_lines = 0
        self.truncated_tail = False
        self._results: dict[str, Result] = {}
        self._fd: int | None = None
        self._load()

    def __len__(self) -> int:
        """Return the number of cached pairs."""
        return len(self._results)

    def __contains__(self, cache_key: object) -> bool:
        """Whether `cache_key` has a cached result."""
        return cache_key in self._results

    def get(self, cache_key: str) -> Result | None:
        """Return the cached result for `cache_key`, or None."""
        return self._results.get(cache_key)

    def put(self, cache_key: str, result: Result) -> None:
        """Append `result` under `cache_key` as one line, flushed and synced to disk.

        Raises:
            OutputError: The file cannot be written (one line, starting with the path).
        """
        outcome = "extraction" if isinstance(result, Extraction) else "rejection"
        line = {
            "cache_key": cache_key,
            "key": list(result.key),
            "outcome": outcome,
            "result": result.model_dump(mode="json"),
        }
        data = (json.dumps(line, ensure_ascii=False) + "\n").encode("utf-8")
        try:
            if self._fd is None:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o666)
            written = os.write(self._fd, data)
            while written < len(data):  # only on a nearly full disk or an odd filesystem
                written += os.write(self._fd, data[written:])
            os.fsync(self._fd)
        except OSError as exc:
            raise OutputError(self.path, f"cannot append: {exc.strerror or exc}") from None
        self._results[cache_key] = result

    def close(self) -> None:
        """Close the file; a later `put` reopens it."""
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> ExtractionCache:
        """Use as a context manager that closes the file."""
        return self

    def __exit__(self, *exc_info: object) -> None:
        """Close the file."""
        self.close()

    def _load(self) -> None:
        try:
            data = self.path.read_bytes()
        except FileNotFoundError:
            return
        except OSError as exc:
            raise OutputError(self.path, f"cannot read: {exc.strerror or exc}") from None
        complete = data.rfind(b"\n") + 1
        if complete < len(data):
            self.truncated_tail = True
            os.truncate(self.path, complete)
        for raw in data[:complete].splitlines():
            if raw.strip():
                self._read_line(raw)

    def _read_line(self, raw: bytes) -> None:
        try:
            line = _Line.model_validate_json(raw)
            model = Extraction if line.outcome == "extraction" else Rejection
            self._results[line.cache_key] = model.model_validate(line.result)
        except ValidationError:
            self.invalid_lines += 1
