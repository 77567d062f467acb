"""`run.py --seed FILE`: grow one seed dialogue, trace it live, write the result."""

from __future__ import annotations

import argparse
from pathlib import Path

from langgraph.checkpoint.memory import InMemorySaver
from rich.console import Console

from agents.chat import ModelError
from agents.registry import build_agents
from cli.errors import UsageError
from cli.human import TurnPrompt
from cli.options import add_agent_arguments, add_settings_arguments, preflight, settings_from_args
from cli.tracer import Tracer
from dialogues.messages import to_langchain
from dialogues.output import check_writable, write_json_atomic
from dialogues.record import dialogue_document
from dialogues.seeds import load_seed
from dialogues.text import display_path
from graphs.deduction import build_graph
from graphs.state import Deps, initial_state
from wiring.generation import (
    FINISHED,
    TERMINATION_SIGNALS,
    Growth,
    run_dialogue,
    stop_on_termination,
)
from wiring.session import Session

EXIT_CODES = {"complete": 0, "ended_early": 0, "ended_by_user": 0, "interrupted": 130, "failed": 1}


def build_parser() -> argparse.ArgumentParser:
    """Return the parser of the generate command."""
    parser = argparse.ArgumentParser(
        prog="run.py",
        description="Grow a seed dialogue with strategy-guided user turns.",
        epilog="Subcommands: induce, strategies, batch, export, eval, ablate, train-simulator "
        "(`run.py SUBCOMMAND --help`); without one, run.py grows one seed dialogue.",
    )
    parser.add_argument(
        "--seed",
        required=True,
        type=Path,
        help="seed dialogue: OpenAI messages, ShareGPT, or an opening question",
    )
    parser.add_argument(
        "--turns",
        type=int,
        help="most user turns to generate (default 6; the user may end sooner, see --ending)",
    )
    # A str, not a Path: Path("dir/") drops the slash that says "a directory" (refused).
    parser.add_argument("--out", help="write the dialogue JSON here (atomically)")
    verbosity = parser.add_mutually_exclusive_group()
    verbosity.add_argument("--quiet", action="store_true", help="print only the summary")
    verbosity.add_argument("--verbose", action="store_true", help="full texts and reasons")
    add_agent_arguments(parser)
    add_settings_arguments(parser)
    return parser


def generate(argv: list[str], console: Console) -> int:
    """Run the generate command; return the exit code."""
    args = build_parser().parse_args(argv)
    settings = settings_from_args(args)
    seed = load_seed(args.seed)
    if args.out is not None:
        check_writable(args.out)
        args.out = Path(args.out)
    preflight(settings)
    verbosity = "quiet" if args.quiet else "verbose" if args.verbose else "normal"
    tracer = Tracer(console, verbosity)
    agents, notice = settings.resolve_agents()
    if notice:
        tracer.notice(notice)
    tracer.seed(seed.to_openai_messages(), seed.source)
    # A person playing the user answers the graph's interrupts; pausing needs a checkpointer.
    person = TurnPrompt(console, candidates=verbosity == "quiet")
    human = agents.simulator == "human"
    with stop_on_termination(), Session(settings) as session:
        library = {"name": settings.library, **session.store.metadata()}
        deps = Deps(
            build_agents(session),
            max_rejections=settings.max_rejections,
            min_turns=settings.min_turns,
            ending=settings.ending,
        )
        graph = build_graph(InMemorySaver() if human else None)
        growth = Growth(graph, deps, tracer.event)
        state = initial_state(to_langchain(seed.to_openai_messages()), settings.turns)
        config = {"configurable": {"thread_id": "dialogue"}} if human else None
        outcome = run_dialogue(growth, state, config, ask=person if human else None)
    if outcome.status == "failed" and not outcome.generated:
        raise ModelError(outcome.reason or "the run failed before generating anything")
    document = dialogue_document(
        outcome.state,
        status=outcome.status,
        reason=outcome.reason,
        wall_seconds=outcome.wall_seconds,
        settings=settings.public_dump(),
        seed_source=seed.source,
        library=library,
    )
    finished = outcome.status in FINISHED
    written = args.out is not None and (finished or outcome.generated)
    if written:
        write_json_atomic(args.out, document.dump())
    tracer.summary(document, display_path(args.out) if written else None)
    if outcome.question is not None:  # the person gave no turn: what was generated is kept
        raise UsageError(outcome.reason or "no user turn given")
    return exit_code(outcome.status, outcome.reason)


def exit_code(status: str, reason: str | None) -> int:
    """Return the exit code of a run: a termination signal's is 128 + its number, as a shell's."""
    signals = {s.name: s for s in TERMINATION_SIGNALS}
    if status == "interrupted" and reason in signals:
        return 128 + signals[reason]
    return EXIT_CODES[status]
