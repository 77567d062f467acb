"""Which filters run and with what thresholds, and the error raised when a filter cannot run."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from dialogues.errors import InputError

TOLERANCE = 1e-6
"""Scores this close below a threshold count as reaching it (rapidfuzz's cutoffs are inexact:
`0.8 * 100` is 80.00000000000001, and 0.8 as a normalised-distance cutoff rounds the other way)."""

FILTER_NAMES = ("truncate_refusals", "self_repeat", "dedup", "contamination", "min_turns")


class FilterError(InputError, ValueError):
    """A filter cannot run (an unusable benchmark file, no embedder); the message is one line."""


class FilterConfig(BaseModel):
    """Which filters run, and their thresholds."""

    model_config = ConfigDict(extra="forbid")

    truncate_refusals: bool = True
    self_repeat: bool = True
    self_repeat_threshold: float = Field(default=0.8, gt=0.0, le=1.0)
    dedup: bool = True
    dedup_threshold: float = Field(default=0.95, gt=0.0, le=1.0)
    contamination_files: list[Path] = Field(default_factory=list)
    contamination_action: Literal["flag", "drop"] = "flag"
    contamination_threshold: float = Field(default=0.8, gt=0.0, le=1.0)
    min_turns: int = Field(default=2, ge=0)

    @property
    def contamination(self) -> bool:
        """Whether the contamination check runs (benchmark files were given)."""
        return bool(self.contamination_files)
