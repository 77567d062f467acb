"""`run.py strategies list|show ID|search TEXT|stats|train-ranker`: inspect a strategy library.

`train-ranker` (re)trains the library's learned candidate ranker from its own answer contexts
and saves it in the library's metadata (`induce` does this when it builds a library).
"""

from __future__ import annotations

import argparse
import json
from collections import Counter, defaultdict
from typing import Any

from rich.console import Console
from rich.table import Table
from rich.text import Text

from cli.errors import UsageError
from dialogues.text import scrub
from runtime.settings import load_settings
from stores.base import StrategyRecord, StrategyStore
from wiring.session import Session


def build_parser() -> argparse.ArgumentParser:
    """Return the parser of the strategies command."""
    parser = argparse.ArgumentParser(prog="run.py strategies", description=__doc__)
    parser.add_argument("action", choices=list(ACTIONS))
    parser.add_argument("query", nargs="?", help="strategy id (show) or text (search)")
    parser.add_argument("--library", help="library name (default: default)")
    parser.add_argument("--store", help="directory of the embedded Chroma store")
    parser.add_argument("--chroma-url", help="Chroma server URL")
    parser.add_argument("-k", type=int, default=10, help="results for search (default 10)")
    parser.add_argument("--json", action="store_true", help="print JSON for scripts")
    return parser


def open_library(args: argparse.Namespace) -> StrategyStore:
    """Open the library named by the flags and settings; it must exist."""
    settings = load_settings(library=args.library, store=args.store, chroma_url=args.chroma_url)
    return Session(settings).store


def strategies(argv: list[str], console: Console) -> int:
    """Run the strategies command; return the exit code."""
    args = build_parser().parse_args(argv)
    if args.action in ("show", "search") and not args.query:
        raise UsageError(
            f"strategies {args.action} needs a {'strategy id' if args.action == 'show' else 'text'}"
        )
    store = open_library(args)
    data = ACTIONS[args.action](store, args)
    if args.json:
        console.print_json(json.dumps(data, ensure_ascii=False))
    else:
        RENDER[args.action](console, data)
    return 0


def _children(store: StrategyStore) -> defaultdict[str, list[StrategyRecord]]:
    children: defaultdict[str, list[StrategyRecord]] = defaultdict(list)
    for record in store.records():
        if record.parent_id:
            children[record.parent_id].append(record)
    return children


def list_action(store: StrategyStore, args: argparse.Namespace) -> dict[str, Any]:
    """The high-level strategies by support, each with its direct members."""
    children = _children(store)
    top = sorted(store.records("high"), key=lambda r: (-r.support, r.id))
    return {
        "library": store.library,
        "strategies": [
            {
                "id": r.id,
                "text": r.text,
                "support": r.support,
                "members": [{"id": c.id, "text": c.text, "level": c.level} for c in children[r.id]],
            }
            for r in top
        ],
    }


def show_action(store: StrategyStore, args: argparse.Namespace) -> dict[str, Any]:
    """One strategy with its parent, members and provenance."""
    record = store.get(args.query)
    if record is None:
        raise UsageError(f"no strategy {args.query!r} in library {store.library!r}")
    members = _children(store)[record.id]
    return {
        **record.model_dump(),
        "members": [m.model_dump() for m in members],
    }


def search_action(store: StrategyStore, args: argparse.Namespace) -> dict[str, Any]:
    """The high-level strategies closest to a text."""
    query = scrub(args.query)  # an argument that is not UTF-8 holds lone surrogates
    found = store.search(query, args.k)
    return {"query": query, "results": [c.model_dump() for c in found]}


def stats_action(store: StrategyStore, args: argparse.Namespace) -> dict[str, Any]:
    """Sources, version, counts per level and the support distribution."""
    records = store.records()
    levels = Counter(r.level for r in records)
    supports = sorted((r.support for r in records if r.level == "high"), reverse=True)
    return {
        "library": store.library,
        "metadata": store.metadata(),
        "counts": dict(sorted(levels.items())),
        "support": {
            "max": supports[0] if supports else 0,
            "median": supports[len(supports) // 2] if supports else 0,
            "singletons": sum(1 for s in supports if s == 1),
            "top10_share": round(sum(supports[:10]) / max(sum(supports), 1), 3),
        },
    }


def train_ranker_action(store: StrategyStore, args: argparse.Namespace) -> dict[str, Any]:
    """Train the learned ranker on the library's answer contexts and save it with the library."""
    from stores.ranker import train_for_store

    model = train_for_store(store)
    if model is None:
        raise UsageError(
            f"library {store.library!r} has no answer contexts to train a ranker on; "
            "build it with `run.py induce`"
        )
    store.set_metadata({**store.metadata(), "ranker": model.to_metadata()})
    return {"library": store.library, "ranker": model.to_metadata()}


def _render_list(console: Console, data: dict[str, Any]) -> None:
    table = Table(title=Text(f"library {data['library']}: high-level strategies by support"))
    for column in ("id", "support", "strategy", "members"):
        table.add_column(column)
    for s in data["strategies"]:
        members = "\n".join(f"- {m['text']}" for m in s["members"][:5])
        more = len(s["members"]) - 5
        members += f"\n  (+{more} more)" if more > 0 else ""
        table.add_row(Text(s["id"]), str(s["support"]), Text(s["text"]), Text(members))
    console.print(table)


def _render_show(console: Console, data: dict[str, Any]) -> None:
    console.print(Text(f"{data['id']} [{data['level']}] support {data['support']}", style="bold"))
    console.print(Text(data["text"]))
    if data["parent_id"]:
        console.print(Text(f"parent: {data['parent_id']}", style="dim"))
    for p in data["provenance"][:20]:
        where = ", ".join(f"{k} {v}" for k, v in p.items() if v is not None)
        console.print(Text(f"  from {where}", style="dim"))
    for m in data["members"]:
        console.print(Text(f"  - {m['id']}: {m['text']}"))


def _render_search(console: Console, data: dict[str, Any]) -> None:
    table = Table(title=Text(f"closest to: {data['query']}"))
    for column in ("#", "score", "id", "strategy"):
        table.add_column(column)
    for c in data["results"]:
        table.add_row(str(c["rank"] + 1), f"{c['score']:.2f}", Text(c["id"]), Text(c["text"]))
    console.print(table)


def _render_stats(console: Console, data: dict[str, Any]) -> None:
    console.print(Text(f"library {data['library']}", style="bold"))
    for key, value in data["metadata"].items():
        console.print(Text(f"  {key}: {json.dumps(value, ensure_ascii=False)}"))
    console.print(Text(f"  counts per level: {data['counts']}"))
    console.print(Text(f"  support: {data['support']}"))


def _render_train_ranker(console: Console, data: dict[str, Any]) -> None:
    from stores.ranker import RankerModel

    described = RankerModel.from_metadata(data["ranker"]).describe()
    console.print(Text(f"library {data['library']}: ranker {described}"))


ACTIONS = {
    "list": list_action,
    "show": show_action,
    "search": search_action,
    "stats": stats_action,
    "train-ranker": train_ranker_action,
}
RENDER = {
    "list": _render_list,
    "show": _render_show,
    "search": _render_search,
    "stats": _render_stats,
    "train-ranker": _render_train_ranker,
}
