"""`run.py batch`: grow many dialogues from a seed source into a resumable run directory."""

from __future__ import annotations

import argparse
import asyncio
import os
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table
from rich.text import Text

from agents.registry import Wiring
from batch.jobs import SeedSet, load_seed_set, plan_jobs
from batch.runner import Batch, BatchOptions, BatchReport
from batch.store import LOCK, MANIFEST, BatchStore, hold_run_dir, load_manifest
from cli.errors import UsageError
from cli.options import (
    add_agent_arguments,
    add_settings_arguments,
    preflight,
    refuse_human_simulator,
    settings_from_args,
)
from dialogues.models import GENERATION_ROLES, BatchManifest
from dialogues.output import check_directory_writable
from dialogues.text import display_path
from runtime.settings import Settings
from wiring.session import Session

Executor = Callable[[Batch], object]
"""Runs a batch to its end (in this process, or on Ray)."""

EXIT_PARTIAL = 3
"""Exit code when the batch ran to the end but some planned dialogues failed."""

CONCURRENCY_PER_SLOT = 4
"""`--concurrency` may be at most this many times the request slots of the model endpoints."""
MIN_CONCURRENCY_CAP = 16
"""...and always at least this much."""


def build_parser() -> argparse.ArgumentParser:
    """Return the parser of the batch command."""
    parser = argparse.ArgumentParser(
        prog="run.py batch",
        description="Grow many seed dialogues concurrently into a resumable run directory. "
        "Run the same command again to resume after any stop.",
    )
    parser.add_argument(
        "--seeds",
        required=True,
        type=Path,
        help="seed dialogues, opening questions (.txt/JSONL), or a real-dialogue corpus",
    )
    parser.add_argument("--out", required=True, type=Path, help="run directory (created)")
    parser.add_argument("--n", type=int, help="dialogues to generate (default: one per seed)")
    parser.add_argument(
        "--turns",
        type=int,
        help="most user turns per dialogue (default 6; the user may end sooner, see --ending)",
    )
    parser.add_argument("--concurrency", type=int, default=4, help="dialogues in flight")
    parser.add_argument(
        "--retry-failed", action="store_true", help="run failed dialogues again (resumed)"
    )
    parser.add_argument(
        "--balance",
        action="store_true",
        help="spread strategy use: each turn's candidates are the least-used of 3x more matches",
    )
    parser.add_argument(
        "--opening-only",
        action="store_true",
        help="seed with each dialogue's opening exchange also for OpenAI/ShareGPT files",
    )
    parser.add_argument(
        "--shuffle",
        action="store_true",
        help="take the seeds in a random order fixed by --random-seed (for sorted files)",
    )
    parser.add_argument(
        "--max-failures", type=int, default=10, help="stop after this many failures in a row"
    )
    parser.add_argument(
        "--executor", choices=["local", "ray"], default="local", help="where dialogues run"
    )
    parser.add_argument("--ray-address", help="Ray cluster address (default: a local Ray)")
    parser.add_argument("--quiet", action="store_true", help="no progress bar, only the summary")
    add_agent_arguments(parser)
    add_settings_arguments(parser)
    return parser


def check_args(args: argparse.Namespace) -> None:
    """Reject impossible numbers and an `--out` that is something other than a batch."""
    check_counts(args)
    if args.max_failures < 1:
        raise UsageError("--max-failures must be at least 1")
    check_run_dir(args.out)
    if args.executor == "local" and args.ray_address:
        raise UsageError("--ray-address needs --executor ray")


def check_run_dir(out: Path) -> None:
    """Refuse a run directory that is a file, someone else's directory, or not writable."""
    check_directory_writable(out)
    if (
        out.is_dir()
        and any(p.name != LOCK for p in out.iterdir())
        and not (out / MANIFEST).exists()
    ):
        raise UsageError(
            f"{display_path(out)}: not empty and not a batch directory; choose a new --out"
        )
    if (out / MANIFEST).exists() and not os.access(out / MANIFEST, os.W_OK):
        raise UsageError(f"{display_path(out)}: the run directory's files are not writable")


def check_concurrency(concurrency: int, settings: Settings) -> None:
    """Refuse a `--concurrency` far beyond what the model endpoints accept at once.

    Each dialogue has at most one request in flight, so dialogues beyond the endpoints' request
    slots only wait (holding memory); the cap is `CONCURRENCY_PER_SLOT` times the slots of the
    generation roles' endpoints (`IDEAS_ENDPOINT_CONCURRENCY`, default 8 per URL, 1 embedded),
    and at least `MIN_CONCURRENCY_CAP`.
    """
    endpoints = {settings.model_for(role).base_url for role in GENERATION_ROLES}
    slots = sum(settings.endpoint_concurrency or (8 if url else 1) for url in endpoints)
    cap = max(CONCURRENCY_PER_SLOT * slots, MIN_CONCURRENCY_CAP)
    if concurrency > cap:
        raise UsageError(
            f"--concurrency {concurrency} is more than {CONCURRENCY_PER_SLOT}x the {slots} request "
            f"slots of the model endpoints (at most {cap}); raise IDEAS_ENDPOINT_CONCURRENCY if "
            "the servers take more requests at once"
        )


def seed_limit(args: argparse.Namespace) -> int | None:
    """Return how many questions to read: `--n` when the seeds are taken in file order."""
    return None if args.shuffle or args.n is None else args.n


def check_counts(args: argparse.Namespace) -> None:
    """Reject a `--n` or `--concurrency` below 1 (batch and ablate)."""
    if args.n is not None and args.n < 1:
        raise UsageError("--n must be at least 1")
    if args.concurrency < 1:
        raise UsageError("--concurrency must be at least 1")


def check_n(n: int, settings: Settings) -> None:
    """Refuse a `--n` over `max_dialogues` (every job is planned in memory before any runs)."""
    if n > settings.max_dialogues:
        raise UsageError(
            f"--n {n} is more than max_dialogues ({settings.max_dialogues}); "
            "set IDEAS_MAX_DIALOGUES if you mean it"
        )


def manifest_for(
    seeds: SeedSet, n: int, settings: Settings, library: dict[str, Any]
) -> BatchManifest:
    """Return the manifest of a batch started now."""
    return BatchManifest(
        created_at=datetime.now(UTC).isoformat(timespec="seconds"),
        seeds=seeds.describe(),
        n=n,
        turns=settings.turns,
        fingerprint=settings.fingerprint(),
        settings=settings.public_dump(),
        agents=settings.resolve_agents()[0].model_dump(),
        library=library,
    )


def check_resumable(manifest: BatchManifest, seeds: SeedSet, settings: Settings) -> None:
    """Refuse to resume a batch with another seed source or other generation settings."""
    out = manifest.seeds
    if out.sha256 != seeds.sha256 or out.order != seeds.order:
        raise UsageError(
            f"the seed source differs from the one this batch started with ({out.path}, "
            f"order {out.order}, sha256 {(out.sha256 or '?')[:12]}); use the "
            "same seeds and --shuffle, or a new --out"
        )
    old, new = manifest.fingerprint, settings.fingerprint()
    # .get: a generic diff of two fingerprint dicts; a key only one side has counts as changed
    changed = sorted(k for k in old.keys() | new.keys() if old.get(k) != new.get(k))
    if changed:
        raise UsageError(
            f"this batch started with other settings ({', '.join(changed)} differ); resume "
            "with the same flags or use a new --out"
        )


class BarProgress:
    """A rich progress bar: done / failed / in flight, turns per minute, ETA."""

    def __init__(self, console: Console, label: str, enabled: bool) -> None:
        """Draw on `console` unless disabled."""
        self.bar = Progress(
            TextColumn(f"[bold]{escape(label)}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("[red]{task.fields[failed]} failed[/] · {task.fields[inflight]} in flight"),
            TextColumn("· {task.fields[rate]} turns/min"),
            TimeElapsedColumn(),
            TextColumn("ETA"),
            TimeRemainingColumn(),
            console=console,
            disable=not enabled,
        )
        self.task = self.bar.add_task("batch", total=0, failed=0, inflight=0, rate="0.0")
        self.inflight, self.turns, self.failed = 0, 0, 0
        self.clock = self.bar.get_time()

    def __enter__(self) -> BarProgress:
        """Show the bar."""
        self.bar.start()
        return self

    def __exit__(self, *exc: object) -> None:
        """Remove nothing: the last state stays on screen."""
        self.bar.stop()

    def start(self, total: int, done: int, failed: int) -> None:
        """Set the totals."""
        self.failed = failed
        self.clock = self.bar.get_time()
        self.bar.update(self.task, total=total, completed=done, failed=failed)

    def job_started(self, job: str) -> None:
        """Count a job in flight."""
        self.inflight += 1
        self.bar.update(self.task, inflight=self.inflight)

    def turn_done(self) -> None:
        """Update the turn rate."""
        self.turns += 1
        minutes = max(self.bar.get_time() - self.clock, 1e-6) / 60
        self.bar.update(self.task, rate=f"{self.turns / minutes:.1f}")

    def job_finished(self, job: str, status: str, turns: int) -> None:
        """Advance the bar (a failure counts as finished for this run)."""
        self.inflight -= 1
        self.failed += status == "failed"
        self.bar.update(self.task, advance=1, inflight=self.inflight, failed=self.failed)


def resumable_manifest(out: Path, seeds: SeedSet, settings: Settings) -> BatchManifest | None:
    """Return the manifest of the batch in `out` after checking it can go on (None if new)."""
    if not (out / MANIFEST).exists():
        return None
    manifest = load_manifest(out)
    check_resumable(manifest, seeds, settings)
    return manifest


def open_batch(
    out: Path,
    seeds: SeedSet,
    n: int,
    wiring: Wiring,
    options: BatchOptions,
    manifest: BatchManifest | None,
) -> Batch:
    """Open (or start) the batch in `out` and write its manifest with the current `n`."""
    settings = wiring.settings
    store = BatchStore.open(out)
    library = {"name": settings.library, **wiring.store.metadata()}
    manifest = manifest or manifest_for(seeds, n, settings, library)
    store.write_manifest(manifest.model_copy(update={"n": n}))
    jobs = plan_jobs(len(seeds.seeds), n)
    return Batch(store, seeds, jobs, wiring, library, options)


def warn_damage(console: Console, store: BatchStore) -> None:
    """Print one warning line when opening the store found (and worked around) damage."""
    if store.damage:
        console.print(Text(f"warning: {store.damage}", style="yellow"), soft_wrap=True)


def run(batch: Batch, console: Console, *, label: str, quiet: bool, executor: Executor) -> bool:
    """Run `batch` with a progress bar; return False when Ctrl-C stopped it."""
    with BarProgress(console, label, enabled=not quiet) as progress:
        batch.progress = progress
        try:
            executor(batch)
        except KeyboardInterrupt:
            return False
    return True


def batch(argv: list[str], console: Console) -> int:
    """Run the batch command; return the exit code."""
    args = build_parser().parse_args(argv)
    check_args(args)
    settings = settings_from_args(args)
    refuse_human_simulator(settings)
    check_concurrency(args.concurrency, settings)
    seeds = load_seed_set(args.seeds, opening_only=args.opening_only, limit=seed_limit(args))
    if args.shuffle:
        seeds = seeds.shuffled(settings.seed)
    n = args.n or len(seeds.seeds)
    check_n(n, settings)
    manifest = resumable_manifest(args.out, seeds, settings)
    preflight(settings)
    if args.executor == "ray":
        from batch.ray_executor import check_ray_settings

        check_ray_settings(settings)
    _, notice = settings.resolve_agents()
    if notice:
        console.print(Text(f"note: {notice}", style="yellow"), soft_wrap=True)
    options = BatchOptions(
        concurrency=args.concurrency,
        retry_failed=args.retry_failed,
        balance=args.balance,
        max_failures_in_row=args.max_failures,
    )
    with Session(settings) as session:
        session.check_strategist()  # before the run directory is made: nothing to undo
        with hold_run_dir(args.out):
            job = open_batch(args.out, seeds, n, session, options, manifest)
            warn_damage(console, job.store)
            console.print(
                Text.assemble(
                    (display_path(args.out), "bold"),
                    f": {n} dialogues of {settings.turns} turns from {len(seeds.seeds)} seeds "
                    f"({seeds.format}, {display_path(args.seeds)}); "
                    f"{len(job.store.done())} already stored",
                )
            )
            executor = executor_for(args, settings)
            finished = run(job, console, label="batch", quiet=args.quiet, executor=executor)
    print_summary(console, job.report, job.store, interrupted=not finished)
    if not finished:
        return 130
    if job.report.aborted:
        return 1
    missing = n - len(job.store.done() & {j.id for j in job.jobs})
    return EXIT_PARTIAL if missing else 0


def executor_for(args: argparse.Namespace, settings: Settings) -> Executor:
    """Return how the batch runs: in this process, or as Ray tasks."""
    if args.executor == "ray":
        from batch.ray_executor import run_on_ray

        return lambda job: run_on_ray(job, settings, address=args.ray_address)
    return run_local


def run_local(batch: Batch) -> None:
    """Run `batch` in this process."""
    asyncio.run(batch.run())


def print_summary(
    console: Console, report: BatchReport, store: BatchStore, interrupted: bool
) -> None:
    """Print what this invocation did, and what the run directory now holds."""
    minutes = report.seconds / 60
    table = Table(show_header=False, box=None, pad_edge=False)
    table.add_column(style="bold")
    table.add_column()
    table.add_row("planned", str(report.planned))
    table.add_row("stored before", str(report.already_done))
    table.add_row("stored now", f"{report.done} ({report.resumed} resumed from a checkpoint)")
    table.add_row("failed now", str(report.failed))
    for reason, count in report.failures.most_common(3):
        table.add_row("", Text(f"{count} x {reason}", style="red"))
    if report.skipped_failed:
        table.add_row("failed earlier", f"{report.skipped_failed} (rerun with --retry-failed)")
    table.add_row("turns now", f"{report.turns} ({report.turns / max(minutes, 1e-9):.1f}/min)")
    table.add_row("seconds", f"{report.seconds:.1f}")
    if report.first_done_after is not None:
        table.add_row("first stored after", f"{report.first_done_after:.1f} s")
    uses = Counter(store.strategy_uses())
    total = sum(uses.values())
    if total:
        top, count = uses.most_common(1)[0]
        table.add_row(
            "strategies used",
            Text(f"{len(uses)} distinct; most used {top} ({count / total:.0%})"),
        )
    console.print(table)
    done = len(store.done())
    if interrupted:
        console.print(
            Text(
                f"interrupted: {done} dialogues stored; run the same command to resume",
                style="yellow",
            )
        )
    elif report.aborted:
        console.print(Text(f"stopped: {report.aborted}", style="bold red"), soft_wrap=True)
    where = display_path(store.dialogues_path)
    console.print(Text.assemble((where, "bold"), f": {done} dialogues"))
