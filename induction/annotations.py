"""Strategies written by people: load an annotation file and check it against the real pairs.

An annotation file is JSONL, one extraction a line: `{"source", "record_id", "turn", "analysis",
"strategy"}` and optionally `"annotator"`. Annotated extractions stand in for (or are compared
with) the LLM extractor's, so they pass the same strategy rules.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from pydantic import ValidationError

from dialogues.errors import InputError
from dialogues.text import parse_json
from induction.extract import Extraction, Key, PairLike
from induction.strategy_check import validate_strategy


class AnnotationError(InputError, ValueError):
    """A bad annotation file; `str()` is one line: `<path>:<line>: <reason>`."""


def load_extractions(path: str | Path) -> list[Extraction]:
    """Read and validate an annotation file; blank lines are skipped.

    Raises:
        AnnotationError: The file cannot be read, or a line is not JSON or not a valid extraction.
    """
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        reason = getattr(exc, "strerror", None) or exc
        raise AnnotationError(f"{path}: cannot read: {reason}") from None
    extractions = []
    for number, line in enumerate(text.split("\n"), 1):
        if line.strip():
            extractions.append(_parse(line, f"{path}:{number}"))
    return extractions


def _parse(line: str, where: str) -> Extraction:
    try:
        data = parse_json(line)
    except json.JSONDecodeError as exc:
        raise AnnotationError(f"{where}: not JSON: {exc.msg} (column {exc.colno})") from None
    if not isinstance(data, dict):
        raise AnnotationError(f"{where}: expected a JSON object, got {type(data).__name__}")
    try:
        return Extraction.model_validate(data)
    except ValidationError as exc:
        error = exc.errors()[0]
        field_name = ".".join(str(part) for part in error["loc"]) or "line"
        raise AnnotationError(f"{where}: {field_name}: {error['msg']}") from None


@dataclass
class AnnotationReport:
    """How a set of extractions matches the pairs and the strategy rules."""

    checked: int = 0
    invalid: list[tuple[Key, str]] = field(default_factory=list)
    """Extractions whose strategy fails `validate_strategy` against the real follow-up, and why."""
    without_pair: list[Key] = field(default_factory=list)
    """Extractions whose key names no loaded pair."""
    without_extraction: list[Key] = field(default_factory=list)
    """Pairs nobody annotated."""
    duplicates: list[Key] = field(default_factory=list)
    """Keys annotated more than once."""

    @property
    def ok(self) -> bool:
        """Whether every extraction is valid, matched and unique (unannotated pairs are fine)."""
        return not (self.invalid or self.without_pair or self.duplicates)

    def summary(self) -> str:
        """Return one line of counts."""
        return (
            f"{self.checked} extractions: {len(self.invalid)} invalid, "
            f"{len(self.without_pair)} without a pair, {len(self.duplicates)} duplicate keys; "
            f"{len(self.without_extraction)} pairs without an extraction"
        )


def check_annotations(
    extractions: Iterable[Extraction], pairs_by_key: Mapping[Key, PairLike]
) -> AnnotationReport:
    """Check each extraction's strategy against its real follow-up, and the keys both ways."""
    extractions = list(extractions)
    report = AnnotationReport(checked=len(extractions))
    counts = Counter(extraction.key for extraction in extractions)
    report.duplicates = [key for key, count in counts.items() if count > 1]
    for extraction in extractions:
        pair = pairs_by_key.get(extraction.key)
        if pair is None:
            report.without_pair.append(extraction.key)
            continue
        reason = validate_strategy(extraction.strategy, pair.followup, answer=pair.answer)
        if reason is not None:
            report.invalid.append((extraction.key, reason))
    report.without_extraction = [key for key in pairs_by_key if key not in counts]
    return report
