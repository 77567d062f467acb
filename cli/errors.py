"""Which failures are the user's input (exit 2) and which are a service's (exit 1)."""

from __future__ import annotations

from dialogues.errors import InputError, ServiceError
from runtime.urls import redact_urls


class UsageError(InputError, ValueError):
    """Bad input found by the CLI itself; the message is one line."""


def classify(exc: BaseException) -> int | None:
    """Return the exit code for a known, user-facing failure, or None for a bug.

    Exit 2: bad input (`InputError`: seeds, settings, flags, output paths, store names and paths;
    and any filesystem error naming a file). Exit 1: a service that failed (`ServiceError`: the
    model server, the Chroma server, the embedding model, a training run). Every error class of
    the project derives from one of the two (`dialogues.errors`; a test holds them to it).
    """
    if isinstance(exc, InputError):
        return 2
    if isinstance(exc, ServiceError):
        return 1
    if _filesystem_error(exc):
        return 2
    return None


def message(exc: BaseException) -> str:
    """Return the one-line message of a classified failure, URLs redacted.

    A filesystem error reads `<path>: <reason>` (not Python's `[Errno N] ...: '<path>'`).
    """
    if _filesystem_error(exc) and isinstance(exc, OSError):
        text = f"{_path(exc.filename)}: {(exc.strerror or str(exc)).lower()}"
    else:
        text = str(exc) or type(exc).__name__
    return redact_urls(" ".join(text.split()))


def _filesystem_error(exc: BaseException) -> bool:
    """Whether `exc` is an OSError about a named file (not a network error)."""
    return isinstance(exc, OSError) and exc.filename is not None


def _path(name: object) -> str:
    """Show a file name the way a terminal would, even when it is not valid UTF-8."""
    import os

    if isinstance(name, bytes | str):
        return os.fsencode(name).decode("utf-8", "backslashreplace")
    return str(name)
