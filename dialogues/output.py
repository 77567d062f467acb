"""Write output documents atomically, and check a destination before any work is done.

A reader never sees a half-written file: data goes to a temporary file in the target's own
directory, is flushed to disk, then renamed over the target in one step. Filesystem failures are
`OutputError`s with a one-line message starting with the path, fit to show a user as is.
"""

from __future__ import annotations

import contextlib
import json
import os
import stat
import tempfile
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, BinaryIO

from dialogues.text import display_path, scrub


class OutputError(ValueError):
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
        with tempfile.NamedTemporaryFile(dir=parent, prefix=f".{target.name}.", suffix=".probe"):
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
    target = Path(path)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputError(path, f"cannot create its directory: {_why(exc)}") from None
    tmp_name: str | None = None
    try:
        with tempfile.NamedTemporaryFile(
            dir=target.parent, prefix=f".{target.name}.", suffix=".tmp", delete=False
        ) as tmp:
            tmp_name = tmp.name
            fill(tmp)
            tmp.flush()
            os.fsync(tmp.fileno())
        os.chmod(tmp_name, _target_mode(target))
        os.replace(tmp_name, target)
        tmp_name = None
    except OSError as exc:
        raise OutputError(path, f"cannot write: {_why(exc)}") from None
    finally:
        if tmp_name is not None:
            with contextlib.suppress(OSError):
                os.unlink(tmp_name)
    _fsync_directory(target.parent)


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
