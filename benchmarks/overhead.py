"""Orchestration overhead of one dialogue: wall time / summed LLM-call time (target <= 1.05).

    python benchmarks/overhead.py [--turns 6] [--seed examples/seed.json] [--critic llm|novelty]

Runs the real graph on the configured models (the embedded default unless IDEAS_MODEL__BASE_URL is
set), then prints turns, LLM calls and tokens per accepted turn, peak RSS of this process and of
the model server, and last `overhead ratio: X.XX`. Server start-up is not part of the ratio.
"""

from __future__ import annotations

import argparse
import resource
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from agents.registry import build_agents  # noqa: E402
from dialogues.messages import to_langchain  # noqa: E402
from dialogues.record import summarize  # noqa: E402
from dialogues.seeds import load_seed  # noqa: E402
from graphs.deduction import build_graph  # noqa: E402
from graphs.state import Deps, initial_state  # noqa: E402
from runtime.settings import load_settings  # noqa: E402
from wiring.generation import Growth, run_dialogue  # noqa: E402
from wiring.session import Session  # noqa: E402


def server_rss_mib(session: Session) -> float:
    """Return the embedded server's peak RSS in MiB (0 when no server was started)."""
    process = session.server.process if session.server else None
    if process is None:
        return 0.0
    status = Path(f"/proc/{process.pid}/status").read_text()
    line = next(x for x in status.splitlines() if x.startswith("VmHWM:"))
    return int(line.split()[1]) / 1024


def main() -> None:
    """Run one dialogue and print the figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--turns", type=int, default=6)
    parser.add_argument("--seed", type=Path, default=Path("examples/seed.json"))
    parser.add_argument("--critic", default=None)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as store:
        agents = {"critic": args.critic} if args.critic else None
        settings = load_settings(turns=args.turns, store=Path(store), agents=agents)
        seed = load_seed(args.seed)
        with Session(settings) as session:
            started = time.perf_counter()
            deps = Deps(build_agents(session), max_rejections=settings.max_rejections)
            wiring_seconds = time.perf_counter() - started
            state = initial_state(to_langchain(seed.to_openai_messages()), settings.turns)
            outcome = run_dialogue(Growth(build_graph(), deps), state)
            server_mib = server_rss_mib(session)
    summary = summarize(outcome.state, outcome.wall_seconds)
    accepted = summary["turns"]
    if not accepted:
        print("no turn was accepted: per-turn figures are per attempted turn")
    accepted = max(accepted, 1)
    own_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"status: {outcome.status} ({outcome.reason or 'no reason'})")
    print(f"setup (store, embeddings, server start): {wiring_seconds:.1f} s")
    print(f"turns: {summary['turns']}/{args.turns}, rejections: {summary['rejections']}")
    print(f"wall: {outcome.wall_seconds:.2f} s, summed LLM calls: {summary['llm_seconds']:.2f} s")
    print(f"LLM calls per accepted turn: {summary['llm_calls'] / accepted:.2f}")
    tokens = summary["input_tokens"] + summary["output_tokens"]
    tokens_in, tokens_out = summary["input_tokens"] / accepted, summary["output_tokens"] / accepted
    print(
        f"tokens per accepted turn: {tokens / accepted:.0f}"
        f" ({tokens_in:.0f} in, {tokens_out:.0f} out)"
    )
    for agent, usage in summary["per_agent"].items():
        print(f"  {agent:<10} calls {usage['calls']:>3}  seconds {usage['seconds']:>7.2f}")
    print(f"peak RSS: this process {own_mib:.0f} MiB, model server {server_mib:.0f} MiB")
    print(f"overhead ratio: {outcome.wall_seconds / max(summary['llm_seconds'], 1e-9):.2f}")


if __name__ == "__main__":
    main()
