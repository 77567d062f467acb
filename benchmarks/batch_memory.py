"""Peak memory of a batch process: it should not grow with the batch size.

    python benchmarks/batch_memory.py [--sizes 50 500] [--turns 2] [--concurrency 8]

Runs `run.py batch` once per size in a fresh process against a fake OpenAI-compatible server
(`tests/fake_openai.py`, no latency: the figures are the batch machinery's own, not a model's),
and prints each process's peak RSS (from `wait4`) and wall time.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.fake_openai import FakeOpenAI  # noqa: E402


def run_batch(argv: list[str]) -> tuple[int, float, float]:
    """Run one batch process; return its exit code, peak RSS in MiB and wall seconds."""
    started = time.perf_counter()
    process = subprocess.Popen(argv, cwd=ROOT, stdout=subprocess.DEVNULL)
    _, status, usage = os.wait4(process.pid, 0)
    process.returncode = os.waitstatus_to_exitcode(status)
    return process.returncode, usage.ru_maxrss / 1024, time.perf_counter() - started


def main() -> None:
    """Run each size and print the figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[50, 500])
    parser.add_argument("--turns", type=int, default=2)
    parser.add_argument("--concurrency", type=int, default=8)
    args = parser.parse_args()
    seeds = ROOT / "examples" / "seeds.txt"
    with tempfile.TemporaryDirectory() as tmp, FakeOpenAI() as fake:
        for size in args.sizes:
            argv = [
                sys.executable, "run.py", "batch", "--seeds", str(seeds),
                "--out", str(Path(tmp) / f"run-{size}"), "--n", str(size),
                "--turns", str(args.turns), "--concurrency", str(args.concurrency),
                "--base-url", fake.base_url, "--library", "starter",
                "--store", str(Path(tmp) / "store"), "--quiet",
            ]  # fmt: skip
            code, rss, wall = run_batch(argv)
            print(  # noqa: T201 - the benchmark's output
                f"{size} dialogues x {args.turns} turns: exit {code}, peak RSS {rss:.0f} MiB, "
                f"{wall:.1f} s ({size * args.turns / wall * 60:.0f} turns/min)"
            )


if __name__ == "__main__":
    main()
