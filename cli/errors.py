"""Which failures are the user's input (exit 2) and which are the environment's (exit 1)."""

from __future__ import annotations


class UsageError(ValueError):
    """Bad input found by the CLI itself; the message is one line."""


def classify(exc: BaseException) -> int | None:
    """Return the exit code for a known, user-facing failure, or None for a bug."""
    from agents.chat import ModelError
    from batch.store import BatchStoreError
    from dialogues.output import OutputError
    from dialogues.seeds import SeedError
    from runtime.server import ServerError
    from runtime.settings import SettingsError
    from stores.embeddings import EmbeddingUnavailable
    from stores.starter import LibraryNotFound
    from training import TrainingError
    from training.job import TrainingInputError

    if isinstance(
        exc,
        UsageError
        | SeedError
        | OutputError
        | SettingsError
        | LibraryNotFound
        | BatchStoreError
        | TrainingInputError,
    ):
        return 2
    if isinstance(exc, ServerError | ModelError | EmbeddingUnavailable | TrainingError):
        return 1
    return None
