"""What serving the trained simulator costs per turn: one server, adapters switched per request.

Two roles alternate on the embedded server as in a dialogue: a base-model role (the assistant's
prompt) and the simulator. The simulator runs either on the base model too (the prompted
simulator: no switch) or on the shipped trained adapter (a switch before and after each of its
requests). Each role's prompt grows by one exchange per round, as the history does (fixed text,
so both arrangements send the same prompts; replies are capped at 16 tokens). Printed per
arrangement: wall seconds and prompt tokens evaluated per request of each role; the difference
is what switching costs.

    python benchmarks/adapter_switch.py [--rounds 6]

Starts one embedded server at a time; run it alone (2 cores).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from runtime.adapters import all_shipped  # noqa: E402
from runtime.server import EmbeddedServer  # noqa: E402

BASE = "base"
PARAGRAPH = (
    "A hash map stores key-value pairs in an array of buckets; a hash function maps each key to "
    "a bucket, collisions are chained or probed, and the table grows when it fills up. "
)


def rounds_of(server: EmbeddedServer, simulator: str, rounds: int) -> dict[str, list[tuple]]:
    """Alternate assistant (base) and simulator requests; return (seconds, evaluated) per role."""
    history: list[dict[str, str]] = [{"role": "user", "content": "What is a hash map?"}]
    seen: dict[str, list[tuple]] = {"assistant": [], "simulator": []}
    with httpx.Client(base_url=server.base_url, timeout=300) as client:
        for i in range(rounds):
            for role, model in (("assistant", BASE), ("simulator", simulator)):
                messages = (
                    history
                    if role == "assistant"
                    else [
                        {"role": "system", "content": "You are the user. Ask the next question."},
                        *[
                            {**m, "role": "assistant" if m["role"] == "user" else "user"}
                            for m in history
                        ],
                    ]
                )
                body = {
                    "model": model,
                    "messages": messages,
                    "max_tokens": 16,
                    "seed": i,
                    "temperature": 0.7,
                }
                started = time.perf_counter()
                reply = client.post("/chat/completions", json=body).json()
                seconds = time.perf_counter() - started
                usage = reply["usage"]
                cached = usage.get("prompt_tokens_details", {}).get("cached_tokens", 0)
                seen[role].append((seconds, usage["prompt_tokens"] - cached))
                text = f"(reply {i} of the {role})"  # fixed: both arrangements see one history
                history.append(
                    {
                        "role": "assistant" if role == "assistant" else "user",
                        "content": (PARAGRAPH * 2 if role == "assistant" else "") + text,
                    }
                )
    return seen


def main() -> int:
    """Run both arrangements and print what switching costs."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=6)
    args = parser.parse_args()
    served = all_shipped(BASE)
    if not served:
        print("no shipped trained simulator: run scripts/build_simulators.sh", file=sys.stderr)
        return 1
    adapter = next(a for a in served if "+ideas-" in a)
    results = {}
    for name, simulator in (("prompted (no switch)", BASE), ("trained (switching)", adapter)):
        with EmbeddedServer(alias=BASE, adapters=served) as server:
            results[name] = rounds_of(server, simulator, args.rounds)
        for role, rows in results[name].items():
            later = rows[1:]  # the first request of each role has nothing cached
            print(
                f"{name:22s} {role:9s} {statistics.mean(s for s, _ in later):6.2f} s/request, "
                f"{statistics.mean(e for _, e in later):6.1f} prompt tokens evaluated/request"
            )
    prompted, trained = (results[k] for k in results)
    extra = sum(
        statistics.mean(s for s, _ in trained[r][1:])
        - statistics.mean(s for s, _ in prompted[r][1:])
        for r in ("assistant", "simulator")
    )
    print(f"adapter switching: {extra:+.3f} s per turn (two switches), same server, no reload")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
