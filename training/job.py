"""What one training run is: its inputs and settings, and the id that ties checkpoints to it."""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from dialogues.errors import InputError
from training.pairs import StrategyLevel


class TrainingInputError(InputError, ValueError):
    """The run's inputs or output folder cannot be used; the message is one line."""


def file_digest(path: Path) -> str:
    """Return the sha256 of a file."""
    with path.open("rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()


@dataclass(frozen=True)
class TrainJob:
    """The inputs and settings of one `train-simulator` run (plain data, no torch)."""

    dialogues: list[Path]
    extractions: Path
    library: Path
    out: Path
    base: Path
    with_strategy: bool = True
    level: StrategyLevel = "high"
    history_tokens: int = 2400
    max_length: int = 1024
    """Examples longer than this many tokens are left out (counted in the card): activation
    memory grows with length (~4.7 GB peak RSS at 1024 tokens)."""
    held_out: float = 0.1
    eval_limit: int | None = None
    """Evaluate on at most this many held-out pairs (None: all)."""
    threads: int = 1
    """Torch threads."""
    lora: dict[str, Any] = field(default_factory=dict)
    loop: dict[str, Any] = field(default_factory=dict)

    @property
    def variant(self) -> str:
        """`ideas` (strategy in the prompt) or `plain`."""
        return "ideas" if self.with_strategy else "plain"

    def sources(self) -> dict[str, str]:
        """Return the sha256 of every input file, by name."""
        files = [*self.dialogues, self.extractions, self.library / "records.jsonl", self.base]
        return {path.name: file_digest(path) for path in files}

    def settings(self) -> dict[str, Any]:
        """Return the settings for the card."""
        return {
            "variant": self.variant,
            "strategy_level": self.level if self.with_strategy else None,
            "history_tokens": self.history_tokens,
            "max_length": self.max_length,
            "held_out_share": self.held_out,
            "eval_limit": self.eval_limit,
            "threads": self.threads,
            "lora": self.lora,
            "loop": self.loop,
        }

    def run_id(self, sources: dict[str, str]) -> str:
        """Hash what makes checkpoints reusable: data and settings, except how long to train."""
        settings = self.settings()
        settings["loop"] = {
            k: v for k, v in settings["loop"].items() if k not in ("epochs", "max_steps")
        }
        del settings["threads"]
        text = json.dumps({"sources": sources, "settings": settings}, sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    def as_dict(self) -> dict[str, Any]:
        """Return plain data (paths as text)."""
        data = asdict(self)
        return {k: str(v) if isinstance(v, Path) else v for k, v in data.items()}
