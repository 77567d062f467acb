"""Go/no-go for parallel decoding (issue 23): does one batched step over N sequences pay on 2 cores?

    python benchmarks/parallel_decoding_gonogo.py [--rounds 3] [--npp 384] [--ntg 128]
                                                  [--npl 1,2,4,8] [--threads 2]
                                                  [--cache-dir DIR] [--sdist FILE]

Builds llama.cpp's `llama-batched-bench` and `llama-server` from the llama.cpp source vendored in
the sdist of the *installed* llama-cpp-python version (fetched with `pip download`, usually from
pip's cache), with the flags `scripts/setup.sh` gives llama-cpp-python (`GGML_NATIVE=OFF`), into
a cache folder outside the repository (default `~/.cache/ideas-dialogues/llama.cpp-build-VERSION`;
a second run reuses the build and prints the build time it recorded). Then runs the bench on the
bundled SmolLM2 GGUF: for each number of parallel sequences B, B prompts of `--npp` tokens in one
batch (S_PP, prompt tokens/s), then `--ntg` steps that each decode one token of every sequence
(S_TG, aggregate decoded tokens/s). `--rounds` runs alternate the order of B (1,2,4,8 then
8,4,2,1) so that load from other processes spreads over all of them; the load average is
recorded before and after each. Prints per B the median and range over the rounds, then the
decode ratio of 4 sequences to 1 (per round, paired) and last the issue's decision:
`parallel decoding go/no-go: 4 sequences decode xN.NN the rate of 1 -> GO|NO-GO (rule: >= 1.5)`.
Run it on a quiet machine: with more runnable processes than cores, the threads' barrier after
every op dominates a step whatever its size, which inflates the ratio
(`docs/results/parallel-decoding/README.md`).
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import os
import shutil
import statistics
import subprocess
import sys
import tarfile
import time
from pathlib import Path

from platformdirs import user_cache_dir

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from dialogues.errors import ServiceError  # noqa: E402
from runtime.server import ServerError, default_gguf  # noqa: E402

DISTRIBUTION = "llama-cpp-python"
TARGETS = ("llama-batched-bench", "llama-server")
CMAKE_OPTIONS = (
    "-DCMAKE_BUILD_TYPE=Release",
    "-DGGML_NATIVE=OFF",  # as scripts/setup.sh builds llama-cpp-python: same CPU code paths
    "-DBUILD_SHARED_LIBS=OFF",  # self-contained binaries, no rpath into the build folder
    "-DLLAMA_BUILD_TESTS=OFF",
    "-DLLAMA_BUILD_EXAMPLES=OFF",
    "-DLLAMA_BUILD_SERVER=ON",
    "-DLLAMA_BUILD_APP=OFF",
    "-DLLAMA_BUILD_UI=OFF",  # no npm
    "-DLLAMA_USE_PREBUILT_UI=OFF",  # no download of the web UI: the server runs without it
    "-DLLAMA_OPENSSL=OFF",  # a local HTTP server needs no TLS
)
GO_RATIO = 1.5
"""The issue's rule: 4 sequences must decode at least this multiple of 1 sequence's rate."""


class GoNoGoError(ServiceError, RuntimeError):
    """Building or running the bench failed; the message is one line for the user."""


def default_cache_dir(version: str) -> Path:
    """Return the build cache folder for llama-cpp-python `version` (outside the repository).

    A sibling of the LoRA converter's cache (`training/convert.py`), never the same folder:
    installing the converter replaces that one whole.
    """
    root = os.environ.get("IDEAS_CACHE") or user_cache_dir("ideas-dialogues")
    return Path(root) / f"llama.cpp-build-{version}"


def fetch_sdist(version: str, folder: Path) -> Path:
    """Return the llama-cpp-python `version` sdist in `folder`, downloading it with pip if absent.

    Raises:
        GoNoGoError: If pip cannot fetch it.
    """
    name = f"llama_cpp_python-{version}.tar.gz"
    if (folder / name).is_file():
        return folder / name
    command = [sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:"]
    command += [f"{DISTRIBUTION}=={version}", "-d", str(folder)]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0 or not (folder / name).is_file():
        lines = (done.stderr or done.stdout).strip().splitlines() or ["no output"]
        raise GoNoGoError(f"pip could not fetch the {DISTRIBUTION} {version} sdist: {lines[-1]}")
    return folder / name


def extract_llama_cpp(sdist: Path, target: Path) -> Path:
    """Extract the sdist's `vendor/llama.cpp` tree into `target` (once) and return its root.

    Raises:
        GoNoGoError: If the archive holds no vendored llama.cpp.
    """
    source = target / "llama.cpp"
    if (source / "CMakeLists.txt").is_file():
        return source
    with tarfile.open(sdist) as archive:
        members = [m for m in archive.getmembers() if "/vendor/llama.cpp/" in m.name]
        if not members:
            raise GoNoGoError(f"{sdist.name} holds no vendor/llama.cpp tree")
        partial = target / "llama.cpp.partial"
        shutil.rmtree(partial, ignore_errors=True)
        for member in members:
            member.name = member.name.split("/vendor/llama.cpp/", 1)[1]
            archive.extract(member, partial, filter="data")
    partial.rename(source)
    return source


def build(source: Path, folder: Path, jobs: int) -> tuple[float, bool]:
    """Configure and build `TARGETS` in `folder`; return (build seconds, whether it ran now).

    A finished build leaves `build-time.json`; later calls return the seconds it recorded.

    Raises:
        GoNoGoError: If cmake is missing or the build fails (its log stays in `folder`).
    """
    stamp = folder / "build-time.json"
    if stamp.is_file() and all((folder / "bin" / t).is_file() for t in TARGETS):
        return json.loads(stamp.read_text())["seconds"], False
    if shutil.which("cmake") is None:
        raise GoNoGoError("cmake not found: install cmake and a C++ compiler")
    folder.mkdir(parents=True, exist_ok=True)
    log = folder / "build.log"
    steps = (
        ["cmake", "-S", str(source), "-B", str(folder), *CMAKE_OPTIONS],
        ["cmake", "--build", str(folder), "--target", *TARGETS, f"-j{jobs}"],
    )
    started = time.perf_counter()
    with log.open("w") as out:
        for step in steps:
            if subprocess.run(step, stdout=out, stderr=subprocess.STDOUT, check=False).returncode:
                raise GoNoGoError(f"`{' '.join(step[:2])}` failed: see {log}")
    seconds = time.perf_counter() - started
    stamp.write_text(json.dumps({"seconds": round(seconds, 1), "targets": list(TARGETS)}))
    return seconds, True


def loadavg() -> str:
    """Return the 1, 5 and 15 minute load averages."""
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def bench_round(binary: Path, gguf: Path, args: argparse.Namespace, order: list[int]) -> list:
    """Run the bench once over `order` parallel sequence counts; return its JSON result rows.

    Raises:
        GoNoGoError: If the bench fails or reports no results.
    """
    n_ctx = max(order) * (args.npp + args.ntg)
    command = [str(binary), "-m", str(gguf), "-t", str(args.threads), "-tb", str(args.threads)]
    command += ["-c", str(n_ctx), "-b", "2048", "-ub", "512", "-npp", str(args.npp)]
    command += ["-ntg", str(args.ntg), "-npl", ",".join(map(str, order))]
    command += ["--output-format", "jsonl"]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    rows = [
        json.loads(line)
        for line in (done.stdout + "\n" + done.stderr).splitlines()
        if line.startswith("{") and '"speed_tg"' in line
    ]
    if done.returncode != 0 or len(rows) != len(order):
        lines = done.stderr.strip().splitlines() or ["no output"]
        raise GoNoGoError(f"llama-batched-bench failed ({done.returncode}): {lines[-1]}")
    return rows


def parse_npl(text: str) -> list[int]:
    """Parse `--npl`: comma-separated positive sequence counts that include 1 and 4."""
    try:
        values = sorted({int(part) for part in text.split(",")})
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a list of integers: {text!r}") from None
    if values[0] < 1 or not {1, 4} <= set(values):
        raise argparse.ArgumentTypeError("positive counts that include 1 and 4 (e.g. 1,2,4,8)")
    return values


def positive(text: str) -> int:
    """Parse a positive integer argument."""
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"not a positive integer: {text!r}")
    return value


def spread(values: list[float]) -> str:
    """Return `median [min-max]` of `values`."""
    return f"{statistics.median(values):7.1f} [{min(values):6.1f}-{max(values):6.1f}]"


def main() -> int:
    """Build the bench if needed, run it `--rounds` times and print the table and the decision."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=positive, default=3)
    parser.add_argument("--npp", type=positive, default=384, help="prompt tokens per sequence")
    parser.add_argument("--ntg", type=positive, default=128, help="decoded tokens per sequence")
    parser.add_argument("--npl", type=parse_npl, default=[1, 2, 4, 8], help="parallel sequences")
    parser.add_argument("--threads", type=positive, default=2)
    parser.add_argument("--jobs", type=positive, default=2, help="parallel compile jobs")
    parser.add_argument("--cache-dir", type=Path, help="build cache folder")
    parser.add_argument("--sdist", type=Path, help="a llama-cpp-python sdist to build from")
    args = parser.parse_args()
    if args.sdist is not None and not args.sdist.is_file():
        print(f"error: no such sdist: {args.sdist}", file=sys.stderr)
        return 2
    try:
        version = importlib.metadata.version(DISTRIBUTION)
    except importlib.metadata.PackageNotFoundError:
        print(
            f"error: {DISTRIBUTION} is not installed: run `bash scripts/setup.sh`", file=sys.stderr
        )
        return 1
    cache = args.cache_dir or default_cache_dir(version)
    try:
        gguf = default_gguf()
        cache.mkdir(parents=True, exist_ok=True)
        sdist = args.sdist or fetch_sdist(version, cache / "sdist")
        source = extract_llama_cpp(sdist, cache)
        seconds, fresh = build(source, cache / "build", args.jobs)
        print(
            f"llama.cpp from {DISTRIBUTION} {version}: {', '.join(TARGETS)} "
            f"{'built' if fresh else 'cached, built'} in {seconds:.0f} s with -j{args.jobs} "
            f"({cache / 'build'})"
        )
        print(f"model {gguf.name}, {args.threads} threads, prompt {args.npp}, decode {args.ntg}")
        rows: dict[int, list[dict]] = {n: [] for n in args.npl}
        ratios: list[float] = []
        for i in range(args.rounds):
            order = args.npl if i % 2 == 0 else args.npl[::-1]
            before = loadavg()
            found = {
                row["pl"]: row
                for row in bench_round(cache / "build" / "bin" / TARGETS[0], gguf, args, order)
            }
            print(f"round {i + 1} (B {','.join(map(str, order))}): load {before} -> {loadavg()}")
            for n in args.npl:
                rows[n].append(found[n])
            ratios.append(found[4]["speed_tg"] / found[1]["speed_tg"])
    except (ServerError, GoNoGoError, OSError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    first = rows[args.npl[0]][0]
    print(
        f"n_batch {first['n_batch']}, n_ubatch {first['n_ubatch']}, "
        f"flash_attn {first['flash_attn']}; median [min-max] of {args.rounds} rounds"
    )
    print(
        f"{'B':>3}  {'S_PP prompt t/s':>23}  {'S_TG decode t/s':>23}  "
        f"{'S_TG per seq':>12}  {'decode vs B=1':>13}"
    )
    base = statistics.median(r["speed_tg"] for r in rows[1])
    for n in args.npl:
        tg = [r["speed_tg"] for r in rows[n]]
        print(
            f"{n:3d}  {spread([r['speed_pp'] for r in rows[n]])}  {spread(tg)}  "
            f"{statistics.median(tg) / n:12.1f}  {statistics.median(tg) / base:12.2f}x"
        )
    ratio = statistics.median(ratios)
    print(f"decode rate 4 vs 1 per round: {', '.join(f'x{r:.2f}' for r in ratios)}")
    verdict = "GO" if ratio >= GO_RATIO else "NO-GO"
    print(
        f"parallel decoding go/no-go: 4 sequences decode x{ratio:.2f} the rate of 1 -> "
        f"{verdict} (rule: >= {GO_RATIO})"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
