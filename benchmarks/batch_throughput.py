"""Batch throughput at several concurrencies, against the raw model server measured in the same run.

    python benchmarks/batch_throughput.py [--concurrency 1 2 4] [--n 4] [--turns 2]
                                          [--seeds FILE] [--raw-requests 6]

Starts the configured model (the embedded default unless IDEAS_MODEL__BASE_URL is set) once, then
for each concurrency grows `--n` dialogues into a fresh run directory and reports accepted turns
per minute and generated tokens per second. The raw server is then sent `--raw-requests` plain
completions shaped like the pipeline's average call (same prompt length in tokens, same completion
limit), one after another, and its generated tokens per second are the reference:

    ratio = pipeline generated tokens/s / raw server generated tokens/s   (target >= 0.9)

Run it on a quiet machine: a second llama.cpp process on the same cores distorts every figure.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import openai  # noqa: E402
from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402

from batch.jobs import load_seed_set, plan_jobs  # noqa: E402
from batch.runner import Batch, BatchOptions  # noqa: E402
from batch.store import BatchStore, iter_dialogues  # noqa: E402
from runtime.session import Session  # noqa: E402
from runtime.settings import load_settings  # noqa: E402

FILLER = "The committee reviewed the proposal and asked for a clearer budget. "


def pipeline_run(session: Session, seeds, n: int, concurrency: int, run_dir: Path) -> dict:
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
    report = asyncio.run(batch.run())
    wall = time.perf_counter() - started
    docs = list(iter_dialogues(run_dir))
    calls = sum(d["summary"]["llm_calls"] for d in docs)
    out_tokens = sum(d["summary"]["output_tokens"] for d in docs)
    in_tokens = sum(d["summary"]["input_tokens"] for d in docs)
    llm_seconds = sum(d["summary"]["llm_seconds"] for d in docs)
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


def raw_server(base_url: str, model: str, prompt_tokens: float, max_tokens: int, k: int) -> float:
    """Return generated tokens per second of `k` sequential plain completions."""
    client = openai.OpenAI(base_url=base_url, api_key="not-needed")
    prompt = FILLER * max(1, round(prompt_tokens / 14))
    produced, seconds = 0, 0.0
    for i in range(k):
        started = time.perf_counter()
        reply = client.chat.completions.create(
            model=model,
            messages=[{"role": "user", "content": f"{prompt}\nSummarise point {i}."}],
            temperature=0.7,
            extra_body={"max_tokens": max_tokens},
        )
        seconds += time.perf_counter() - started
        produced += reply.usage.completion_tokens
    return produced / seconds


def main() -> None:
    """Run the pipeline at each concurrency, then the raw server; print the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 2, 4])
    parser.add_argument("--n", type=int, default=4)
    parser.add_argument("--turns", type=int, default=2)
    parser.add_argument("--seeds", type=Path, default=Path("examples/seeds.txt"))
    parser.add_argument("--raw-requests", type=int, default=6)
    args = parser.parse_args()
    console = Console()
    seeds = load_seed_set(args.seeds)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        settings = load_settings(turns=args.turns, store=Path(tmp) / "store")
        with Session(settings) as session:
            session.chat("assistant")  # start the model server before timing
            for c in args.concurrency:
                rows.append(pipeline_run(session, seeds, args.n, c, Path(tmp) / f"run-{c}"))
                console.print(rows[-1])
            model = settings.model_for("assistant")
            base_url = model.base_url or session.server.base_url
            in_call = statistics.mean(r["in_per_call"] for r in rows)
            out_call = statistics.mean(r["out_per_call"] for r in rows)
            raw = raw_server(
                base_url, model.model, in_call, max(8, round(out_call)), args.raw_requests
            )
    table = Table(title=f"batch throughput ({args.n} dialogues x {args.turns} turns per run)")
    for column in ["concurrency", "turns", "failed", "wall s", "turns/min", "gen tok/s", "ratio"]:
        table.add_column(column, justify="right")
    for r in rows:
        table.add_row(
            str(r["concurrency"]),
            str(r["turns"]),
            str(r["failed"]),
            f"{r['wall']:.1f}",
            f"{r['turns_per_min']:.2f}",
            f"{r['tokens_per_s']:.2f}",
            f"{r['tokens_per_s'] / raw:.2f}",
        )
    console.print(table)
    console.print(
        f"raw server: {raw:.2f} generated tok/s over {args.raw_requests} sequential requests "
        f"shaped like the pipeline's mean call ({in_call:.0f} tokens in, {out_call:.0f} out)"
    )
    for r in rows:
        console.print(
            f"throughput ratio at concurrency {r['concurrency']}: {r['tokens_per_s'] / raw:.2f}"
        )


if __name__ == "__main__":
    main()
