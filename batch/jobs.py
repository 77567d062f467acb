"""Seed sources for a batch, and the deterministic job plan built from them.

A seed source is any of:
- a file of seed dialogues (OpenAI message lists or ShareGPT records, JSON or JSON Lines),
  each used whole;
- a file of opening questions: `.txt` (one per line), or JSON / JSON Lines of strings or of
  objects with a `question`, `prompt`, `instruction` or `text` field;
- a real-dialogue corpus the loaders read (OpenAssistant trees or flat lists, HH-RLHF,
  MT-Bench-101): each dialogue's opening exchange (first question and its answer) is the seed.

`--opening-only` uses the opening exchange of OpenAI / ShareGPT dialogues too.
"""

from __future__ import annotations

import hashlib
import random
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from dialogues.formats import NotDialogueFile, Record, detect, read_records
from dialogues.seeds import TEXT_SUFFIXES, Seed, SeedError, parse_seed
from dialogues.text import display_path, is_blank
from induction.records import Dialogue

QUESTION_KEYS = ("question", "prompt", "instruction", "text")
WHOLE_FORMATS = frozenset({"openai", "sharegpt"})


@dataclass
class SeedSet:
    """The seeds read from one source, in file order."""

    path: Path
    sha256: str
    format: str
    """`questions`, or the dialogue format the loaders detected."""
    seeds: list[Seed]
    skipped: Counter[str] = field(default_factory=Counter)
    """Reason -> records that gave no usable seed."""
    order: str = "file"
    """`file`, or `shuffled (seed N)`: the seeds were put in a random order fixed by N."""

    def shuffled(self, seed: int) -> SeedSet:
        """Return the same seeds in a random order that depends only on `seed`.

        Useful when the file is sorted (by task, say) and `--n` is below the seed count.
        """
        seeds = list(self.seeds)
        random.Random(seed).shuffle(seeds)
        return replace(self, seeds=seeds, order=f"shuffled (seed {seed})")

    def describe(self) -> dict[str, Any]:
        """Return the manifest's description of the source."""
        return {
            "path": display_path(self.path),
            "sha256": self.sha256,
            "format": self.format,
            "count": len(self.seeds),
            "skipped": dict(self.skipped),
            "order": self.order,
        }


@dataclass(frozen=True)
class Job:
    """One dialogue to grow: seed number `seed_index`, its `repeat`-th use."""

    seed_index: int
    repeat: int

    @property
    def id(self) -> str:
        """Stable id, also the LangGraph thread id of its checkpoints."""
        return f"{self.seed_index:06d}.{self.repeat}"

    @property
    def number(self) -> int:
        """A distinct integer per job (for per-job sampling seeds)."""
        return self.repeat * 1_000_000 + self.seed_index


def plan_jobs(seed_count: int, n: int) -> list[Job]:
    """Return `n` jobs going through the seeds in order, starting over when they run out.

    The plan depends only on the two numbers, so a resumed or extended batch finds the same ids.
    """
    if seed_count <= 0:
        return []
    return [Job(i % seed_count, i // seed_count) for i in range(n)]


def load_seed_set(path: Path, *, opening_only: bool = False, limit: int | None = None) -> SeedSet:
    """Read every seed of a seed source (or its first `limit` questions).

    Args:
        path: The seed source.
        opening_only: Seed with each dialogue's opening exchange also for OpenAI/ShareGPT files.
        limit: Stop after this many questions of a `.txt` file: a batch of `--n` dialogues
            from the start of a huge file parses only what it uses. The job plan is the same
            as with every question read (`plan_jobs` takes seed `i` for job `i < n`).

    Raises:
        SeedError: The file cannot be read, or holds no usable seed.
    """
    path = Path(path)
    source = display_path(path)
    try:
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
    except FileNotFoundError:
        raise SeedError(source, "file not found") from None
    except IsADirectoryError:
        raise SeedError(source, "is a directory, not a seed file") from None
    except OSError as exc:
        raise SeedError(source, f"cannot read file: {exc.strerror or exc}") from None
    if path.suffix.lower() in TEXT_SUFFIXES:
        seeds, skipped, kind = _question_lines(path, source, limit)
    else:
        seeds, skipped, kind = _records(path, source, opening_only)
    if not seeds:
        reasons = "; ".join(f"{r} ({n})" for r, n in skipped.most_common(3))
        raise SeedError(source, f"no usable seed{': ' + reasons if reasons else ''}")
    return SeedSet(path, digest, kind, seeds, skipped)


def _question_lines(
    path: Path, source: str, limit: int | None
) -> tuple[list[Seed], Counter[str], str]:
    seeds: list[Seed] = []
    lines = (part for line in _physical_lines(path) for part in line.splitlines())
    try:
        for number, line in enumerate(lines, start=1):
            if limit is not None and len(seeds) >= limit:
                break
            if not is_blank(line):
                seeds.append(parse_seed(line.strip(), f"{source}:{number}"))
    except UnicodeDecodeError:
        raise SeedError(source, "not UTF-8 text") from None
    return seeds, Counter(), "questions"


def _physical_lines(path: Path) -> Iterator[str]:
    """Yield the lines of a UTF-8 text file one at a time (the file is never read whole)."""
    with path.open(encoding="utf-8-sig") as handle:
        yield from handle


def _records(path: Path, source: str, opening_only: bool) -> tuple[list[Seed], Counter[str], str]:
    skipped: Counter[str] = Counter()
    try:
        records = read_records(path, skipped=skipped)
    except NotDialogueFile as exc:
        raise SeedError(source, exc.reason) from None
    try:
        kind = detect(path, records)
    except NotDialogueFile:
        return _parse_each(records, source, skipped, questions=True), skipped, "questions"
    if kind in WHOLE_FORMATS and not opening_only:
        return _parse_each(records, source, skipped, questions=False), skipped, kind
    from induction.loaders import load

    result = load(path, kind)
    skipped.update(result.skipped)
    return [_opening(d, source) for d in result.dialogues], skipped, kind


def _parse_each(
    records: list[Record], source: str, skipped: Counter[str], *, questions: bool
) -> list[Seed]:
    """Parse every record as a seed (a question field first, if `questions`); count failures."""
    seeds = []
    for index, _, data in records:
        if questions and isinstance(data, dict):
            # .get: a foreign seed record (any JSON object); its question field may be absent
            data = next((data[k] for k in QUESTION_KEYS if isinstance(data.get(k), str)), data)
        try:
            seeds.append(parse_seed(data, f"{source}#{index}"))
        except SeedError as exc:
            skipped[exc.reason] += 1
    return seeds


def _opening(dialogue: Dialogue, source: str) -> Seed:
    turns = [{"role": t.role, "content": t.text} for t in dialogue.turns[:2]]
    return parse_seed(turns, f"{source}#{dialogue.record_id}")
