"""Batch throughput at several concurrencies, against the raw model server measured in the same run.

    python benchmarks/batch_throughput.py [--concurrency 1 2 4] [--n 4] [--turns 2]
                                          [--seeds FILE]

Starts the configured model (the embedded default unless IDEAS_MODEL__BASE_URL is set) once, then
for each concurrency grows `--n` dialogues into a fresh run directory and reports accepted turns
per minute and generated tokens per second. Every HTTP request the pipeline sent in that run is
recorded and then sent again, in the same order (so the server's prompt cache behaves the same),
one after another with a bare HTTP client: the raw server's generated tokens per second on exactly
that workload are the reference for the run:

    ratio = pipeline generated tokens/s over wall time / raw replay generated tokens/s
            (target >= 0.9; the pipeline's time includes everything between model calls)

Run it on a quiet machine: a second llama.cpp process on the same cores distorts every figure.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import httpx  # noqa: E402
from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402

from batch.jobs import load_seed_set, plan_jobs  # noqa: E402
from batch.runner import Batch, BatchOptions  # noqa: E402
from batch.store import BatchStore, iter_dialogues  # noqa: E402
from dialogues.models import GENERATION_ROLES  # noqa: E402
from runtime.settings import load_settings  # noqa: E402
from wiring.session import Session  # noqa: E402


def pipeline_run(
    loop: asyncio.Runner, session: Session, seeds, n: int, concurrency: int, run_dir: Path
) -> dict:
    """Grow `n` dialogues at `concurrency`; return the figures of this run."""
    batch = Batch(
        store=BatchStore.open(run_dir),
        seeds=seeds,
        jobs=plan_jobs(len(seeds.seeds), n),
        wiring=session,
        library={"name": session.settings.library},
        options=BatchOptions(concurrency=concurrency),
    )
    started = time.perf_counter()
    report = loop.run(batch.run())
    for reason, count in report.failures.items():
        print(f"  failed x{count}: {reason}")  # noqa: T201 - the benchmark's output
    wall = time.perf_counter() - started
    docs = list(iter_dialogues(run_dir))
    summaries = [d.summary for d in docs if d.summary is not None]
    calls = sum(s.llm_calls for s in summaries)
    out_tokens = sum(s.output_tokens for s in summaries)
    in_tokens = sum(s.input_tokens for s in summaries)
    llm_seconds = sum(s.llm_seconds for s in summaries)
    return {
        "concurrency": concurrency,
        "dialogues": report.done,
        "failed": report.failed,
        "turns": report.turns,
        "wall": wall,
        "calls": calls,
        "in_per_call": in_tokens / max(calls, 1),
        "out_per_call": out_tokens / max(calls, 1),
        "turns_per_min": report.turns / wall * 60,
        "tokens_per_s": out_tokens / wall,
        "llm_busy": llm_seconds / wall,
    }


class Recorder:
    """Keeps the body of every chat request the pipeline's HTTP clients send."""

    def __init__(self) -> None:
        """Start with no request."""
        self.bodies: list[bytes] = []

    async def __call__(self, request: httpx.Request) -> None:
        """Record one request (an httpx event hook)."""
        if request.url.path.endswith("/chat/completions"):
            self.bodies.append(request.content)


def record_requests(session: Session, recorder: Recorder) -> None:
    """Hook `recorder` into the HTTP client of every role's chat model."""
    for role in GENERATION_ROLES:
        client = session.chat(role).model.root_async_client._client  # the SDK's httpx client
        if recorder not in client.event_hooks["request"]:
            client.event_hooks["request"].append(recorder)


def raw_replay(base_url: str, bodies: list[bytes]) -> float:
    """Send recorded request bodies again, one at a time; return generated tokens per second."""
    produced, seconds = 0, 0.0
    with httpx.Client(timeout=300) as client:
        for body in bodies:
            started = time.perf_counter()
            reply = client.post(
                f"{base_url}/chat/completions",
                content=body,
                headers={"Content-Type": "application/json"},
            )
            seconds += time.perf_counter() - started
            produced += reply.json()["usage"]["completion_tokens"]
    return produced / seconds


def main() -> None:
    """Run the pipeline at each concurrency, then the raw server; print the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 2, 4])
    parser.add_argument("--n", type=int, default=4)
    parser.add_argument("--turns", type=int, default=2)
    parser.add_argument("--seeds", type=Path, default=Path("examples/seeds.txt"))
    args = parser.parse_args()
    console = Console()
    seeds = load_seed_set(args.seeds)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        settings = load_settings(turns=args.turns, store=Path(tmp) / "store")
        with Session(settings) as session, asyncio.Runner() as loop:
            session.chat("assistant")  # start the model server before timing
            recorder = Recorder()
            record_requests(session, recorder)
            base_url = settings.model.base_url or session.server.base_url
            for c in args.concurrency:
                recorder.bodies.clear()
                row = pipeline_run(loop, session, seeds, args.n, c, Path(tmp) / f"run-{c}")
                row["requests"] = len(recorder.bodies)
                row["raw"] = raw_replay(base_url, recorder.bodies)
                rows.append(row)
                console.print(row)
    table = Table(title=f"batch throughput ({args.n} dialogues x {args.turns} turns per run)")
    columns = ["concurrency", "turns", "failed", "wall s", "turns/min", "gen tok/s", "raw tok/s"]
    for column in [*columns, "ratio"]:
        table.add_column(column, justify="right")
    for r in rows:
        table.add_row(
            str(r["concurrency"]),
            str(r["turns"]),
            str(r["failed"]),
            f"{r['wall']:.1f}",
            f"{r['turns_per_min']:.2f}",
            f"{r['tokens_per_s']:.2f}",
            f"{r['raw']:.2f}",
            f"{r['tokens_per_s'] / r['raw']:.2f}",
        )
    console.print(table)
    for r in rows:
        console.print(
            f"throughput ratio at concurrency {r['concurrency']}: "
            f"{r['tokens_per_s'] / r['raw']:.2f}"
        )


if __name__ == "__main__":
    main()
