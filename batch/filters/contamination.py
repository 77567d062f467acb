"""The `contamination` filter: flag or cut user turns that match a benchmark's questions."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from rapidfuzz import fuzz, process

from batch.filters.config import TOLERANCE, FilterConfig, FilterError
from batch.filters.documents import filter_record, normalise_text, truncate
from batch.filters.report import FilterStats
from dialogues.models import ContaminationMatch, DialogueDocument

CONTAMINATION_CELLS = 4_000_000
"""Scores per `cdist` call (16 MB of float32)."""

BENCHMARK_FIELDS = ("question", "prompt", "instruction", "text")
"""Fields read from a benchmark record that is not a dialogue (the first that holds a string)."""


def load_benchmark(path: Path) -> list[str]:
    """Return the user turns (questions) of a benchmark file.

    Any dialogue file `induction.loaders.load` reads gives all user turns of all its dialogues;
    otherwise a JSON list or JSON Lines file of strings, or of objects with a `question`,
    `prompt`, `instruction` or `text` string (or a `turns` list of strings, as in MT-Bench's
    question.jsonl), or a `.txt` file with one question per line.

    Raises:
        FilterError: The file is missing, unreadable or holds no question.
    """
    from dialogues.formats import NotDialogueFile, read_records
    from induction.loaders import load

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
        records = [r.data for r in read_records(path)]
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
    # .get: a foreign benchmark record (any JSON object), its fields checked for type as read
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
    documents: list[DialogueDocument],
    config: FilterConfig,
    bench: list[tuple[str, str]],
    stats: FilterStats,
) -> list[DialogueDocument]:
    turns = [(d, k, t) for d, doc in enumerate(documents) for k, t in enumerate(doc.turns)]
    scores, index = best_matches(
        [t.instruction for _, _, t in turns],
        [text for text, _ in bench],
        config.contamination_threshold,
    )
    found: dict[int, list[tuple[int, ContaminationMatch]]] = {}
    for (d, k, turn), score, i in zip(turns, scores, index, strict=True):
        if i >= 0:
            text, source = bench[i]
            match = ContaminationMatch(
                turn=k + 1 if turn.index is None else turn.index,
                match=text,
                source=source,
                score=round(float(score), 4),
            )
            found.setdefault(d, []).append((k, match))
    out = []
    for d, doc in enumerate(documents):
        if d not in found:
            out.append(doc)
            continue
        matches = found[d]
        stats.dialogues_affected += 1
        stats.turns_flagged += len(matches)
        if config.contamination_action == "drop":
            cut = matches[0][0]
            stats.turns_removed += len(doc.turns) - cut
            doc = truncate(doc, cut, "contamination")
        filters = filter_record(doc)
        filters.contaminated_turns += [m for _, m in matches]
        out.append(doc.model_copy(update={"filters": filters}))
    return out
