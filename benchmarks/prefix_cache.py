"""Prefix cache on the embedded server: prompt tokens evaluated and wall time, with and without.

    python benchmarks/prefix_cache.py [--turns 6] [--seed examples/seed.json]
                                      [--n 4] [--batch-turns 2] [--concurrency 1 4]
                                      [--cache-mib MIB]

Runs one dialogue on the embedded default, then a small batch at each concurrency (none with a
bare `--concurrency`), each twice with the same seeds: without the server's prefix cache, then
with it, every run on a freshly started server. Prints each run as it ends, then both side by
side: per accepted turn the prompt tokens sent and evaluated (sent minus those the server reports
reused), LLM and wall seconds, the server's peak RSS, whether the dialogues came out identical,
and the ratios, and why the dialogues are not identical (`generated_vs_batched`); last
`prefix cache: evaluated prompt tokens xA.AA, wall xB.BB` for the dialogue
(with cache / without). `--cache-mib` sets the cache's budget (default: the setting
`server_cache_mib`). Without the cache the server still reuses the prefix of the request just
before, as llama-cpp-python always does. Run it on a quiet machine.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from agents.registry import build_agents  # noqa: E402
from batch.jobs import load_seed_set, plan_jobs  # noqa: E402
from batch.runner import Batch, BatchOptions  # noqa: E402
from batch.store import BatchStore, iter_dialogues  # noqa: E402
from dialogues.messages import to_langchain, to_openai  # noqa: E402
from dialogues.models import Usage  # noqa: E402
from dialogues.record import usage_by_agent  # noqa: E402
from dialogues.seeds import load_seed  # noqa: E402
from graphs.deduction import build_graph  # noqa: E402
from graphs.state import Deps, initial_state  # noqa: E402
from runtime.settings import load_settings  # noqa: E402
from wiring.generation import Growth, run_dialogue  # noqa: E402
from wiring.session import Session  # noqa: E402


def server_peak_mib(session: Session) -> float:
    """Return the embedded server's peak RSS in MiB."""
    status = Path(f"/proc/{session.server.process.pid}/status").read_text()
    line = next(x for x in status.splitlines() if x.startswith("VmHWM:"))
    return int(line.split()[1]) / 1024


def figures(turns: int, usage: Usage, wall: float, rss: float, messages: list) -> dict:
    """Return one run's figures per accepted turn."""
    per = max(turns, 1)
    return {
        "turns": turns,
        "sent": usage.input_tokens / per,
        "evaluated": usage.evaluated_tokens / per,
        "llm_s": usage.seconds / per,
        "wall_s": wall / per,
        "wall": wall,
        "rss": rss,
        "messages": messages,
    }


def one_dialogue(settings, seed) -> dict:
    """Grow one dialogue on a fresh embedded server."""
    with Session(settings) as session:
        deps = Deps(build_agents(session), max_rejections=settings.max_rejections)
        state = initial_state(to_langchain(seed.to_openai_messages()), settings.turns)
        outcome = run_dialogue(Growth(build_graph(), deps), state)
        rss = server_peak_mib(session)
    s = outcome.state
    usages = [t["usage"] for t in s["turns"]] + [s["usage"]]
    usage = sum(usage_by_agent(usages).values(), Usage())  # the opening answer left out
    return figures(s["turn"], usage, outcome.wall_seconds, rss, [to_openai(s["messages"])])


def batch(settings, seeds, n: int, concurrency: int, run_dir: Path) -> dict:
    """Grow `n` dialogues at `concurrency` on a fresh embedded server."""
    with Session(settings) as session, asyncio.Runner() as loop:
        session.chat("assistant")  # start the server before timing
        run = Batch(
            store=BatchStore.open(run_dir),
            seeds=seeds,
            jobs=plan_jobs(len(seeds.seeds), n),
            wiring=session,
            library={"name": settings.library},
            options=BatchOptions(concurrency=concurrency),
        )
        started = time.perf_counter()
        report = loop.run(run.run())
        wall = time.perf_counter() - started
        rss = server_peak_mib(session)
    docs = sorted(iter_dialogues(run_dir), key=lambda d: d.job)
    usages = [{a: u.as_dict() for a, u in t.usage.items()} for d in docs for t in d.turns]
    usage = sum(usage_by_agent(usages).values(), Usage())
    messages = [[m.dump() for m in d.messages] for d in docs]
    return figures(report.turns, usage, wall, rss, messages)


def generated_vs_batched(tokens: int = 600, generated: int = 100) -> tuple[float, float]:
    """Return how far a cached reply's numerics are from a fresh evaluation's.

    A cached state holds a reply's tokens as they were generated, evaluated one at a time; without
    the cache the next request evaluates them again, in one batch. Compares the bundled model's
    next-token logits after `tokens` prompt tokens evaluated in one batch, and with the last
    `generated` of them one at a time: the largest logit difference and the total variation
    distance of the sampling distributions at temperature 0.7.
    """
    import llama_cpp
    import numpy as np

    from runtime.server import default_gguf

    model = llama_cpp.Llama(str(default_gguf()), n_ctx=2048, logits_all=False, verbose=False)
    prompt = model.tokenize((ROOT / "README.md").read_text().encode())[:tokens]

    def last_logits() -> np.ndarray:
        row = llama_cpp.llama_get_logits_ith(model._ctx.ctx, -1)
        return np.ctypeslib.as_array(row, shape=(model.n_vocab(),)).copy()

    def distribution(logits: np.ndarray) -> np.ndarray:
        weights = np.exp((logits - logits.max()) / 0.7)
        return weights / weights.sum()

    model.eval(prompt)
    batched = last_logits()
    model.reset()
    model.eval(prompt[:-generated])
    for token in prompt[-generated:]:
        model.eval([token])
    stepwise = last_logits()
    gap = float(np.abs(batched - stepwise).max())
    return gap, float(np.abs(distribution(batched) - distribution(stepwise)).sum() / 2)


def line(name: str, r: dict) -> str:
    """Format one run."""
    return (
        f"{name:<28} turns {r['turns']:>2}  sent/turn {r['sent']:>6.0f}  "
        f"evaluated/turn {r['evaluated']:>6.0f}  LLM s/turn {r['llm_s']:>5.1f}  "
        f"wall s/turn {r['wall_s']:>5.1f}  server peak RSS {r['rss']:>5.0f} MiB"
    )


def compare(name: str, off: dict, on: dict) -> None:
    """Print both runs and their ratios."""
    print(line(f"{name}, no cache", off))  # noqa: T201 - the benchmark's output
    print(line(f"{name}, cache", on))  # noqa: T201
    same = off["messages"] == on["messages"]
    print(  # noqa: T201
        f"  -> evaluated x{on['evaluated'] / max(off['evaluated'], 1e-9):.2f}, "
        f"wall per turn x{on['wall_s'] / max(off['wall_s'], 1e-9):.2f}, "
        f"RSS {on['rss'] - off['rss']:+.0f} MiB, identical dialogues: {'yes' if same else 'no'}"
    )


def main() -> None:
    """Run every configuration without and with the cache; print the figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--turns", type=int, default=6, help="0: no dialogue, the batch only")
    parser.add_argument("--seed", type=Path, default=Path("examples/seed.json"))
    parser.add_argument("--n", type=int, default=4)
    parser.add_argument("--batch-turns", type=int, default=2)
    parser.add_argument("--concurrency", type=int, nargs="*", default=[1, 4], help="none: no batch")
    parser.add_argument("--seeds", type=Path, default=Path("examples/seeds.txt"))
    parser.add_argument(
        "--cache-mib", type=int, help="the cache's budget (default: IDEAS_SERVER_CACHE_MIB, 256)"
    )
    args = parser.parse_args()
    if args.cache_mib is not None and args.cache_mib < 0:
        parser.error("--cache-mib: a size in MiB, 0 or more")
    budget = args.cache_mib if args.cache_mib is not None else load_settings().server_cache_mib
    results: dict[tuple, dict] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for cache in (0, budget):
            store = Path(tmp) / "store"
            if args.turns:
                settings = load_settings(turns=args.turns, store=store, server_cache_mib=cache)
                results["dialogue", cache] = one_dialogue(settings, load_seed(args.seed))
                done = results["dialogue", cache]
                print(line(f"dialogue, cache {bool(cache)}", done), flush=True)  # noqa: T201
            settings = load_settings(turns=args.batch_turns, store=store, server_cache_mib=cache)
            seeds = load_seed_set(args.seeds)
            for c in args.concurrency:
                run_dir = Path(tmp) / f"run-{c}-{bool(cache)}"
                results[c, cache] = batch(settings, seeds, args.n, c, run_dir)
                print(line(f"batch c={c}, cache {bool(cache)}", results[c, cache]), flush=True)  # noqa: T201
    for c in args.concurrency:
        off, on = results[c, 0], results[c, budget]
        compare(f"batch {args.n}x{args.batch_turns} at c={c}", off, on)
        rate = (on["turns"] / on["wall"]) / max(off["turns"] / off["wall"], 1e-9)
        print(f"  -> throughput x{rate:.2f} (accepted turns per minute)")  # noqa: T201
    gap, distance = generated_vs_batched()
    print(  # noqa: T201
        "  why not identical: a reply's 100 tokens evaluated one at a time (as generated, what a "
        f"cached state holds) vs in one batch: next-token logits differ by up to {gap:.2f}, "
        f"total variation at temperature 0.7 {distance:.3f}"
    )
    if not args.turns:
        return
    off, on = results["dialogue", 0], results["dialogue", budget]
    compare(f"dialogue ({args.turns} turns)", off, on)
    print(  # noqa: T201
        f"prefix cache: evaluated prompt tokens x{on['evaluated'] / off['evaluated']:.2f}, "
        f"wall x{on['wall_s'] / off['wall_s']:.2f}"
    )


if __name__ == "__main__":
    main()
