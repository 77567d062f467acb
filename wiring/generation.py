"""Run the deduction graph for one dialogue: stream trace events, keep the latest state.

A graph with a human role pauses for a person (LangGraph's `interrupt()`); `run_dialogue` then
asks, and resumes the run with the answer.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from types import FrameType
from typing import Any

from langgraph.graph.state import CompiledStateGraph
from langgraph.types import Command

from agents.chat import ModelError
from dialogues.errors import InputError
from dialogues.record import RunStatus
from graphs.events import TraceEvent
from graphs.state import Deps, State

FINISHED = ("complete", "ended_early", "ended_by_user")
"""How a dialogue that reached its end can stand: it has a document to store."""


@dataclass
class Outcome:
    """How a run ended and the last state it reached."""

    state: dict[str, Any]
    status: RunStatus
    reason: str | None
    wall_seconds: float
    question: Any = None
    """What the graph asks a person, when it paused for one (status `interrupted`)."""

    @property
    def generated(self) -> bool:
        """Whether anything beyond the seed was generated."""
        return bool(self.state) and bool(self.state["turns"] or self.state["opening"])

    @classmethod
    def of(cls, state: dict[str, Any], wall_seconds: float) -> Outcome:
        """Return how a run that stopped at `state` ended: as the graph says, else `failed`.

        A state that is empty (nothing ran) or still running ends as `failed`.
        """
        match state:
            case {"status": str(status), "reason": reason} if status in FINISHED:
                return cls(state, status, reason, wall_seconds)
        return cls(state, "failed", "the graph stopped early", wall_seconds)


class Growth:
    """Grows one dialogue; `state` always holds the last completed step, even if interrupted."""

    def __init__(
        self,
        graph: CompiledStateGraph,
        deps: Deps,
        on_event: Callable[[TraceEvent], None] = lambda event: None,
    ) -> None:
        """Run `graph` with `deps`, passing each trace event to `on_event`."""
        self.graph, self.deps, self.on_event = graph, deps, on_event
        self.state: dict[str, Any] = {}
        self.started = time.perf_counter()

    def elapsed(self) -> float:
        """Seconds since the run started."""
        return time.perf_counter() - self.started

    async def run(
        self, state: State | Command | None, config: dict[str, Any] | None = None
    ) -> Outcome:
        """Stream the graph to its end or to a question for a person; a model failure: `failed`.

        `state=None` resumes the checkpointed thread named in `config` (set `self.state` to
        the checkpoint's values first, so an interrupted resume still holds them). A
        `Command(resume=ANSWER)` answers the question the last run paused on (`Outcome.question`;
        needs a checkpointer), and the clock runs on.
        """
        if not isinstance(state, Command):
            self.started = time.perf_counter()
        if isinstance(state, dict):
            self.state = dict(state)
        try:
            async for mode, chunk in self.graph.astream(
                state,
                config,
                context=self.deps,
                stream_mode=["custom", "values"],
                # With a checkpointer, each step is on disk before the next one starts.
                durability="sync" if self.graph.checkpointer else None,
            ):
                if mode == "custom":
                    self.on_event(chunk)
                else:
                    self.state = chunk
        except ModelError as exc:
            return Outcome(self.state, "failed", str(exc), self.elapsed())
        match self.state:  # empty until the first step, else a `graphs.state.State`
            case {"status": "running"} if self.graph.checkpointer and config:
                snapshot = await self.graph.aget_state(config)
                if snapshot.interrupts:
                    self.state = dict(snapshot.values)
                    question = snapshot.interrupts[0].value
                    reason = "waiting for a person"
                    return Outcome(self.state, "interrupted", reason, self.elapsed(), question)
        return Outcome.of(self.state, self.elapsed())


class NoAnswer(InputError):
    """A person was asked for a turn and gave none (end of input); the message says so."""


def run_dialogue(
    growth: Growth,
    state: State,
    config: dict[str, Any] | None = None,
    ask: Callable[[Any], str] | None = None,
) -> Outcome:
    """Run `growth` to the end in a fresh event loop; Ctrl-C keeps what was generated.

    So does a termination signal inside `stop_on_termination` (the reason names it). When the
    graph pauses for a person, `ask` gets the question and returns the answer, outside the event
    loop (it may block on a terminal), and the run resumes in the same loop. When `ask` raises
    `NoAnswer` (or there is no `ask`), the outcome is `interrupted` with the question still
    pending.
    """
    try:
        with asyncio.Runner() as runner:
            outcome = runner.run(growth.run(state, config))
            while outcome.question is not None and ask is not None:
                try:
                    answer = ask(outcome.question)
                except NoAnswer as exc:
                    return replace(outcome, reason=str(exc), wall_seconds=growth.elapsed())
                outcome = runner.run(growth.run(Command(resume=answer), config))
            return outcome
    except KeyboardInterrupt as exc:
        reason = exc.name if isinstance(exc, Terminated) else "Ctrl-C"
        return Outcome(growth.state, "interrupted", reason, growth.elapsed())


class Terminated(KeyboardInterrupt):
    """SIGTERM or SIGHUP arrived: stop as Ctrl-C does, keeping what was generated."""

    def __init__(self, signum: int) -> None:
        """Remember which signal (its exit code is 128 + `signum`)."""
        self.signum = signum
        self.name = signal.Signals(signum).name
        super().__init__(self.name)


TERMINATION_SIGNALS = (signal.SIGTERM, signal.SIGHUP)
"""What `timeout`, `kill`, systemd, `docker stop` and a closed terminal send."""


@contextlib.contextmanager
def stop_on_termination() -> Iterator[None]:
    """Within the block, SIGTERM and SIGHUP raise `Terminated` (as Ctrl-C raises its interrupt).

    Enter it before anything that starts a model server, so the server is stopped by the same
    unwinding; outside the main thread it does nothing (signals reach only the main thread).
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def terminate(signum: int, frame: FrameType | None) -> None:
        raise Terminated(signum)

    saved = {signum: signal.signal(signum, terminate) for signum in TERMINATION_SIGNALS}
    try:
        yield
    finally:
        for signum, handler in saved.items():
            signal.signal(signum, handler)
