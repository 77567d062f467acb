"""Write output documents atomically, and check a destination before any work is done.

A reader never sees a half-written file: data goes to a temporary file in the target's own
directory, is flushed to disk, then renamed over the target in one step. Filesystem failures are
`OutputError`s with a one-line message starting with the path, fit to show a user as is.

Files that belong together (an export and its data card) are written with `StagedWrites`: every
file goes to its temporary file first, and only when all are on disk are they renamed.

A temporary file is named `.<target name>.<pid>-<random>.tmp` (`.probe` for `check_writable`'s
probe). A process killed while writing leaves it behind; the next write to the same target removes
it (see `remove_stale_temps`).
"""

from __future__ import annotations

import contextlib
import json
import os
import stat
import tempfile
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, BinaryIO

from dialogues.errors import InputError
from dialogues.text import display_path, scrub


class OutputError(InputError, ValueError):
    """An output path that cannot be written; `str()` is one line starting with the path."""

    def __init__(self, path: str | Path, reason: str) -> None:
        """Build the message `"<path>: <reason>"`, folded onto one line."""
        self.path = str(path)
        self.reason = " ".join(reason.split())
        super().__init__(f"{self.path}: {self.reason}")


def check_writable(path: str | Path) -> None:
    """Fail early, before generating anything, if `path` cannot be written.

    Creates the parent directories (they would be created by the write anyway) and probes the
    directory with a temporary file, which is removed again.

    Args:
        path: The output file that will later be written with `write_json_atomic`.

    Raises:
        OutputError: The path names a directory, or its directory cannot be created or written.
    """
    target = Path(path)
    if str(path).endswith(("/", os.sep)) or target.is_dir():
        raise OutputError(path, "is a directory; give a file path such as dialogue.json")
    if target.exists() and not target.is_file():
        raise OutputError(path, "exists and is not a regular file")
    parent = target.parent
    try:
        parent.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError):
        raise OutputError(
            path, f"cannot create directory {str(parent)!r}: a file is in the way"
        ) from None
    except OSError as exc:
        raise OutputError(path, f"cannot create directory {str(parent)!r}: {_why(exc)}") from None
    try:
        with tempfile.NamedTemporaryFile(dir=parent, prefix=_temp_prefix(target), suffix=PROBE):
            pass
    except OSError as exc:
        raise OutputError(path, f"directory {str(parent)!r} is not writable: {_why(exc)}") from None


def check_directory_writable(path: str | Path) -> None:
    """Fail early if the output directory `path` is a file or cannot be created or written.

    Nothing is created: a directory that does not exist yet is probed through its nearest
    existing ancestor (a read-only filesystem or missing permissions show there).

    Raises:
        OutputError: `path` is a file, a file is in the way, or the place is not writable.
    """
    target = Path(path)
    if target.exists() and not target.is_dir():
        raise OutputError(display_path(path), "exists and is not a directory")
    existing = next(p for p in (target, *target.absolute().parents) if p.exists())
    if not existing.is_dir():
        raise OutputError(
            display_path(path), f"cannot create it: {display_path(existing)!r} is a file"
        )
    if not os.access(existing, os.W_OK | os.X_OK):
        raise OutputError(display_path(path), f"{display_path(existing)!r} is not writable")


def write_json_atomic(path: str | Path, data: dict[str, Any]) -> None:
    """Write `data` as UTF-8 JSON (indent 2, non-ASCII kept) to `path`, atomically.

    On any failure the temporary file is removed and an existing file at `path` is untouched.

    Args:
        path: The destination file; missing parent directories are created.
        data: A JSON-serialisable mapping.

    Raises:
        TypeError: `data` holds something JSON cannot encode (a programming error).
        ValueError: `data` holds a circular reference.
        OutputError: The filesystem refused (permissions, disk full, a directory in the way...).
    """
    text = json.dumps(data, ensure_ascii=False, indent=2) + "\n"
    write_bytes_atomic(path, utf8(text))


def write_lines_atomic(path: str | Path, lines: Iterable[str]) -> None:
    """Write `lines` (each without its newline) to `path` as UTF-8, atomically, streaming them.

    Raises:
        OutputError: As `write_bytes_atomic`.
    """

    def fill(handle: BinaryIO) -> None:
        for line in lines:
            handle.write(utf8(line))
            handle.write(b"\n")

    _write_atomic(path, fill)


def utf8(text: str) -> bytes:
    """Encode `text` as UTF-8; a lone surrogate (which UTF-8 cannot hold) becomes U+FFFD.

    A finished document is never lost to one undecodable character of a file name or input.
    """
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError:
        return scrub(text).encode("utf-8")


def write_bytes_atomic(path: str | Path, data: bytes) -> None:
    """Write `data` to `path` atomically (see `write_json_atomic`).

    Raises:
        OutputError: The filesystem refused (permissions, disk full, a directory in the way...).
    """
    _write_atomic(path, lambda handle: handle.write(data))


def _write_atomic(path: str | Path, fill: Callable[[BinaryIO], object]) -> None:
    """Let `fill` write a temporary file beside `path`, fsync it, and rename it over `path`.

    On any failure the temporary file is removed and an existing file at `path` is untouched.
    """
    with StagedWrites() as staged:
        staged.write(path, fill)


class StagedWrites:
    """Write several files so that they land together: all renamed into place, or none.

    Each `write` fills a temporary file beside its target and syncs it to disk; `commit` then
    renames every one over its target (renames in one directory need no space, so a full disk or
    a failed write is found before any target changes). On failure, or `discard`, the temporary
    files are removed and the old targets are untouched. Only a crash between two renames, a
    window of microseconds, can leave some targets new and others old.

    Used as a context manager, it commits when the block ends normally and discards otherwise.
    """

    def __init__(self) -> None:
        """Start with nothing staged."""
        self._staged: list[tuple[str, Path]] = []

    def __enter__(self) -> StagedWrites:
        """Return self."""
        return self

    def __exit__(self, kind: type[BaseException] | None, *rest: object) -> None:
        """Commit after a normal end, discard after an exception."""
        if kind is None:
            self.commit()
        else:
            self.discard()

    def write(self, path: str | Path, fill: Callable[[BinaryIO], object]) -> None:
        """Let `fill` write the future content of `path` to a synced temporary file.

        Raises:
            OutputError: The filesystem refused (permissions, disk full, a directory in the way).
        """
        target = Path(path)
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise OutputError(path, f"cannot create its directory: {_why(exc)}") from None
        if target.is_dir():  # found now, not when the files staged before are already renamed
            raise OutputError(path, "cannot write: is a directory")
        remove_stale_temps(target)
        tmp_name: str | None = None
        try:
            with tempfile.NamedTemporaryFile(
                dir=target.parent, prefix=_temp_prefix(target), suffix=TEMP, delete=False
            ) as tmp:
                tmp_name = tmp.name
                self._staged.append((tmp_name, target))
                fill(tmp)
                tmp.flush()
                os.fsync(tmp.fileno())
            os.chmod(tmp_name, _target_mode(target))
        except OSError as exc:
            raise OutputError(path, f"cannot write: {_why(exc)}") from None

    def write_lines(self, path: str | Path, lines: Iterable[str]) -> None:
        """Stage `lines` (each without its newline) as UTF-8 for `path` (see `write_lines_atomic`).

        Raises:
            OutputError: As `write`.
        """

        def fill(handle: BinaryIO) -> None:
            for line in lines:
                handle.write(line.encode("utf-8"))
                handle.write(b"\n")

        self.write(path, fill)

    def write_json(self, path: str | Path, data: dict[str, Any]) -> None:
        """Stage `data` as JSON for `path` (see `write_json_atomic`).

        Raises:
            OutputError: As `write`.
        """
        text = json.dumps(data, ensure_ascii=False, indent=2) + "\n"
        self.write(path, lambda handle: handle.write(text.encode("utf-8")))

    def commit(self) -> None:
        """Rename every staged file over its target, then sync their directories.

        Raises:
            OutputError: A rename failed; the files not yet renamed are removed.
        """
        directories: list[Path] = []
        try:
            while self._staged:
                tmp_name, target = self._staged[0]
                try:
                    os.replace(tmp_name, target)
                except OSError as exc:
                    raise OutputError(target, f"cannot write: {_why(exc)}") from None
                self._staged.pop(0)
                if target.parent not in directories:
                    directories.append(target.parent)
        finally:
            self.discard()
        for directory in directories:
            _fsync_directory(directory)

    def discard(self) -> None:
        """Remove every staged temporary file; the targets stay as they were."""
        staged, self._staged = self._staged, []
        for tmp_name, _ in staged:
            with contextlib.suppress(OSError):
                os.unlink(tmp_name)


TEMP = ".tmp"
PROBE = ".probe"


def _temp_prefix(target: Path) -> str:
    return f".{target.name}.{os.getpid()}-"


def remove_stale_temps(target: str | Path) -> int:
    """Remove temporary files of writes to `target` whose writing process is gone.

    A write killed before its rename (SIGKILL, power loss) leaves `.<name>.<pid>-<random>.tmp`
    (or `.probe`) beside the target. Such a file is removed when the process `<pid>` no longer
    exists: a live writer's file is never touched, whichever process it is. A pid reused by an
    unrelated live process only keeps the file until that process ends, the safe side. Files
    named without a pid (written before pids were part of the name) are removed when they were
    last modified over an hour ago (a writer keeps its file's time fresh while it writes).

    Returns:
        The number of files removed.
    """
    target = Path(target)
    prefix = f".{target.name}."
    removed = 0
    try:
        entries = list(os.scandir(target.parent))
    except OSError:
        return 0
    for entry in entries:
        name = entry.name
        if not name.startswith(prefix) or not name.endswith((TEMP, PROBE)):
            continue
        middle = name[len(prefix) : name.rindex(".")]
        if not _stale(entry, middle):
            continue
        with contextlib.suppress(OSError):
            os.unlink(entry.path)
            removed += 1
    return removed


LEGACY_TEMP_AGE = 3600.0
"""Seconds after its last change that a temporary file without a pid in its name is stale."""


def _stale(entry: os.DirEntry, middle: str) -> bool:
    """Whether the temporary file `entry` (name part `middle`, `<pid>-<random>`) is abandoned."""
    pid_text, dash, _ = middle.partition("-")
    if dash and pid_text.isdigit():
        return int(pid_text) != os.getpid() and not _alive(int(pid_text))
    try:
        return time.time() - entry.stat(follow_symlinks=False).st_mtime > LEGACY_TEMP_AGE
    except OSError:
        return False


def _alive(pid: int) -> bool:
    """Whether a process with this id exists (one we may not signal counts as alive)."""
    if pid <= 0:
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True
    return True


def _target_mode(target: Path) -> int:
    """Keep an existing file's permissions; otherwise use the usual 0o666 less the umask."""
    try:
        return stat.S_IMODE(target.stat().st_mode)
    except OSError:
        umask = os.umask(0o022)
        os.umask(umask)
        return 0o666 & ~umask


def _fsync_directory(directory: Path) -> None:
    """Make the rename durable where the platform allows opening a directory."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _why(exc: OSError) -> str:
    return (exc.strerror or str(exc)).lower()
