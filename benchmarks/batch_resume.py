"""Kill -9 / resume cycles of a real batch: time to the first new dialogue, lost, duplicated.

    python benchmarks/batch_resume.py [--cycles 3] [--n 24] [--turns 3] [--concurrency 4]
                                      [--embedded] [--latency 0.05]

Each cycle starts `run.py batch` (the same command every time), waits until it has stored a few
more dialogues, and SIGKILLs it mid-flight; a last run finishes the batch. Prints, per restart,
the seconds from process start to its first newly stored dialogue (Python and library start-up
included), and at the end the number of planned dialogues lost and stored twice (target 0 and 0).

By default the models are a fake OpenAI-compatible server with `--latency` seconds per request
(`tests/fake_openai.py`), so the figures are about the batch machinery; `--embedded` uses the
embedded model instead (each restart then also starts the model server).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from batch.jobs import plan_jobs  # noqa: E402
from tests.fake_openai import FakeOpenAI  # noqa: E402


def stored(run: Path) -> list[str]:
    """Return the job ids in the dialogue file (complete lines only)."""
    path = run / "dialogues.jsonl"
    if not path.exists():
        return []
    lines = path.read_bytes().split(b"\n")[:-1]
    return [json.loads(line)["batch"]["job"] for line in lines]


def wait_for(run: Path, count: int, process: subprocess.Popen, limit: float) -> float | None:
    """Wait until `count` dialogues are stored; return the seconds it took (None if it exited)."""
    started = time.perf_counter()
    while time.perf_counter() - started < limit:
        if len(stored(run)) >= count:
            return time.perf_counter() - started
        if process.poll() is not None:
            return None
        time.sleep(0.02)
    return None


def main() -> None:
    """Run the kill/resume cycles and print the figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cycles", type=int, default=3)
    parser.add_argument("--n", type=int, default=24)
    parser.add_argument("--turns", type=int, default=3)
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--latency", type=float, default=0.05)
    parser.add_argument("--embedded", action="store_true")
    args = parser.parse_args()
    seeds = ROOT / "examples" / "seeds.txt"
    with tempfile.TemporaryDirectory() as tmp, contextlib.ExitStack() as stack:
        run = Path(tmp) / "run"
        argv = [
            sys.executable, "run.py", "batch", "--seeds", str(seeds), "--out", str(run),
            "--n", str(args.n), "--turns", str(args.turns), "--concurrency",
            str(args.concurrency), "--store", str(Path(tmp) / "store"), "--quiet",
        ]  # fmt: skip
        if not args.embedded:
            fake = stack.enter_context(FakeOpenAI(latency=args.latency))
            argv += ["--base-url", fake.base_url, "--library", "starter"]
        firsts, resumed = [], 0
        for cycle in range(1, args.cycles + 1):
            before = len(stored(run))
            process = subprocess.Popen(argv, cwd=ROOT, stdout=subprocess.DEVNULL)
            first = wait_for(run, before + 1, process, limit=600)
            wait_for(run, before + 2, process, limit=600)
            process.send_signal(signal.SIGKILL)
            process.wait()
            after = len(stored(run))
            label = "start" if cycle == 1 else "restart"
            print(  # noqa: T201 - the benchmark's output
                f"cycle {cycle}: {label} -> first new dialogue after "
                f"{first if first is None else round(first, 2)} s; killed with {after} stored"
            )
            if cycle > 1 and first is not None:
                firsts.append(first)
        started = time.perf_counter()
        final = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True)
        finish = time.perf_counter() - started
        for line in final.stdout.splitlines():
            if "resumed from a checkpoint" in line:
                resumed = int(line.split("(")[1].split()[0])
        jobs = stored(run)
        planned = {j.id for j in plan_jobs(len(seeds.read_text().splitlines()), args.n)}
        counts = Counter(jobs)
        lost = len(planned - set(counts))
        duplicated = sum(c - 1 for c in counts.values() if c > 1)
        print(  # noqa: T201
            f"final run: exit {final.returncode}, {finish:.1f} s, {resumed} dialogues resumed "
            f"from a checkpoint\nplanned {len(planned)}, stored {len(jobs)}, lost {lost}, "
            f"duplicated {duplicated}\nmean seconds from restart to first new dialogue: "
            f"{sum(firsts) / max(len(firsts), 1):.2f} over {len(firsts)} restarts"
        )


if __name__ == "__main__":
    main()
