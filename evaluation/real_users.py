"""The real-user level of strategy adherence, as committed by `benchmarks/adherence_ceiling.py`.

Every `eval`/`ablate` report prints it beside the generated adherence, so each report shows the
gap. The figure is *read* from `real_user_adherence.json` (written by
`python benchmarks/adherence_ceiling.py --json evaluation/real_user_adherence.json`), not computed
per report: computing it needs the real dialogue files (shared data, not shipped) and one library
build and ranker fit per fold, minutes of CPU; it depends only on the team-annotated real
dialogues and the library build, not on the dialogues being evaluated.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict

LEVEL_FILE = Path(__file__).with_name("real_user_adherence.json")


class LevelRow(BaseModel):
    """Real users' top-1 adherence over some pairs, with its interval and chance."""

    model_config = ConfigDict(extra="allow")

    top1: float | None = None
    lo: float | None = None
    hi: float | None = None
    chance: float | None = None
    pairs: int | None = None


class Level(BaseModel):
    """The benchmark's JSON: over all pairs (`all`, its top-1 required) and per source."""

    model_config = ConfigDict(extra="allow")

    all: LevelRow
    by_source: dict[str, LevelRow] = {}


def real_user_adherence(path: Path = LEVEL_FILE) -> dict[str, Any] | None:
    """Return the committed benchmark result, or None when the file is missing or unreadable."""
    try:
        data = json.loads(path.read_bytes())
        level = Level.model_validate(data)
    except (OSError, ValueError):  # ValidationError and JSONDecodeError are ValueErrors
        return None
    return data if level.all.top1 is not None else None


def describe(data: dict[str, Any]) -> str:
    """One line: the real users' top-1 with its interval, chance, and per source."""
    level = Level.model_validate(data)
    overall = level.all
    sources = ", ".join(
        f"{name.split('.')[0]} {row.top1:.3f}"
        for name, row in level.by_source.items()
        if row.top1 is not None
    )
    text = (
        f"real users' strategy adherence (top-1) {overall.top1:.3f} "
        f"[{overall.lo:.3f}, {overall.hi:.3f}], chance {overall.chance:.3f}, "
        f"over {overall.pairs} real follow-ups"
    )
    return text + (f" ({sources})" if sources else "")
