"""`apply_filters`: run the enabled filters in order (see `batch.filters`) and report each."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from batch.filters.config import FilterConfig, FilterError
from batch.filters.contamination import _contamination, load_benchmark
from batch.filters.dedup import _dedup
from batch.filters.refusal import _truncate_refusals
from batch.filters.repeats import _self_repeat
from batch.filters.report import FilterReport, FilterStats
from dialogues.models import DialogueDocument
from stores.memory import Embedder, embedder_name


def turn_count(documents: Iterable[DialogueDocument]) -> int:
    """Return the number of generated turns in `documents`."""
    return sum(len(d.turns) for d in documents)


def _min_turns(
    documents: list[DialogueDocument], minimum: int, stats: FilterStats
) -> list[DialogueDocument]:
    out = []
    for doc in documents:
        n = len(doc.turns)
        if n < minimum:
            stats.dialogues_affected += 1
            stats.dialogues_dropped += 1
            stats.turns_removed += n
        else:
            out.append(doc)
    return out


def apply_filters(
    documents: Iterable[DialogueDocument], config: FilterConfig, *, embedder: Embedder | None = None
) -> tuple[list[DialogueDocument], FilterReport]:
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
