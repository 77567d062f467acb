"""Which failures are the user's input (exit 2) and which are the environment's (exit 1)."""

from __future__ import annotations

from runtime.urls import redact_urls


class UsageError(ValueError):
    """Bad input found by the CLI itself; the message is one line."""


def classify(exc: BaseException) -> int | None:
    """Return the exit code for a known, user-facing failure, or None for a bug.

    Exit 2: bad input (seeds, settings, output paths, store names and paths, any filesystem
    error naming a file). Exit 1: a service that did not answer (model server, Chroma server,
    embedding model).
    """
    from agents.chat import ModelError
    from batch.ray_executor import RaySettingsError
    from batch.store import BatchStoreError
    from dialogues.output import OutputError
    from dialogues.seeds import SeedError
    from runtime.server import ServerError
    from runtime.settings import SettingsError
    from stores.base import StoreError, StoreUnavailable
    from stores.embeddings import EmbeddingUnavailable
    from stores.starter import LibraryNotFound
    from training import TrainingError
    from training.job import TrainingInputError
    from wiring.session import RetrievalUnavailable

    if isinstance(
        exc,
        UsageError
        | SeedError
        | OutputError
        | SettingsError
        | LibraryNotFound
        | BatchStoreError
        | RaySettingsError
        | RetrievalUnavailable
        | StoreError
        | TrainingInputError,
    ):
        return 2
    if isinstance(
        exc, ServerError | ModelError | EmbeddingUnavailable | StoreUnavailable | TrainingError
    ):
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
