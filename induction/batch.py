"""Extract many pairs, resumably: cached pairs are skipped and each result is cached when done."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from dialogues.models import Usage
from induction.cache import ExtractionCache, Extractor, Result, cache_key
from induction.extract import Extraction, PairLike, Rejection
from runtime.pool import run_pool


@dataclass
class ExtractReport:
    """What an extraction run produced and spent."""

    extractions: list[Extraction] = field(default_factory=list)
    rejections: list[Rejection] = field(default_factory=list)
    cached_hits: int = 0
    """Pairs answered from the cache (or by an identical pair earlier in the run)."""
    llm_calls: int = 0
    """Chat model calls made in this run, retries included."""
    usage: Usage = field(default_factory=Usage)
    """Tokens and seconds spent in this run."""


async def extract_all(
    pairs: Iterable[PairLike],
    extractor: Extractor,
    cache: ExtractionCache,
    *,
    concurrency: int = 1,
    on_progress: Callable[[int, int], None] | None = None,
) -> ExtractReport:
    """Extract every pair not already in `cache`, appending each result as soon as it is done.

    Pairs with the same content share one call. A killed run leaves every finished pair in the
    cache, so running again continues where it stopped.

    Args:
        pairs: The (history, follow-up) pairs.
        extractor: Makes the extraction; its `fingerprint` is part of every cache key.
        cache: Where finished pairs are looked up and appended.
        concurrency: Pairs extracted at the same time.
        on_progress: Called with (pairs done, pairs in all), first for the cached ones.

    Returns:
        The results in the order of `pairs`, each keyed to its own pair, and the run's costs.
    """
    pairs = list(pairs)
    keys = [cache_key(extractor.fingerprint, pair) for pair in pairs]
    todo: dict[str, PairLike] = {}
    for key, pair in zip(keys, pairs, strict=True):
        if key not in cache:
            todo.setdefault(key, pair)
    report = ExtractReport()
    done = len(pairs) - len(todo)
    if on_progress is not None:
        on_progress(done, len(pairs))

    async def extract(item: tuple[str, PairLike]) -> None:
        nonlocal done
        key, pair = item
        result = await extractor.extract(pair)
        cache.put(key, result)
        report.usage += result.usage
        done += 1
        if on_progress is not None:
            on_progress(done, len(pairs))

    await run_pool(list(todo.items()), concurrency, extract)
    for key, pair in zip(keys, pairs, strict=True):
        _collect(report, _rekey(cache.get(key), pair), fresh=todo.get(key) is pair)
    report.llm_calls = report.usage.calls
    return report


def _rekey(result: Result | None, pair: PairLike) -> Result:
    if result is None:
        raise RuntimeError("extract_all: a pair finished without a cached result")
    if isinstance(result, Rejection):
        return result if result.key == pair.key else result.model_copy(update={"key": pair.key})
    source, record_id, turn = pair.key
    if result.key == pair.key:
        return result
    return result.model_copy(update={"source": source, "record_id": record_id, "turn": turn})


def _collect(report: ExtractReport, result: Result, *, fresh: bool) -> None:
    if not fresh:
        report.cached_hits += 1
    if isinstance(result, Extraction):
        report.extractions.append(result)
    else:
        report.rejections.append(result)
