"""Dataset filters for a batch's dialogues before export; each is switchable and counted.

`apply_filters` runs, in this order, on copies of the documents (the input is never mutated):

1. `truncate_refusals`: the paper's truncation at the first empty or refused answer. A dialogue is
   cut before the generated turn whose answer is empty or opens with a refusal (`is_refusal`); a
   refused opening answer (the assistant's answer to a seed that ended with a user message) is
   removed too and the dialogue keeps no generated turn.
2. `self_repeat`: a dialogue is dropped when two of its generated user turns repeat each other:
   `rapidfuzz.distance.Levenshtein.normalized_similarity` >= the threshold (0.8) on case-folded,
   whitespace-normalised text.
3. `dedup`: near-duplicate user turns across the whole dataset. Every generated user turn is
   embedded; walking the dialogues in store order, each dialogue is cut at its first user turn
   whose cosine similarity to a user turn already kept (in an earlier kept dialogue, or earlier in
   the same one) is >= the threshold (0.95). A dialogue left with fewer than `min_turns` turns is
   dropped later, so its turns do not count as kept (they would otherwise block later copies).
   Blockwise numpy matrix products keep memory bounded (about 40 MB of tiles on top of the
   embeddings) whatever the number of turns.
4. `contamination` (only with benchmark files): each generated user turn is compared with every
   user turn of the benchmark files by `rapidfuzz.fuzz.ratio / 100` (the InDel-normalised
   similarity, python-Levenshtein's `ratio`, the measure the critic's novelty check uses) on
   case-folded, whitespace-normalised text; a score >= the threshold (0.8) is a match. `flag` marks
   the turns in the document, `drop` cuts the dialogue before its first contaminated turn.
5. `min_turns`: dialogues with fewer generated turns than this (2) are dropped; 0 disables it.

A cut keeps the document consistent: `messages` loses the cut turns' messages, `turns` the cut
records, `summary.turns` is the new count and `unfinished_turn` is cleared. What a filter did is
recorded in the document's `filters` field:

```
{"generated_turns": 5,              # turns before any filter
 "truncated_at": 2, "by": "refusal",  # turns kept after the last cut, and which filter made it
 "cuts": [{"by": "refusal", "at": 2, "removed": 3}],
 "opening_removed": false,          # the refused opening answer was removed
 "contaminated_turns": [{"turn": 4, "match": "...", "score": 0.93, "source": "bench.jsonl"}]}
```

`by` is one of `refusal`, `dedup`, `contamination`.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field
from rapidfuzz import fuzz, process
from rapidfuzz.distance import Levenshtein
from rich.table import Table

from stores.memory import Embedder, embedder_name

Document = dict[str, Any]

REFUSAL_PATTERNS: tuple[str, ...] = (
    r"I(?:'m| am) sorry,? but (?:I\b|as an AI)",
    r"(?:I(?:'m| am) )?sorry,? (?:but )?I (?:can't|cannot|can not|won't|will not|am unable"
    r"|'m unable)",
    r"I apologi[sz]e,? but (?:I\b|as an AI)",
    r"I (?:cannot|can't|can not) (?:help|assist|provide|comply|fulfil|fulfill|answer|support"
    r"|do that|continue|engage|create|generate|write|share|give)",
    r"As an AI(?: language model| assistant| model)?,? I (?:cannot|can't|can not|am unable"
    r"|'m unable|am not able|do not|don't|won't|will not)",
    r"I(?: am|'m) unable to",
    r"I(?: am|'m) not able to (?:help|assist|provide|comply|answer|fulfil|fulfill)",
    r"I won't be able to",
    r"I (?:will not|won't) (?:help|assist|provide|comply|answer)",
    r"I must (?:decline|refuse)",
)
"""Common refusal openers (case-insensitive), matched at a sentence start near the answer start."""

REFUSAL_WINDOW = 200
"""Characters at the start of an answer searched for a refusal opener."""

_REFUSAL = re.compile(
    r"(?:^|(?<=[.!?\n]))[\s\"'*_>(\[]*(?:" + "|".join(REFUSAL_PATTERNS) + ")", re.IGNORECASE
)

DEDUP_BLOCK = 1024
"""User turns compared with each other per block (whole dialogues; a long one may exceed it)."""
DEDUP_TILE = 8192
"""Kept turns per matrix product; a tile of similarities is DEDUP_BLOCK x DEDUP_TILE float32."""
EMBED_CHUNK = 4096
"""Texts handed to the embedder per call."""
CONTAMINATION_CELLS = 4_000_000
"""Scores per `cdist` call (16 MB of float32)."""

BENCHMARK_FIELDS = ("question", "prompt", "instruction", "text")
"""Fields read from a benchmark record that is not a dialogue (the first that holds a string)."""

TOLERANCE = 1e-6
"""Scores this close below a threshold count as reaching it (rapidfuzz's cutoffs are inexact:
`0.8 * 100` is 80.00000000000001, and 0.8 as a normalised-distance cutoff rounds the other way)."""

FILTER_NAMES = ("truncate_refusals", "self_repeat", "dedup", "contamination", "min_turns")


class FilterError(ValueError):
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


@dataclass
class FilterStats:
    """What one filter did."""

    name: str
    enabled: bool
    dialogues_affected: int = 0
    """Dialogues the filter changed: cut, dropped or flagged."""
    turns_removed: int = 0
    """Generated turns removed (cut off, or in dropped dialogues)."""
    dialogues_dropped: int = 0
    turns_flagged: int = 0
    """Turns marked but kept (contamination `flag`; with `drop`, the contaminated turns found)."""
    settings: dict[str, Any] = field(default_factory=dict)
    details: dict[str, Any] = field(default_factory=dict)


@dataclass
class FilterReport:
    """Every filter's effect, and the dialogues and generated turns before and after."""

    dialogues_in: int = 0
    turns_in: int = 0
    dialogues_out: int = 0
    turns_out: int = 0
    filters: list[FilterStats] = field(default_factory=list)

    def stats(self, name: str) -> FilterStats:
        """Return one filter's stats by name."""
        return next(s for s in self.filters if s.name == name)

    def as_dict(self) -> dict[str, Any]:
        """Return plain JSON data."""
        return {
            "dialogues_in": self.dialogues_in,
            "dialogues_out": self.dialogues_out,
            "turns_in": self.turns_in,
            "turns_out": self.turns_out,
            "filters": {s.name: {k: v for k, v in asdict(s).items() if k != "name"} for s in self},
        }

    def __iter__(self) -> Iterator[FilterStats]:
        """Iterate over the filters' stats in the order they ran."""
        return iter(self.filters)

    def rows(self) -> list[tuple[str, str, str, str, str, str]]:
        """Return (filter, on/off, settings, affected, turns removed, dropped) per filter."""
        rows = []
        for s in self.filters:
            shown = {k: v for k, v in s.settings.items() if k != "files"}
            setting = ", ".join(f"{k}={v}" for k, v in shown.items())
            affected = str(s.dialogues_affected) if s.enabled else "-"
            if s.enabled and s.turns_flagged:
                plural = "s" if s.turns_flagged != 1 else ""
                affected += f" ({s.turns_flagged} flagged turn{plural})"
            rows.append(
                (
                    s.name,
                    "on" if s.enabled else "off",
                    setting,
                    affected,
                    str(s.turns_removed) if s.enabled else "-",
                    str(s.dialogues_dropped) if s.enabled else "-",
                )
            )
        return rows

    def table(self) -> Table:
        """Return the report as a rich table."""
        table = Table(
            title=f"filters: {self.dialogues_in} -> {self.dialogues_out} dialogues, "
            f"{self.turns_in} -> {self.turns_out} turns"
        )
        for column in ("filter", "", "settings"):
            table.add_column(column)
        for column in ("dialogues affected", "turns removed", "dropped"):
            table.add_column(column, justify="right")
        for row in self.rows():
            table.add_row(*row, style=None if row[1] == "on" else "dim")
        return table


def is_refusal(answer: str) -> bool:
    """Whether an answer is empty or opens with a refusal (`REFUSAL_PATTERNS`)."""
    text = answer.strip().replace("\u2019", "'")
    return not text or _REFUSAL.search(text[:REFUSAL_WINDOW]) is not None


def normalise_text(text: str) -> str:
    """Case-fold and collapse whitespace (how repeats and contamination are compared)."""
    return " ".join(text.casefold().split())


def turn_count(documents: Iterable[Document]) -> int:
    """Return the number of generated turns in `documents`."""
    return sum(len(d.get("turns") or []) for d in documents)


def truncate(document: Document, keep: int, by: str, *, drop_opening: bool = False) -> Document:
    """Return a copy of `document` with only its first `keep` generated turns.

    Args:
        document: A dialogue document; it is not modified.
        keep: Generated turns to keep (0 keeps only the seed and the opening answer).
        by: The filter that cuts (`refusal`, `dedup`, `contamination`), recorded in `filters`.
        drop_opening: Also remove the opening answer (only with `keep=0`).

    Returns:
        A new document whose `messages`, `turns` and `summary.turns` agree.
    """
    turns = list(document.get("turns") or [])
    messages = list(document.get("messages") or [])
    keep = max(0, min(keep, len(turns)))
    removed = len(turns) - keep
    start = len(messages) - 2 * len(turns)
    new = dict(document)
    new["turns"] = turns[:keep]
    new["messages"] = messages[: start + 2 * keep]
    filters = _filters(document)
    opening = document.get("opening")
    if drop_opening and keep == 0 and opening and start > 0:
        if messages[start - 1].get("role") == "assistant":
            new["messages"] = messages[: start - 1]
            new["opening"] = None
            filters["opening_removed"] = True
    if "summary" in document and isinstance(document["summary"], dict):
        new["summary"] = dict(document["summary"], turns=keep)
    new["unfinished_turn"] = None
    filters["truncated_at"] = keep
    filters["by"] = by
    filters["cuts"] = [*filters["cuts"], {"by": by, "at": keep, "removed": removed}]
    new["filters"] = filters
    return new


def _filters(document: Document) -> dict[str, Any]:
    """Return a fresh copy of the document's filter record, with its defaults."""
    old = document.get("filters") or {}
    return {
        "generated_turns": old.get("generated_turns", len(document.get("turns") or [])),
        "truncated_at": old.get("truncated_at"),
        "by": old.get("by"),
        "cuts": list(old.get("cuts", [])),
        "opening_removed": old.get("opening_removed", False),
        "contaminated_turns": list(old.get("contaminated_turns", [])),
    }


def _truncate_refusals(documents: list[Document], stats: FilterStats) -> list[Document]:
    out = []
    empty = refused = opening = 0
    for doc in documents:
        turns = doc.get("turns") or []
        answer = (doc.get("opening") or {}).get("answer")
        if doc.get("opening") and answer is not None and is_refusal(answer):
            opening += 1
            stats.dialogues_affected += 1
            stats.turns_removed += len(turns)
            out.append(truncate(doc, 0, "refusal", drop_opening=True))
            continue
        cut = next((i for i, t in enumerate(turns) if is_refusal(t.get("answer") or "")), None)
        if cut is None:
            out.append(doc)
            continue
        if (turns[cut].get("answer") or "").strip():
            refused += 1
        else:
            empty += 1
        stats.dialogues_affected += 1
        stats.turns_removed += len(turns) - cut
        out.append(truncate(doc, cut, "refusal"))
    stats.details = {"refused_answers": refused, "empty_answers": empty}
    stats.details["refused_openings"] = opening
    return out


def repeats_itself(instructions: Sequence[str], threshold: float) -> bool:
    """Whether any two of `instructions` have a normalised Levenshtein similarity >= threshold."""
    if len(instructions) < 2:
        return False
    texts = [normalise_text(t) for t in instructions]
    cutoff = threshold - TOLERANCE
    scores = process.cdist(
        texts, texts, scorer=Levenshtein.normalized_similarity, score_cutoff=cutoff
    )
    return bool((np.triu(scores, 1) >= cutoff).any())


def _self_repeat(documents: list[Document], threshold: float, stats: FilterStats) -> list[Document]:
    out = []
    for doc in documents:
        turns = doc.get("turns") or []
        if repeats_itself([t.get("instruction") or "" for t in turns], threshold):
            stats.dialogues_affected += 1
            stats.dialogues_dropped += 1
            stats.turns_removed += len(turns)
        else:
            out.append(doc)
    return out


def embed_texts(embedder: Embedder, texts: Sequence[str]) -> np.ndarray:
    """Embed `texts` in chunks; return float32 rows scaled to unit length."""
    chunks = []
    for start in range(0, len(texts), EMBED_CHUNK):
        part = np.asarray(embedder.embed(list(texts[start : start + EMBED_CHUNK])), np.float32)
        if part.ndim != 2 or len(part) != len(texts[start : start + EMBED_CHUNK]):
            raise FilterError(f"the embedder returned an array of shape {part.shape}")
        chunks.append(part)
    if not chunks:
        return np.zeros((0, 1), dtype=np.float32)
    vectors = np.concatenate(chunks)
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return vectors / np.clip(norms, 1e-12, None)


def dedup_keep_counts(
    vectors: np.ndarray,
    lengths: Sequence[int],
    threshold: float,
    *,
    min_keep: int = 0,
    block: int = DEDUP_BLOCK,
    tile: int = DEDUP_TILE,
) -> list[int]:
    """Return how many leading turns each dialogue keeps after near-duplicate removal.

    Args:
        vectors: Unit-length embeddings of every turn, dialogue after dialogue, in turn order.
        lengths: Turns per dialogue (they sum to `len(vectors)`).
        threshold: A turn whose cosine to an already kept turn is >= this is a duplicate.
        min_keep: A dialogue keeping fewer turns than this contributes none to the kept set.
        block: Turns per block (whole dialogues), compared with each other in one Gram matrix.
        tile: Kept turns per matrix product against a block.

    Returns:
        Per dialogue, the number of turns before its first duplicate (its length if none).
    """
    thr = np.float32(threshold - TOLERANCE)
    offsets = np.concatenate([[0], np.cumsum(lengths, dtype=np.int64)])
    if offsets[-1] != len(vectors):
        raise ValueError(f"lengths sum to {offsets[-1]}, but there are {len(vectors)} vectors")
    kept_rows = np.empty_like(vectors)
    n_kept = 0
    keeps = list(lengths)
    first = 0
    while first < len(lengths):
        last = first + 1
        while last < len(lengths) and offsets[last + 1] - offsets[first] <= block:
            last += 1
        lo, hi = int(offsets[first]), int(offsets[last])
        x = vectors[lo:hi]
        best = np.full(hi - lo, -np.inf, dtype=np.float32)
        for start in range(0, n_kept, tile):
            sims = x @ kept_rows[start : min(start + tile, n_kept)].T
            np.maximum(best, sims.max(axis=1), out=best)
        seen_before = best >= thr
        pairs = np.tril((x @ x.T) >= thr, -1)
        has_pair = pairs.any(axis=1)
        local: list[int] = []
        for d in range(first, last):
            begin = len(local)
            keep = lengths[d]
            for j, i in enumerate(range(int(offsets[d]) - lo, int(offsets[d + 1]) - lo)):
                if seen_before[i] or (has_pair[i] and local and pairs[i, local].any()):
                    keep = j
                    break
                local.append(i)
            if keep < min_keep:
                del local[begin:]
            keeps[d] = keep
        kept_rows[n_kept : n_kept + len(local)] = x[local]
        n_kept += len(local)
        first = last
    return keeps


def _dedup(
    documents: list[Document],
    config: FilterConfig,
    embedder: Embedder,
    stats: FilterStats,
) -> list[Document]:
    texts = [t.get("instruction") or "" for d in documents for t in d.get("turns") or []]
    lengths = [len(d.get("turns") or []) for d in documents]
    vectors = embed_texts(embedder, texts)
    keeps = dedup_keep_counts(vectors, lengths, config.dedup_threshold, min_keep=config.min_turns)
    out = []
    for doc, length, keep in zip(documents, lengths, keeps, strict=True):
        if keep < length:
            stats.dialogues_affected += 1
            stats.turns_removed += length - keep
            doc = truncate(doc, keep, "dedup")
        out.append(doc)
    stats.details = {"turns_embedded": len(texts)}
    return out


def load_benchmark(path: Path) -> list[str]:
    """Return the user turns (questions) of a benchmark file.

    Any dialogue file `induction.loaders.load` reads gives all user turns of all its dialogues;
    otherwise a JSON list or JSON Lines file of strings, or of objects with a `question`,
    `prompt`, `instruction` or `text` string (or a `turns` list of strings, as in MT-Bench's
    question.jsonl), or a `.txt` file with one question per line.

    Raises:
        FilterError: The file is missing, unreadable or holds no question.
    """
    from induction.loaders import NotDialogueFile, load
    from induction.sniff import read_records

    path = Path(path)
    if not path.is_file():
        raise FilterError(f"{path}: benchmark file not found")
    try:
        result = load(path)
    except NotDialogueFile:
        pass
    except OSError as exc:
        raise FilterError(f"{path}: cannot read: {exc.strerror or exc}") from None
    else:
        texts = [t.text for d in result.dialogues for t in d.turns if t.role == "user"]
        if texts:
            return texts
    try:
        records = [r for _, r in read_records(path)]
    except NotDialogueFile as exc:
        if path.suffix.lower() != ".txt":
            raise FilterError(f"{path}: not a benchmark file ({exc.reason})") from None
        text = path.read_text(encoding="utf-8-sig", errors="replace")
        records = [line for line in text.splitlines() if line.strip()]
    if len(records) == 1 and isinstance(records[0], dict):
        inner = next((v for v in records[0].values() if isinstance(v, list)), None)
        records = inner if inner is not None else records
    texts = [text for record in records for text in _questions(record)]
    if not texts:
        raise FilterError(
            f"{path}: no questions found (expected dialogues, strings, or objects with one of "
            f"{', '.join(BENCHMARK_FIELDS)})"
        )
    return texts


def _questions(record: Any) -> list[str]:
    if isinstance(record, str):
        return [record] if record.strip() else []
    if not isinstance(record, dict):
        return []
    for key in BENCHMARK_FIELDS:
        if isinstance(record.get(key), str) and record[key].strip():
            return [record[key]]
    turns = record.get("turns")
    if isinstance(turns, list) and all(isinstance(t, str) for t in turns):
        return [t for t in turns if t.strip()]
    return []


def best_matches(
    queries: Sequence[str], choices: Sequence[str], threshold: float
) -> tuple[np.ndarray, np.ndarray]:
    """Return each query's best `fuzz.ratio / 100` against `choices` (0 below threshold) and index.

    Texts are compared after `normalise_text`; the work is split into `cdist` calls of at most
    `CONTAMINATION_CELLS` scores, each using every core.
    """
    scores = np.zeros(len(queries), dtype=np.float32)
    index = np.full(len(queries), -1, dtype=np.int64)
    if not queries or not choices:
        return scores, index
    q = [normalise_text(t) for t in queries]
    c = [normalise_text(t) for t in choices]
    step = max(1, CONTAMINATION_CELLS // len(c))
    for start in range(0, len(q), step):
        matrix = process.cdist(
            q[start : start + step],
            c,
            scorer=fuzz.ratio,
            score_cutoff=(threshold - TOLERANCE) * 100,
            dtype=np.float32,
            workers=-1,
        )
        best = matrix.argmax(axis=1)
        value = matrix[np.arange(len(best)), best] / 100
        hit = value >= threshold - TOLERANCE
        scores[start : start + len(best)] = np.where(hit, value, 0.0)
        index[start : start + len(best)] = np.where(hit, best, -1)
    return scores, index


def _contamination(
    documents: list[Document],
    config: FilterConfig,
    bench: list[tuple[str, str]],
    stats: FilterStats,
) -> list[Document]:
    turns = [
        (d, k, t) for d, doc in enumerate(documents) for k, t in enumerate(doc.get("turns") or [])
    ]
    scores, index = best_matches(
        [t.get("instruction") or "" for _, _, t in turns],
        [text for text, _ in bench],
        config.contamination_threshold,
    )
    found: dict[int, list[tuple[int, dict[str, Any]]]] = {}
    for (d, k, turn), score, i in zip(turns, scores, index, strict=True):
        if i >= 0:
            text, source = bench[i]
            match = {"turn": turn.get("index", k + 1), "match": text, "source": source}
            found.setdefault(d, []).append((k, match | {"score": round(float(score), 4)}))
    out = []
    for d, doc in enumerate(documents):
        matches = found.get(d)
        if not matches:
            out.append(doc)
            continue
        stats.dialogues_affected += 1
        stats.turns_flagged += len(matches)
        if config.contamination_action == "drop":
            cut = matches[0][0]
            stats.turns_removed += len(doc.get("turns") or []) - cut
            new = truncate(doc, cut, "contamination")
        else:
            new = dict(doc)
            new["filters"] = _filters(doc)
        flagged = new["filters"]["contaminated_turns"]
        new["filters"]["contaminated_turns"] = [*flagged, *(m for _, m in matches)]
        out.append(new)
    return out


def _min_turns(documents: list[Document], minimum: int, stats: FilterStats) -> list[Document]:
    out = []
    for doc in documents:
        n = len(doc.get("turns") or [])
        if n < minimum:
            stats.dialogues_affected += 1
            stats.dialogues_dropped += 1
            stats.turns_removed += n
        else:
            out.append(doc)
    return out


def apply_filters(
    documents: Iterable[Document], config: FilterConfig, *, embedder: Embedder | None = None
) -> tuple[list[Document], FilterReport]:
    """Run the enabled filters in order and report what each did.

    Args:
        documents: Dialogue documents (`ideas-dialogue/1`), in store order; not modified.
        config: Which filters run, with their thresholds.
        embedder: Embeds user turns for `dedup` (unit-length rows); needed only when it is on.

    Returns:
        The kept documents (copies where a filter changed them) and the report.

    Raises:
        FilterError: `dedup` is on without an embedder, or a benchmark file is unusable.
    """
    docs = list(documents)
    if config.dedup and embedder is None:
        raise FilterError("the dedup filter needs an embedder (or turn it off)")
    bench = [
        (text, Path(path).name)
        for path in config.contamination_files
        for text in load_benchmark(Path(path))
    ]
    report = FilterReport(dialogues_in=len(docs), turns_in=turn_count(docs))

    refusals = FilterStats("truncate_refusals", config.truncate_refusals)
    if refusals.enabled:
        docs = _truncate_refusals(docs, refusals)

    repeats = FilterStats("self_repeat", config.self_repeat)
    if repeats.enabled:
        repeats.settings = {"threshold": config.self_repeat_threshold}
        docs = _self_repeat(docs, config.self_repeat_threshold, repeats)

    dedup = FilterStats("dedup", config.dedup)
    if dedup.enabled:
        assert embedder is not None
        dedup.settings = {"threshold": config.dedup_threshold, "embedding": embedder_name(embedder)}
        docs = _dedup(docs, config, embedder, dedup)

    contamination = FilterStats("contamination", config.contamination)
    if contamination.enabled:
        contamination.settings = {
            "action": config.contamination_action,
            "threshold": config.contamination_threshold,
            "files": [str(p) for p in config.contamination_files],
        }
        docs = _contamination(docs, config, bench, contamination)
        contamination.details = {"benchmark_questions": len(bench)}

    minimum = FilterStats("min_turns", config.min_turns > 0)
    if minimum.enabled:
        minimum.settings = {"min": config.min_turns}
        docs = _min_turns(docs, config.min_turns, minimum)

    report.filters = [refusals, repeats, dedup, contamination, minimum]
    report.dialogues_out = len(docs)
    report.turns_out = turn_count(docs)
    return docs, report
