"""What the prompt layout and the prefix cache each bring: the layout before issue 11 against now.

    python benchmarks/prefix_cache_layout.py [--old-rev 70e56ab] [--seed examples/seed.json]
                                             [--turns 6]

Grows the same seed into a dialogue four times, each on a freshly started embedded server, with
the prompted simulator (the only one the old revision has), the same agents and the `starter`
library (the old default):
the old prompt layout (`--old-rev`, checked out into a temporary git worktree: the last revision
whose embedded server already reports reused prompt tokens, before the prompts were laid out for
reuse) and the current one, each without and with the server's prefix cache. Prints per accepted
turn the prompt tokens sent and evaluated (sent minus those the server reports reused), LLM and
wall seconds, then the ratios against the old layout without the cache (how the embedded default
ran before). Last line: `layout + cache vs old layout: evaluated xA.AA, wall xB.BB`.
Run it on a quiet machine; it takes about 10 minutes on 2 cores.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
AGENTS = ["--strategist", "llm", "--simulator", "strategy", "--critic", "none", "--quiet"]
LIBRARY = ["--library", "starter"]  # the old revision's default, shipped by both
RUN = """
import os, runpy, sys
from runtime.server import EmbeddedServer
if sys.argv[1] == "off" and hasattr(EmbeddedServer, "prompt_cache_bytes"):
    EmbeddedServer.prompt_cache_bytes = None  # the old revision: a class attribute
elif sys.argv[1] == "off":
    os.environ["IDEAS_SERVER_CACHE_MIB"] = "0"
sys.argv = ["run.py", *sys.argv[2:]]
runpy.run_path("run.py", run_name="__main__")
"""


@contextmanager
def worktree(rev: str, where: Path) -> Iterator[Path]:
    """Check `rev` out into a git worktree at `where` for the block; remove it afterwards."""
    add = ["git", "worktree", "add", "--detach", "--quiet", str(where), rev]
    subprocess.run(add, cwd=ROOT, check=True)
    try:
        yield where
    finally:
        remove = ["git", "worktree", "remove", "--force", str(where)]
        subprocess.run(remove, cwd=ROOT, check=False)


def grow(tree: Path, cache: bool, args: list[str], out: Path) -> dict:
    """Grow one dialogue with the code in `tree`; return its figures per accepted turn."""
    command = [sys.executable, "-c", RUN, "on" if cache else "off", *args, "--out", str(out)]
    subprocess.run(command, cwd=tree, check=True, stdout=subprocess.DEVNULL)
    doc = json.loads(out.read_text())
    usages = [u for turn in doc["turns"] for u in turn["usage"].values()]
    turns = max(len(doc["turns"]), 1)
    sent = sum(u["input_tokens"] for u in usages)
    cached = sum(u.get("cached_tokens", 0) for u in usages)
    return {
        "turns": len(doc["turns"]),
        "sent": sent / turns,
        "evaluated": (sent - cached) / turns,
        "llm_s": sum(u["seconds"] for u in usages) / turns,
        "wall_s": doc["summary"]["wall_seconds"] / turns,
    }


def main() -> None:
    """Run the four configurations and print them with their ratios."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--old-rev", default="70e56ab", help="revision with the old layout")
    parser.add_argument("--seed", type=Path, default=Path("examples/seed.json"))
    parser.add_argument("--turns", type=int, default=6)
    args = parser.parse_args()
    seed = args.seed.resolve()
    results = {}
    with tempfile.TemporaryDirectory() as tmp, worktree(args.old_rev, Path(tmp) / "old") as old:
        for name, tree, extra in (
            ("old layout", old, []),
            ("new layout", ROOT, ["--simulator-adapter", "none"]),
        ):
            for cache in (False, True):
                run = [
                    "--seed", str(seed), "--turns", str(args.turns),
                    "--store", str(Path(tmp) / f"store-{name[:3]}"), *LIBRARY, *AGENTS, *extra,
                ]  # fmt: skip
                out = Path(tmp) / f"{name[:3]}-{cache}.json"
                r = results[name, cache] = grow(tree, cache, run, out)
                print(  # noqa: T201 - the benchmark's output
                    f"{name}, cache {'on ' if cache else 'off'}  turns {r['turns']}  "
                    f"sent/turn {r['sent']:>5.0f}  evaluated/turn {r['evaluated']:>5.0f}  "
                    f"LLM s/turn {r['llm_s']:>5.1f}  wall s/turn {r['wall_s']:>5.1f}",
                    flush=True,
                )
    base = results["old layout", False]
    for key, r in results.items():
        print(  # noqa: T201
            f"  {key[0]}, cache {'on ' if key[1] else 'off'} vs old layout without cache: "
            f"evaluated x{r['evaluated'] / base['evaluated']:.2f}, "
            f"wall x{r['wall_s'] / base['wall_s']:.2f}"
        )
    best = results["new layout", True]
    print(  # noqa: T201
        f"layout + cache vs old layout: evaluated x{best['evaluated'] / base['evaluated']:.2f}, "
        f"wall x{best['wall_s'] / base['wall_s']:.2f}"
    )


if __name__ == "__main__":
    main()
