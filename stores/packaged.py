"""Libraries shipped inside the package: records, metadata and answer-context embeddings.

A packaged library is a directory with `records.jsonl` (one StrategyRecord per line),
`metadata.json` and `contexts.npz` (context ids, strategy ids, dialogue digests, float16
answer embeddings and, when every context has one, a `code` bool array: whether the answer held a
fenced code block; older libraries lack it and load with the flag unknown).
It holds no dialogue text: only strategy texts written by the pipeline or the team, provenance
keys, and embeddings of the real answers.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from stores.base import StrategyRecord, StrategyStore
from stores.contexts import AnswerContext

PACKAGED = Path(__file__).parent / "libraries"
"""Where packaged libraries live (`stores/libraries/<name>/`)."""


def packaged_path(library: str) -> Path | None:
    """Return the directory of a packaged library, or None when there is none by that name."""
    directory = PACKAGED / library
    return directory if (directory / "records.jsonl").is_file() else None


def export_library(
    directory: Path,
    records: Sequence[StrategyRecord],
    metadata: dict[str, Any],
    contexts: Sequence[AnswerContext],
) -> None:
    """Write a library to `directory` in the packaged format (overwriting it)."""
    directory.mkdir(parents=True, exist_ok=True)
    lines = (json.dumps(r.model_dump(exclude_defaults=True), ensure_ascii=False) for r in records)
    (directory / "records.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    (directory / "metadata.json").write_text(
        json.dumps(metadata, ensure_ascii=False, indent=2) + "\n", encoding="utf-8"
    )
    arrays = {
        "ids": np.array([c.id for c in contexts]),
        "strategy_ids": np.array([c.strategy_id for c in contexts]),
        "groups": np.array([c.group or c.id for c in contexts]),
        "embeddings": np.stack([c.embedding for c in contexts]).astype(np.float16),
    }
    if contexts and all(c.code is not None for c in contexts):
        arrays["code"] = np.array([bool(c.code) for c in contexts], dtype=bool)
    np.savez_compressed(directory / "contexts.npz", **arrays)


def read_records(directory: Path) -> list[StrategyRecord]:
    """Return the records of a packaged library, in file order."""
    text = (directory / "records.jsonl").read_text(encoding="utf-8")
    return [StrategyRecord.model_validate_json(line) for line in text.splitlines() if line]


def read_metadata(directory: Path) -> dict[str, Any]:
    """Read a packaged library's metadata (version, sources, counts, ranker)."""
    return json.loads((directory / "metadata.json").read_text(encoding="utf-8"))


def load_packaged(store: StrategyStore, directory: Path) -> int:
    """Fill an empty store from a packaged library; return the number of records added."""
    records = read_records(directory)
    metadata = read_metadata(directory)
    for start in range(0, len(records), 1000):
        store.add(records[start : start + 1000])
    store.set_metadata({**metadata, "loaded_from": f"packaged library {directory.name}"})
    contexts_index = getattr(store, "contexts", None)
    if contexts_index is not None and (directory / "contexts.npz").is_file():
        data = np.load(directory / "contexts.npz")
        vectors = data["embeddings"].astype(np.float32)
        vectors /= np.linalg.norm(vectors, axis=1, keepdims=True).clip(min=1e-12)
        groups = data["groups"] if "groups" in data.files else data["ids"]
        code = [bool(c) for c in data["code"]] if "code" in data.files else [None] * len(vectors)
        contexts_index().add(
            [
                AnswerContext(str(i), str(s), v, str(g), c)
                for i, s, v, g, c in zip(
                    data["ids"], data["strategy_ids"], vectors, groups, code, strict=True
                )
            ]
        )
    return len(records)
