"""Prompt work a prefix cache saves under the old prompt layout and the current one, model-free.

    python benchmarks/prefix_layout_replay.py [--old-rev 70e56ab] [--turns 6] [--n 8]
                                              [--data ../shared/data] [--cache-mib MIB]
                                              [--roles strategist simulator critic assistant]

The live comparison (benchmarks/prefix_cache_layout.py) is confounded: the tiny model writes
turns of very different lengths under each layout. This replay removes that. It takes `--n` real
dialogues with at least 1 + `--turns` exchanges (the first ones, in file order, of the real
dialogue files `induction.real_dialogues.REAL_DIALOGUES`, then MT-Bench-101), seeds each with its
first exchange and replays the rest through each revision's own agents and graph with scripted
fake models (`tests/fakes.py`, `tests/conftest.py` of that revision): the LLM strategist always
takes candidate 1, the prompted simulator (no adapter) "writes" the real next user turn, the LLM
critic passes it (the novelty check is off: real users repeat themselves) and the assistant
"writes" the real next answer. Every reply is cut at its role's `max_tokens`, as the server
would cut it. Both layouts therefore see the same dialogues; only their requests differ. The
old layout (`--old-rev`, the revision before the prompts were laid out for reuse) runs in a
temporary git worktree, the current one in this tree; both use the team-written starter
strategies in the tests' in-memory store.

Each request is rendered with the bundled model's chat template (as llama-cpp-python's server
renders it) and tokenised with its vocabulary, then replayed in call order against three servers:
no cache (only the prefix shared with the context the previous request left, its prompt and
completion, is reused), llama-cpp-python's RAM cache as the embedded server runs it (the real
`runtime.llama_server.PrefixCache`, `--cache-mib` as the server's budget, states of 23,040 bytes a
token: SmolLM2-135M's f16 KV cache, 30 layers x 2 x 192 x 2 bytes; `Llama._create_completion`'s
lookup and store), and an ideal unbounded prefix cache (vLLM, SGLang: the longest prefix shared
with any earlier request). A request always evaluates at least one token. Both orders: one
dialogue after another (c=1), and four dialogues at a time, their requests of each turn taken in
turn (c=4, a batch at concurrency 4 on a server that answers one request at a time).

Prints per layout and server the requests, sent and evaluated prompt tokens per accepted turn,
per role the sent and evaluated tokens per call, then the ratios against the old layout without
cache. Last line: `replay: layout + cache vs old layout: evaluated x0.NN` (the current layout with
llama-cpp-python's cache against the old one without, one dialogue at a time).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from agents.simulator import clean_instruction  # noqa: E402
from benchmarks.prefix_cache_layout import worktree  # noqa: E402
from dialogues.models import GENERATION_ROLES  # noqa: E402
from induction.loaders import load  # noqa: E402
from induction.real_dialogues import REAL_DIALOGUES  # noqa: E402
from runtime.settings import ROLE_DEFAULTS  # noqa: E402

KV_BYTES_PER_TOKEN = 23_040
"""SmolLM2-135M's f16 KV cache per token: 30 layers x (K + V) x 192 (3 KV heads x 64) x 2 bytes."""
SOURCES = (*REAL_DIALOGUES, "mtbench101/mtbench101.jsonl")
"""Dialogue files searched, in this order, for dialogues long enough."""
CHAT_ROLES = {"system": "system", "human": "user", "ai": "assistant"}
VERDICT = {"correct": True, "coherent": True, "depth": 4, "insight": 4, "feedback": "Fine."}
CHOICE = {"choice": "1"}

DRIVER = '''
"""Replay fixed dialogues through this tree's graph with scripted models; dump every request."""
import asyncio, json, sys

from agents.chat import ChatClient
from agents.registry import build_agents
from graphs.deduction import build_graph
from graphs.state import Deps, initial_state
from langchain_core.messages import AIMessage, HumanMessage
from runtime.settings import RoleOverride, Settings
from stores.base import StrategyRecord
from stores.memory import HashingEmbedding, InMemoryStrategyStore
from tests.conftest import ScriptedWiring
from tests.fakes import ScriptedChatModel, text_reply, tool_reply

try:
    from wiring.generation import Growth
except ImportError:  # the old layout: before the wiring package
    from runtime.generation import Growth

job = json.loads(open(sys.argv[1]).read())
log, where = [], {}


class Recording(ScriptedChatModel):
    role: str = ""

    def _generate(self, messages, *args, **kwargs):
        if len(self.prompts) >= len(self.script):  # exhausted: the base class says so
            return super()._generate(messages, *args, **kwargs)
        reply = self.script[len(self.prompts)]
        calls = reply.tool_calls
        log.append({
            "role": self.role,
            **where,
            "turn": 1 + sum(r["dialogue"] == where["dialogue"] and r["role"] == "assistant"
                            for r in log),
            "messages": [{"type": m.type, "content": m.text} for m in messages],
            "completion": json.dumps(calls[0]["args"]) if calls else reply.text,
        })
        return super()._generate(messages, *args, **kwargs)


class Wiring(ScriptedWiring):
    def chat(self, role):
        script = self.scripts.get(role, [])
        return ChatClient(self.models.setdefault(role, Recording(script=script, role=role)))


agents = {"strategist": "llm", "simulator": "strategy", "critic": "llm", "assistant": "llm"}
extra = {}
if "adapter" in RoleOverride.model_fields:  # the prompted simulator, not the trained one
    extra["simulator"] = {"adapter": "none"}
settings = Settings(agents=agents, novelty_threshold=1.0, **extra)
store = InMemoryStrategyStore("replay", HashingEmbedding())
store.add([StrategyRecord(id=s["id"], text=s["text"]) for s in job["strategies"]])
statuses = {}
for dialogue in job["dialogues"]:
    turns = dialogue["turns"]
    w = Wiring(settings, store, {
        "strategist": [tool_reply("StrategyChoice", **job["choice"]) for _ in turns],
        "simulator": [text_reply(t["user"]) for t in turns],
        "critic": [tool_reply("CriticScores", **job["verdict"]) for _ in turns],
        "assistant": [text_reply(t["assistant"]) for t in turns],
    })
    where["dialogue"] = dialogue["id"]
    seed = [HumanMessage(content=dialogue["seed"][0]), AIMessage(content=dialogue["seed"][1])]
    growth = Growth(build_graph(), Deps(build_agents(w)), lambda event: None)
    outcome = asyncio.run(growth.run(initial_state(seed, len(turns))))
    unused = {role: m.unused for role, m in w.models.items() if m.unused}
    status = [outcome.status, outcome.state.get("reason"), unused and f"unused {unused}"]
    statuses[dialogue["id"]] = " ".join(str(s) for s in status if s)
    if outcome.status != "complete" or unused:
        break
open(sys.argv[2], "w").write(json.dumps({"statuses": statuses, "requests": log}))
'''


@dataclass(frozen=True)
class Request:
    """One request as the server sees it: prompt tokens, then the completion tokens it wrote."""

    role: str
    dialogue: str
    turn: int
    prompt: np.ndarray
    completion: np.ndarray

    @property
    def context(self) -> np.ndarray:
        """The tokens in the model's context after the request: prompt and completion."""
        return np.concatenate([self.prompt, self.completion])


@dataclass
class KVState:
    """A stand-in for `llama_cpp.llama.LlamaState`: its tokens and its size, nothing else."""

    input_ids: np.ndarray
    llama_state_size: int


def common_prefix(a: Sequence[int], b: Sequence[int]) -> int:
    """Return the length of the longest common prefix of two token sequences."""
    n = min(len(a), len(b))
    differ = np.flatnonzero(np.asarray(a[:n]) != np.asarray(b[:n]))
    return int(differ[0]) if differ.size else n


def evaluated(prompt: Sequence[int], reused: int) -> int:
    """Return the prompt tokens left to evaluate after `reused` ones: at least one."""
    return len(prompt) - min(reused, len(prompt) - 1)


def no_cache(requests: Iterable[Request]) -> list[int]:
    """Evaluated tokens per request when only the previous request's context is reused."""
    context: np.ndarray = np.array([], dtype=np.intc)
    counts = []
    for r in requests:
        counts.append(evaluated(r.prompt, common_prefix(context, r.prompt)))
        context = r.context
    return counts


def ram_cache(
    requests: Iterable[Request], capacity: int, bytes_per_token: int = KV_BYTES_PER_TOKEN
) -> list[int]:
    """Evaluated tokens per request with llama-cpp-python's RAM cache, as our server runs it.

    Mirrors `Llama._create_completion`: the cache state with the longest prefix of the prompt is
    loaded when it shares more than the current context; after the reply the state of prompt and
    completion is stored (the real `PrefixCache` with `capacity` bytes decides what it keeps).
    """
    from runtime.llama_server import PrefixCache  # llama_cpp: only where the cache is simulated

    cache = PrefixCache(capacity_bytes=capacity)
    context: np.ndarray = np.array([], dtype=np.intc)
    counts = []
    for r in requests:
        prompt = r.prompt.tolist()
        try:
            state = cache[prompt]
            if common_prefix(state.input_ids, prompt) > common_prefix(context, prompt):
                context = state.input_ids
        except KeyError:
            pass
        counts.append(evaluated(prompt, common_prefix(context, prompt)))
        context = r.context
        cache[context.tolist()] = KVState(context, len(context) * bytes_per_token)
    return counts


def ideal_cache(requests: Iterable[Request]) -> list[int]:
    """Evaluated tokens per request with an unbounded cache of every earlier context."""
    seen: list[np.ndarray] = []
    counts = []
    for r in requests:
        reused = max((common_prefix(s, r.prompt) for s in seen), default=0)
        counts.append(evaluated(r.prompt, reused))
        seen.append(r.context)
    return counts


def interleave(requests: Sequence[Request], concurrency: int) -> list[Request]:
    """Return the order of a batch at `concurrency`: dialogues in groups, their turns in step.

    Within a group, turn by turn, the first request of each dialogue's turn comes first, then
    the second of each, and so on: a server answering one request at a time, with the dialogues
    waiting on it in turn.
    """
    dialogues: dict[str, dict[int, list[Request]]] = {}
    for r in requests:
        dialogues.setdefault(r.dialogue, {}).setdefault(r.turn, []).append(r)
    names = list(dialogues)
    order = []
    for start in range(0, len(names), concurrency):
        group = [dialogues[name] for name in names[start : start + concurrency]]
        for turn in sorted({t for d in group for t in d}):
            steps = [d.get(turn, []) for d in group]
            for i in range(max(map(len, steps))):
                order += [s[i] for s in steps if i < len(s)]
    return order


class Tokenizer:
    """The bundled model's chat template and vocabulary, as llama-cpp-python's server uses them."""

    def __init__(self, gguf: Path) -> None:
        """Load the vocabulary of `gguf` (no weights) and its chat template."""
        import llama_cpp
        from llama_cpp._utils import suppress_stdout_stderr
        from llama_cpp.llama_chat_format import Jinja2ChatFormatter

        with suppress_stdout_stderr(disable=False):  # a warning about the vocabulary's context
            self.llama = llama_cpp.Llama(model_path=str(gguf), vocab_only=True, verbose=False)
        model = self.llama._model
        self.formatter = Jinja2ChatFormatter(
            template=self.llama.metadata["tokenizer.chat_template"],
            eos_token=model.token_get_text(self.llama.token_eos()),
            bos_token=model.token_get_text(self.llama.token_bos()),
        )

    def prompt(self, messages: list[dict]) -> np.ndarray:
        """Return the tokens of a chat request (`messages`: LangChain type and content)."""
        chat = [{"role": CHAT_ROLES[m["type"]], "content": m["content"]} for m in messages]
        result = self.formatter(messages=chat)
        tokens = self.llama.tokenize(
            result.prompt.encode(), add_bos=not result.added_special, special=True
        )
        return np.array(tokens, dtype=np.intc)

    def text(self, text: str) -> np.ndarray:
        """Return the tokens of a reply's text."""
        return np.array(self.llama.tokenize(text.encode(), add_bos=False), dtype=np.intc)

    def cut(self, text: str, max_tokens: int) -> str:
        """Return `text` cut to its first `max_tokens` tokens."""
        tokens = self.text(text)
        if len(tokens) <= max_tokens:
            return text
        return self.llama.detokenize(tokens[:max_tokens].tolist()).decode(errors="ignore")


def transcripts(data: Path, turns: int, n: int, tokenizer: Tokenizer) -> list[dict]:
    """Return the first `n` real dialogues with a seed exchange and `turns` more, replies cut."""
    user_cap = ROLE_DEFAULTS["simulator"]["max_tokens"]
    answer_cap = ROLE_DEFAULTS["assistant"]["max_tokens"]
    chosen = []
    for source in SOURCES:
        for dialogue in load(data / source).dialogues:
            texts = [t.text for t in dialogue.turns[: 2 * (1 + turns)]]
            if len(texts) < 2 * (1 + turns) or not all(t.strip() for t in texts):
                continue
            exchanges = [
                {"user": tokenizer.cut(u, user_cap), "assistant": tokenizer.cut(a, answer_cap)}
                for u, a in zip(texts[2::2], texts[3::2], strict=True)
            ]
            if not all(clean_instruction(e["user"]) for e in exchanges):
                continue
            chosen.append({"id": dialogue.record_id, "seed": texts[:2], "turns": exchanges})
            if len(chosen) == n:
                return chosen
    sys.exit(f"prefix_layout_replay: only {len(chosen)} dialogues in {data} have {1 + turns} turns")


def record(tree: Path, job: Path, out: Path) -> dict:
    """Replay the job's dialogues with the code in `tree`; return the driver's dump."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("IDEAS_")}
    env["PYTHONPATH"] = str(tree)
    command = [sys.executable, "-c", DRIVER, str(job), str(out)]
    subprocess.run(command, cwd=tree, env=env, check=True)
    dump = json.loads(out.read_text())
    broken = {d: s for d, s in dump["statuses"].items() if s != "complete"}
    if broken:
        sys.exit(f"prefix_layout_replay: the replay in {tree} did not complete: {broken}")
    return dump


def requests_of(dump: dict, tokenizer: Tokenizer) -> list[Request]:
    """Tokenise the dumped requests in call order."""
    return [
        Request(
            r["role"],
            r["dialogue"],
            r["turn"],
            tokenizer.prompt(r["messages"]),
            tokenizer.text(r["completion"]),
        )
        for r in dump["requests"]
    ]


def simulate(requests: list[Request], capacity: int) -> dict[tuple[str, str], list[tuple]]:
    """Return (server, order) -> (request, evaluated tokens) in that order's call order."""
    servers: dict[str, Callable[[list[Request]], list[int]]] = {
        "no cache": no_cache,
        "llama-cpp-python cache": lambda rs: ram_cache(rs, capacity),
        "ideal cache": ideal_cache,
    }
    results = {}
    for order, ordered in (("c=1", requests), ("c=4", interleave(requests, 4))):
        for server, run in servers.items():
            results[server, order] = list(zip(ordered, run(ordered), strict=True))
    return results


def report(results: dict[str, dict], turns: int, roles: Sequence[str]) -> None:
    """Print the rows, the per-role figures and the ratios."""
    totals = {}
    for layout, by_mode in results.items():
        for (server, order), rows in by_mode.items():
            sent = sum(len(r.prompt) for r, _ in rows)
            done = sum(e for _, e in rows)
            totals[layout, server, order] = (sent, done)
            print(  # noqa: T201 - the benchmark's output
                f"{layout}, {server:<22} {order}  requests {len(rows):>4}  "
                f"sent/turn {sent / turns:>6.0f}  evaluated/turn {done / turns:>6.0f}"
            )
    print("per role, sent and evaluated prompt tokens per call:")  # noqa: T201
    for layout, by_mode in results.items():
        for role in roles:
            cells = []
            for key in (("no cache", "c=1"), ("llama-cpp-python cache", "c=1"),
                        ("llama-cpp-python cache", "c=4"), ("ideal cache", "c=1")):  # fmt: skip
                rows = [(r, e) for r, e in by_mode[key] if r.role == role]
                cells.append(sum(e for _, e in rows) / max(len(rows), 1))
            calls = [r for r, _ in by_mode["no cache", "c=1"] if r.role == role]
            sent = sum(len(r.prompt) for r in calls) / max(len(calls), 1)
            print(  # noqa: T201
                f"  {layout}  {role:<10}  calls {len(calls):>3}  sent {sent:>5.0f}  evaluated: "
                f"no cache {cells[0]:>5.0f}, llama-cpp-python cache {cells[1]:>5.0f} "
                f"(c=4 {cells[2]:>5.0f}), ideal {cells[3]:>5.0f}"
            )
    print("against the old layout without cache (same order):")  # noqa: T201
    for (layout, server, order), (sent, done) in totals.items():
        base_sent, base_done = totals["old layout", "no cache", order]
        print(  # noqa: T201
            f"  {layout}, {server:<22} {order}: sent x{sent / base_sent:.2f}, "
            f"evaluated x{done / base_done:.2f}"
        )
    best = totals["new layout", "llama-cpp-python cache", "c=1"][1]
    base = totals["old layout", "no cache", "c=1"][1]
    print(f"replay: layout + cache vs old layout: evaluated x{best / base:.2f}")  # noqa: T201


def main() -> None:
    """Replay the dialogues under both layouts and print what each server evaluates."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--old-rev", default="70e56ab", help="revision with the old layout")
    parser.add_argument("--turns", type=int, default=6, help="generated turns per dialogue")
    parser.add_argument("--n", type=int, default=8, help="dialogues replayed")
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data")
    parser.add_argument(
        "--cache-mib", type=int, help="the RAM cache budget (default: setting server_cache_mib)"
    )
    parser.add_argument(
        "--roles",
        nargs="+",
        choices=GENERATION_ROLES,
        default=list(GENERATION_ROLES),
        help="roles whose requests reach the server (the learned strategist and the novelty "
        "critic make none: --roles simulator assistant)",
    )
    args = parser.parse_args()
    if args.cache_mib is not None and args.cache_mib < 0:
        parser.error("--cache-mib: a size in MiB, 0 or more")
    from runtime.server import ServerError, default_gguf
    from runtime.settings import load_settings

    try:
        tokenizer = Tokenizer(default_gguf())
    except ServerError:
        sys.exit("prefix_layout_replay: the bundled model is not installed; run scripts/setup.sh")
    mib = args.cache_mib if args.cache_mib is not None else load_settings().server_cache_mib
    library = json.loads((ROOT / "stores" / "starter_library.json").read_text())
    job = {
        "dialogues": transcripts(args.data.resolve(), args.turns, args.n, tokenizer),
        "strategies": [{"id": s["id"], "text": s["text"]} for s in library["strategies"]],
        "choice": CHOICE,
        "verdict": VERDICT,
    }
    print(  # noqa: T201
        f"{len(job['dialogues'])} dialogues x {args.turns} turns: "
        + ", ".join(d["id"] for d in job["dialogues"]),
        flush=True,
    )
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        job_file = Path(tmp) / "job.json"
        job_file.write_text(json.dumps(job))
        with worktree(args.old_rev, Path(tmp) / "old") as old:
            dumps = {
                "old layout": record(old, job_file, Path(tmp) / "old.json"),
                "new layout": record(ROOT, job_file, Path(tmp) / "new.json"),
            }
    print(f"roles calling the server: {' '.join(args.roles)}; cache budget {mib} MiB")  # noqa: T201
    for layout, dump in dumps.items():
        requests = [r for r in requests_of(dump, tokenizer) if r.role in args.roles]
        results[layout] = simulate(requests, mib << 20)
    report(results, len(job["dialogues"]) * args.turns, args.roles)


if __name__ == "__main__":
    main()
