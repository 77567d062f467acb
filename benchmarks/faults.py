"""Faults on a real batch: SIGKILLs, a second writer, damaged lines, a linked lock, huge replies.

    python benchmarks/faults.py [--n 100] [--turns 2] [--kills 10] [--seed 13] [--latency 0.01]
                                [--huge 5000000]

Runs `run.py batch` (the same command every time) against the fake OpenAI server
(`tests/fake_openai.py`). Each of `--kills` starts is SIGKILLed at a random moment (seeded: during
start-up, while dialogues are in flight, or while they are written); during one of them a second
process is started on the same run directory and must be refused (exit 2). After half the kills,
one stored line in the middle of `dialogues.jsonl` is torn (cut to 300 bytes, as a damaged disk
or a careless edit would) and another gets a wrongly typed field (`"status": 5`, as another tool
might write); both jobs must be generated again. After one of the kills the command runs once
more (not killed) while every reply is `--huge` characters, as from a server that ignores
`max_tokens`: its dialogues must fail as invalid replies, the batch stop after its failures in a
row, and its peak RSS stay small. Before the resumes `.lock` is replaced by a symlink to a decoy
file outside the run directory: that start must be refused (exit 2) and the decoy left untouched.
Then the command is run until it exits 0. Every start passes `--retry-failed`, so the dialogues
that failed on huge replies run again in the starts after it.

The figures are computed here from the run directory and the process table, not taken from the
batch's own summary: `lost` (planned jobs with no readable dialogue line), `duplicated` (readable
lines beyond the first of a job), `left running` (processes still naming the run directory), and
`torn` (unreadable lines in `dialogues.jsonl` or `index.jsonl`, beside the two damaged on
purpose, plus a partial last line). A line is readable as the app defines it
(`batch.store.read_stored_dialogue`: it validates as a typed dialogue document). The last line
reads `lost 0, duplicated 0, left running 0, torn 0` when everything held.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import signal
import socketserver
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from batch.jobs import plan_jobs  # noqa: E402
from batch.store import LOCK, read_stored_dialogue  # noqa: E402
from tests.fake_openai import FakeOpenAI  # noqa: E402


def read_lines(path: Path) -> tuple[list[bytes], bool]:
    """Return the complete lines of a file and whether a partial last line follows them."""
    if not path.exists():
        return [], False
    data = path.read_bytes()
    lines = data.split(b"\n")
    return lines[:-1], lines[-1] != b""


def readable_jobs(run: Path) -> tuple[list[str], list[bytes]]:
    """Return the job id of every readable dialogue line, and the unreadable lines."""
    jobs, bad = [], []
    for line in read_lines(run / "dialogues.jsonl")[0]:
        document = read_stored_dialogue(line + b"\n")
        if isinstance(document, str):
            bad.append(line)
        else:
            jobs.append(document.job)
    return jobs, bad


def processes_naming(path: Path) -> list[int]:
    """Return the pids of processes (other than this one) whose command line names `path`."""
    needle = str(path).encode()
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        with contextlib.suppress(OSError):
            if needle in (entry / "cmdline").read_bytes():
                pids.append(int(entry.name))
    return pids


def holds_lock(run: Path, process: subprocess.Popen) -> bool:
    """Wait until `process` holds the run directory's lock; False if it ended first."""
    while process.poll() is None:
        with contextlib.suppress(OSError):
            if (run / LOCK).read_text().strip() == str(process.pid):
                return True
        time.sleep(0.01)
    return False


def tear_a_middle_line(run: Path, rng: random.Random) -> bytes | None:
    """Cut one stored line (not the last) to 300 bytes in place; return the torn bytes."""
    path = run / "dialogues.jsonl"
    lines, _ = read_lines(path)
    if len(lines) < 3:
        return None
    k = rng.randrange(1, len(lines) - 1)
    torn = lines[k][:300]
    data = path.read_bytes().split(b"\n")
    data[k] = torn
    path.write_bytes(b"\n".join(data))
    return torn


def mistype_a_middle_line(run: Path, rng: random.Random) -> bytes | None:
    """Give one stored line (not the last) a wrongly typed `status`; return the new line."""
    path = run / "dialogues.jsonl"
    lines, _ = read_lines(path)
    readable = [k for k in range(1, len(lines) - 1) if lines[k].startswith(b"{")]
    if not readable:
        return None
    k = rng.choice(readable)
    try:
        document = json.loads(lines[k])
    except ValueError:
        return None
    document["status"] = 5
    mistyped = json.dumps(document, ensure_ascii=False).encode()
    data = path.read_bytes().split(b"\n")
    data[k] = mistyped
    path.write_bytes(b"\n".join(data))
    return mistyped


def start_with_a_linked_lock(run: Path, argv: list[str]) -> str:
    """Start the batch with `.lock` a symlink to a decoy outside; say how it ended."""
    decoy = run.parent / "decoy-authorized_keys"
    decoy.write_text("ssh-ed25519 AAAA me@host\n")
    with contextlib.suppress(FileNotFoundError):
        (run / LOCK).unlink()
    (run / LOCK).symlink_to(decoy)
    refused = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True)
    (run / LOCK).unlink()
    untouched = decoy.read_text() == "ssh-ed25519 AAAA me@host\n"
    return f"exit {refused.returncode}: {refused.stderr.strip()}; decoy untouched: {untouched}"


def wait_with_usage(process: subprocess.Popen, limit: float) -> tuple[float, int]:
    """Wait for `process` (SIGKILL after `limit` s); return its seconds and peak RSS in KiB."""
    started = time.monotonic()
    timer = threading.Timer(limit, process.kill)
    timer.start()
    try:
        _, status, usage = os.wait4(process.pid, 0)
    finally:
        timer.cancel()
    process.returncode = os.waitstatus_to_exitcode(status)
    return time.monotonic() - started, usage.ru_maxrss


def huge_replies(fake: FakeOpenAI, argv: list[str], run: Path, log: Path, size: int) -> None:
    """Run the batch once while every reply is `size` characters; print how it ended."""
    fake.set_mode("huge", size)
    try:
        with log.open("wb") as out:
            process = subprocess.Popen(argv, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT)
        seconds, rss = wait_with_usage(process, 120)
    finally:
        fake.set_mode("ok")
    print(
        f"one more start, every reply {size:,} characters: exited ({process.returncode}) after "
        f"{seconds:.2f} s, peak RSS {rss >> 10} MiB; {len(set(readable_jobs(run)[0]))} stored"
    )
    for line in log.read_text(errors="replace").splitlines():
        if line.startswith(("stopped:", "error:")) or "Traceback" in line:
            print(f"  {line.strip()}")


def main() -> None:
    """Run the fault cycles, finish the batch, and print the counts."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=100)
    parser.add_argument("--turns", type=int, default=2)
    parser.add_argument("--kills", type=int, default=10)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--latency", type=float, default=0.01)
    parser.add_argument("--seed", type=int, default=13)
    parser.add_argument("--max-wait", type=float, default=14.0, help="latest kill, s after start")
    parser.add_argument(
        "--huge", type=int, default=5_000_000, help="characters a reply in one start (0: none)"
    )
    args = parser.parse_args()
    rng = random.Random(args.seed)
    huge_start = random.Random(f"{args.seed} huge").randrange(args.kills) if args.huge else None
    # A killed client resets its connections; the fake server need not print each as a traceback.
    socketserver.BaseServer.handle_error = lambda self, request, address: None
    seeds = ROOT / "examples" / "seeds.txt"
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp, FakeOpenAI(latency=args.latency) as fake:
        run = Path(tmp) / "run"
        argv = [
            sys.executable, "run.py", "batch", "--seeds", str(seeds), "--out", str(run),
            "--n", str(args.n), "--turns", str(args.turns),
            "--concurrency", str(args.concurrency), "--store", str(Path(tmp) / "store"),
            "--base-url", fake.base_url, "--library", "starter", "--quiet",
            "--retry-failed",  # the dialogues that failed on huge replies run again
        ]  # fmt: skip
        torn_on_purpose: bytes | None = None
        mistyped: bytes | None = None
        second_writer = rng.randrange(args.kills)
        refused = None
        for kill in range(args.kills):
            moment = rng.uniform(0.5, args.max_wait)
            log = Path(tmp) / f"start-{kill + 1}.log"
            with log.open("wb") as out:
                process = subprocess.Popen(argv, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT)
            deadline = time.monotonic() + moment
            if kill == second_writer and holds_lock(run, process):
                second = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True)
                refused = (second.returncode, second.stderr.strip())
            while time.monotonic() < deadline and process.poll() is None:
                time.sleep(0.01)
            ended = process.poll()
            if ended is None:
                process.send_signal(signal.SIGKILL)
            process.wait()
            jobs, _ = readable_jobs(run)
            note = "killed" if ended is None else f"had exited ({ended})"
            print(f"start {kill + 1:2d}: {note} at {moment:5.2f} s; {len(set(jobs))} stored")
            for line in log.read_text(errors="replace").splitlines():
                if "warning:" in line or "error:" in line or "Traceback" in line:
                    print(f"  {line.strip()}")
            if kill == args.kills // 2 and torn_on_purpose is None:
                torn_on_purpose = tear_a_middle_line(run, rng)
                done = "tore" if torn_on_purpose else "could not tear (too few lines)"
                print(f"  {done} one stored line in the middle of dialogues.jsonl")
                mistyped = mistype_a_middle_line(run, rng)
                done = "mistyped" if mistyped else "could not mistype"
                print(f"  {done} another one (status: 5)")
            if kill == huge_start:
                huge_replies(fake, argv, run, Path(tmp) / "huge.log", args.huge)
        print(f"linked lock: {start_with_a_linked_lock(run, argv)}")
        resumes = 0
        while True:
            resumes += 1
            finished = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True)
            warnings = [line for line in finished.stdout.splitlines() if "warning:" in line]
            for line in warnings:
                print(f"  resume {resumes}: {line.strip()}")
            if finished.returncode == 0 or resumes == 5:
                break
        print(f"resumed {resumes} time(s) to the end; last exit code {finished.returncode}")
        if refused is not None:
            code, message = refused
            print(f"second writer during start {second_writer + 1}: exit {code}: {message}")
        planned = {job.id for job in plan_jobs(len(seeds.read_text().splitlines()), args.n)}
        jobs, bad = readable_jobs(run)
        index_lines, index_partial = read_lines(run / "index.jsonl")
        index_bad = 0
        for line in index_lines:
            try:
                json.loads(line)
            except ValueError:
                index_bad += 1
        partial = read_lines(run / "dialogues.jsonl")[1] or index_partial
        on_purpose = (torn_on_purpose in bad) + (mistyped in bad)
        torn = len(bad) - on_purpose + index_bad + partial
        lost = len(planned - set(jobs))
        duplicated = sum(count - 1 for count in Counter(jobs).values())
        left = len(processes_naming(run))
        print(
            f"{len(jobs)} readable dialogue lines, {len(bad)} unreadable (damaged on purpose: "
            f"{on_purpose}); {time.perf_counter() - started:.0f} s in all"
        )
        print(f"lost {lost}, duplicated {duplicated}, left running {left}, torn {torn}")


if __name__ == "__main__":
    main()
