"""`run.py induce --dialogues FILE... --library NAME`: learn a strategy library from dialogues."""

from __future__ import annotations

import argparse
import asyncio
import time
from collections import Counter
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table
from rich.text import Text

from cli.errors import UsageError
from cli.options import add_settings_arguments, settings_from_args
from dialogues.output import check_directory_writable
from induction.loaders import FORMATS, LoadResult, NotDialogueFile, load
from runtime.settings import Settings
from wiring.session import Session


def build_parser() -> argparse.ArgumentParser:
    """Return the parser of the induce command."""
    parser = argparse.ArgumentParser(prog="run.py induce", description=__doc__)
    parser.add_argument(
        "--dialogues",
        nargs="+",
        required=True,
        type=Path,
        help="real human-assistant dialogue files (any supported format)",
    )
    parser.add_argument("--format", choices=FORMATS, help="skip format detection")
    parser.add_argument(
        "--extractions",
        type=Path,
        help="team-written extractions (JSONL) to use instead of LLM extraction",
    )
    parser.add_argument(
        "--abstraction",
        choices=["auto", "llm", "centroid"],
        default="auto",
        help="auto: llm with a configured model, centroid on the bundled one",
    )
    parser.add_argument("--threshold", type=float, help="clustering cosine threshold (0.5)")
    parser.add_argument("--tiers", type=int, help="abstraction tiers (2)")
    parser.add_argument("--cache", type=Path, help="extraction cache (default: in the store)")
    parser.add_argument("--concurrency", type=int, default=1, help="parallel extraction calls")
    parser.add_argument(
        "--export",
        type=Path,
        help="also write the library as a packaged directory (records, metadata, "
        "answer-context embeddings; no dialogue text)",
    )
    parser.add_argument(
        "--no-ranker",
        action="store_true",
        help="do not train the learned candidate ranker (retrieval then uses answer contexts)",
    )
    parser.add_argument(
        "--library-version",
        type=int,
        help="version number to give the library (default: the stored one + 1)",
    )
    parser.add_argument("--quiet", action="store_true", help="print only the summary")
    add_settings_arguments(parser)
    return parser


def load_sources(paths: list[Path], fmt: str | None) -> list[LoadResult]:
    """Load every dialogue file, turning unusable files into one-line usage errors."""
    results = []
    for path in paths:
        if not path.is_file():
            raise UsageError(f"{path}: file not found")
        try:
            results.append(load(path, fmt))
        except NotDialogueFile as exc:
            raise UsageError(str(exc)) from None
    return results


def induce(argv: list[str], console: Console) -> int:
    """Run the induce command; return the exit code."""
    args = build_parser().parse_args(argv)
    if args.library is None:
        raise UsageError("induce needs --library NAME (the library to build)")
    settings = settings_from_args(args)
    if args.export is not None:
        check_directory_writable(args.export)  # before the library in the store is replaced
    started = time.perf_counter()
    sources = load_sources(args.dialogues, args.format)
    pairs = [p for r in sources for p in r.pairs]
    if not pairs:
        raise UsageError("no (answer, follow-up) pairs in the given files")
    with Session(settings) as session:
        extractions, extract_stats = get_extractions(args, settings, session, pairs, console)
        if not extractions:
            raise UsageError(nothing_kept(extract_stats))
        report = asyncio.run(
            build_and_save(args, settings, session, extractions, pairs, sources, extract_stats)
        )
    report["seconds"] = round(time.perf_counter() - started, 2)
    render_summary(console, sources, report)
    return 0


def get_extractions(
    args: argparse.Namespace, settings: Settings, session: Session, pairs: list, console: Console
) -> tuple[list, dict[str, Any]]:
    """Return extractions from the team's file, or extract them with the LLM (cached)."""
    from induction.annotations import AnnotationError, check_annotations, load_extractions

    by_key = {p.key: p for p in pairs}
    if args.extractions is not None:
        if not args.extractions.is_file():
            raise UsageError(f"{args.extractions}: file not found")
        try:
            given = load_extractions(args.extractions)
        except AnnotationError as exc:
            raise UsageError(str(exc)) from None
        check = check_annotations(given, by_key)
        invalid = {key for key, _ in check.invalid}
        kept = [e for e in given if e.key in by_key and e.key not in invalid]
        stats = {
            "method": f"team-written annotations ({args.extractions.name})",
            "given": len(given),
            "kept": len(kept),
            "invalid": len(check.invalid),
            "without_pair": len(check.without_pair),
            "llm_calls": 0,
        }
        return kept, stats
    return extract_with_llm(args, settings, session, pairs, console)


def nothing_kept(stats: dict[str, Any]) -> str:
    """Say in one line that no extraction is left to build from, and why."""
    if "rejection_reasons" in stats:
        reasons = sorted(stats["rejection_reasons"].items(), key=lambda item: -item[1])
        why = "; ".join(f"{n}x {reason}" for reason, n in reasons[:3]) or "none extracted"
        counted = "pairs"
    else:
        why = f"{stats['invalid']} invalid, {stats['without_pair']} without a loaded pair"
        counted = "extractions"
    return (
        f"no strategy passed validation: 0 of {stats['given']} {counted} kept ({why}); "
        "the library was not changed"
    )


def extract_with_llm(
    args: argparse.Namespace, settings: Settings, session: Session, pairs: list, console: Console
) -> tuple[list, dict[str, Any]]:
    """Extract one strategy per pair with the extractor model, resuming from the cache."""
    from induction.batch import extract_all
    from induction.cache import ExtractionCache
    from induction.extract import LLMExtractor

    cache_path = args.cache or settings.store / "cache" / f"extractions-{settings.library}.jsonl"
    extractor = LLMExtractor(session.chat("extractor"))
    columns = [TextColumn("extracting"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn()]
    with (
        ExtractionCache(cache_path) as cache,
        Progress(*columns, console=console, disable=args.quiet) as progress,
    ):
        task = progress.add_task("extract", total=len(pairs))

        def advance(done: int, total: int) -> None:
            progress.update(task, completed=done, total=total)

        report = asyncio.run(
            extract_all(pairs, extractor, cache, concurrency=args.concurrency, on_progress=advance)
        )
    reasons = dict(Counter(rejection.reason for rejection in report.rejections))
    stats = {
        "method": f"llm:{extractor.model_name}",
        "given": len(pairs),
        "kept": len(report.extractions),
        "rejected": len(report.rejections),
        "rejection_reasons": reasons,
        "cached": report.cached_hits,
        "llm_calls": report.llm_calls,
        "cache": str(cache_path),
    }
    return report.extractions, stats


async def build_and_save(
    args: argparse.Namespace,
    settings: Settings,
    session: Session,
    extractions: list,
    pairs: list,
    sources: list[LoadResult],
    extract_stats: dict[str, Any],
) -> dict[str, Any]:
    """Cluster and abstract the extractions, then replace the library in the store."""
    from induction.abstract import CentroidAbstractor, LLMAbstractor
    from induction.library import build_library, save_library, source_digests
    from stores.chroma import open_store
    from stores.ranker import train_for

    store = open_store(settings.library, path=settings.store, chroma_url=settings.chroma_url)
    previous = store.metadata().get("version", "0")  # .get: Chroma collection metadata
    version = str(int(previous) + 1) if str(previous).isdigit() else "1"
    if args.library_version is not None:
        version = str(args.library_version)
    mode = args.abstraction
    if mode == "auto":
        mode = "centroid" if settings.uses_bundled_model("abstractor") else "llm"
    abstractor = (
        LLMAbstractor(session.chat("abstractor")) if mode == "llm" else CentroidAbstractor()
    )
    library = await build_library(
        extractions,
        {p.key: p for p in pairs},
        store.embedding,
        abstractor,
        threshold=settings.cluster_threshold,
        tiers=settings.tiers,
        name=settings.library,
        version=version,
        extraction=extract_stats["method"],
        sources=source_digests([r.path for r in sources]),
    )
    ranker = None
    if not args.no_ranker:
        ranker = train_for(
            library.by_level("high"),
            library.answer_contexts(),
            store.embedding,
            seed=settings.seed,
        )
    if ranker is not None:
        library.metadata["ranker"] = ranker.to_metadata()
    if args.export is not None:  # first: a failed export leaves the store's library as it was
        from stores.packaged import export_library

        export_library(args.export, library.records, library.metadata, library.answer_contexts())
    store.clear()
    save_library(library, store)
    store.contexts().add(library.answer_contexts())
    return {
        "library": f"{settings.library} (version {version}) in {store.location}",
        "pairs": len(pairs),
        "extraction": extract_stats,
        "abstraction": abstractor.name,
        "clusters per tier": {t.tier: t.clusters for t in library.tiers},
        "library size": {
            level: len(library.by_level(level)) for level in ("high", "intermediate", "extracted")
        },
        "answer contexts": len(library.answer_embeddings),
        "ranker": ranker.describe() if ranker else "none",
        "llm calls": extract_stats["llm_calls"] + library.usage.calls,
    }


def render_summary(console: Console, sources: list[LoadResult], report: dict[str, Any]) -> None:
    """Print pairs per source, extraction, clusters per tier, library size, time and LLM calls."""
    table = Table(title="sources", title_justify="left")
    for column in ("file", "format", "dialogues", "pairs", "skipped"):
        table.add_column(column)
    for r in sources:
        skipped = ", ".join(f"{k}: {v}" for k, v in r.skipped.items()) or "0"
        table.add_row(
            Text(str(r.path)), r.format, str(len(r.dialogues)), str(len(r.pairs)), Text(skipped)
        )
    console.print(table)
    for key, value in report.items():
        console.print(Text(f"{key}: {value}"))
