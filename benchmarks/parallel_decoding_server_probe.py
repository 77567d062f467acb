"""End-to-end probe for issue 23: chat completions at concurrency 1 and 4 on both servers.

    python benchmarks/parallel_decoding_server_probe.py [--requests 8] [--max-tokens 128]
                                                         [--rounds 2] [--slots 4]

Serves the bundled SmolLM2 GGUF with 2 threads, one server at a time: llama.cpp's `llama-server`
(`-np SLOTS -c 8192`, built by `benchmarks/parallel_decoding_gonogo.py` into its cache folder)
and today's embedded server (llama-cpp-python, started as the app starts it: `EmbeddedServer`).
On each, `--requests` chat completions with distinct ~350-token prompts (a shared system prompt,
then a per-request text), `--max-tokens` each, at temperature 0.7 with fixed seeds, are sent one
at a time (c=1) and four in flight (c=4), `--rounds` times alternating the order. Printed per
server and concurrency: the median over rounds of aggregate completion tokens/s (completion
tokens over wall seconds), prompt+completion tokens/s and seconds per request, then the ratios.
Every server it starts is stopped before it exits.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.parallel_decoding_gonogo import (  # noqa: E402
    DISTRIBUTION,
    default_cache_dir,
    loadavg,
    positive,
)
from runtime.server import HOST, EmbeddedServer, ServerError, default_gguf, free_port  # noqa: E402

ALIAS = "smollm2"
SYSTEM = (
    "You are a helpful programming assistant. Answer the user's question with a clear, "
    "detailed explanation, then a short example, then the pitfalls a beginner should avoid."
)
TOPICS = (
    "hash maps",
    "binary search",
    "Python generators",
    "SQL joins",
    "git rebase",
    "TCP handshakes",
    "unit testing",
    "recursion",
)
CONTEXT = (
    "I am learning about {topic} for a project at work. I read a tutorial that explained the "
    "basic idea, but I am still unsure how it behaves in practice, what it costs in time and "
    "memory, and how it compares with the alternatives my colleagues mentioned. "
)


def prompt(i: int) -> list[dict[str, str]]:
    """Return the `i`-th request's messages: the shared system prompt, then its own question."""
    topic = TOPICS[i % len(TOPICS)]
    text = CONTEXT.format(topic=topic) * 5 + f"Please explain {topic} (question {i})."
    return [{"role": "system", "content": SYSTEM}, {"role": "user", "content": text}]


def load(base_url: str, requests: int, concurrency: int, max_tokens: int) -> dict[str, float]:
    """Send `requests` chat completions, `concurrency` in flight; return the rates seen."""

    def one(i: int) -> dict:
        body = {
            "model": ALIAS,
            "messages": prompt(i),
            "max_tokens": max_tokens,
            "temperature": 0.7,
            "seed": i,
        }
        reply = client.post("/chat/completions", json=body)
        reply.raise_for_status()
        return reply.json()["usage"]

    with httpx.Client(base_url=base_url, timeout=600) as client:
        started = time.perf_counter()
        with ThreadPoolExecutor(concurrency) as pool:
            usages = list(pool.map(one, range(requests)))
        wall = time.perf_counter() - started
    completion = sum(u["completion_tokens"] for u in usages)
    prompt_tokens = sum(u["prompt_tokens"] for u in usages)
    return {
        "decode": completion / wall,
        "total": (completion + prompt_tokens) / wall,
        "per_request": wall / requests,
        "completion": completion / requests,
        "prompt": prompt_tokens / requests,
    }


class LlamaServer:
    """Run the built `llama-server` for a `with` block; stopped (killed if need be) on exit."""

    def __init__(self, binary: Path, gguf: Path, slots: int, threads: int) -> None:
        """Serve `gguf` with `slots` parallel slots on a free port."""
        self.port = free_port()
        self.command = [str(binary), "-m", str(gguf), "-a", ALIAS, "--host", HOST]
        self.command += ["--port", str(self.port), "-np", str(slots), "-c", "8192"]
        self.command += ["-t", str(threads), "-tb", str(threads), "--no-webui"]
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def base_url(self) -> str:
        """The OpenAI-compatible endpoint."""
        return f"http://{HOST}:{self.port}/v1"

    def __enter__(self) -> LlamaServer:
        """Start the server and wait until `/health` answers 200."""
        self.process = subprocess.Popen(
            self.command,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise ServerError(f"llama-server exited with {self.process.returncode}")
            try:
                if httpx.get(f"http://{HOST}:{self.port}/health", timeout=2).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        self.__exit__(None, None, None)
        raise ServerError("llama-server did not become healthy in 120 s")

    def __exit__(self, *exc: object) -> None:
        """Stop the server."""
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def main() -> int:
    """Run both servers at concurrency 1 and 4 and print the rates and ratios."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=positive, default=8)
    parser.add_argument("--max-tokens", type=positive, default=128)
    parser.add_argument("--rounds", type=positive, default=2)
    parser.add_argument("--slots", type=positive, default=4)
    parser.add_argument("--threads", type=positive, default=2)
    args = parser.parse_args()
    binary = default_cache_dir(importlib.metadata.version(DISTRIBUTION)) / "build/bin/llama-server"
    if not binary.is_file():
        print(
            "error: llama-server not built: run benchmarks/parallel_decoding_gonogo.py first",
            file=sys.stderr,
        )
        return 1
    results: dict[tuple[str, int], list[dict[str, float]]] = {}
    try:
        gguf = default_gguf()
        for r in range(args.rounds):
            servers = ["llama-server", "llama-cpp-python"]
            for name in servers if r % 2 == 0 else servers[::-1]:
                before = loadavg()
                if name == "llama-server":
                    server = LlamaServer(binary, gguf, args.slots, args.threads)
                else:
                    server = EmbeddedServer(gguf, alias=ALIAS, n_threads=args.threads)
                with server:
                    for c in (1, 4) if r % 2 == 0 else (4, 1):
                        seen = load(server.base_url, args.requests, c, args.max_tokens)
                        results.setdefault((name, c), []).append(seen)
                        print(
                            f"round {r + 1} {name:16s} c={c}: decode {seen['decode']:6.1f} "
                            f"t/s, total {seen['total']:6.1f} t/s, "
                            f"{seen['per_request']:5.2f} s/request, "
                            f"{seen['completion']:5.1f} completion tokens/request"
                        )
                print(f"  load {before} -> {loadavg()}")
    except (ServerError, httpx.HTTPError, OSError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    med = {
        key: {k: statistics.median(s[k] for s in runs) for k in runs[0]}
        for key, runs in results.items()
    }
    print(
        f"median of {args.rounds} rounds, {args.requests} requests of {args.max_tokens} tokens max"
    )
    for (name, c), m in sorted(med.items()):
        print(
            f"{name:16s} c={c}: completion {m['decode']:6.1f} t/s, prompt+completion "
            f"{m['total']:6.1f} t/s, {m['per_request']:5.2f} s/request "
            f"(prompt {m['prompt']:.0f}, completion {m['completion']:.0f} tokens/request)"
        )
    new4, new1 = med[("llama-server", 4)], med[("llama-server", 1)]
    old4, old1 = med[("llama-cpp-python", 4)], med[("llama-cpp-python", 1)]
    print(f"llama-server c=4 vs c=1: completion x{new4['decode'] / new1['decode']:.2f}")
    print(f"llama-cpp-python c=4 vs c=1: completion x{old4['decode'] / old1['decode']:.2f}")
    print(
        f"server probe: llama-server c=4 vs llama-cpp-python c=4: completion tokens/s "
        f"x{new4['decode'] / old4['decode']:.2f}, seconds/request "
        f"x{new4['per_request'] / old4['per_request']:.2f}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
