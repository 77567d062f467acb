"""Run the deduction graph for one dialogue: stream trace events, keep the latest state."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from types import FrameType
from typing import Any

from langgraph.graph.state import CompiledStateGraph

from agents.chat import ModelError
from dialogues.record import RunStatus
from graphs.state import Deps, State


@dataclass
class Outcome:
    """How a run ended and the last state it reached."""

    state: dict[str, Any]
    status: RunStatus
    reason: str | None
    wall_seconds: float

    @property
    def generated(self) -> bool:
        """Whether anything beyond the seed was generated."""
        return bool(self.state.get("turns") or self.state.get("opening"))


class Growth:
    """Grows one dialogue; `state` always holds the last completed step, even if interrupted."""

    def __init__(
        self,
        graph: CompiledStateGraph,
        deps: Deps,
        on_event: Callable[[dict[str, Any]], None] = lambda event: None,
    ) -> None:
        """Run `graph` with `deps`, passing each trace event to `on_event`."""
        self.graph, self.deps, self.on_event = graph, deps, on_event
        self.state: dict[str, Any] = {}
        self.started = time.perf_counter()

    def elapsed(self) -> float:
        """Seconds since the run started."""
        return time.perf_counter() - self.started

    async def run(self, state: State | None, config: dict[str, Any] | None = None) -> Outcome:
        """Stream the graph to the end; a model failure ends the run as `failed`.

        `state=None` resumes the checkpointed thread named in `config` (set `self.state` to
        the checkpoint's values first, so an interrupted resume still holds them).
        """
        self.started = time.perf_counter()
        if state is not None:
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
        status = self.state.get("status")
        if status not in ("complete", "ended_early", "ended_by_user"):
            return Outcome(self.state, "failed", "the graph stopped early", self.elapsed())
        return Outcome(self.state, status, self.state.get("reason"), self.elapsed())


def run_dialogue(growth: Growth, state: State) -> Outcome:
    """Run `growth` to the end in a fresh event loop; Ctrl-C keeps what was generated.

    So does a termination signal inside `stop_on_termination` (the reason names it).
    """
    try:
        return asyncio.run(growth.run(state))
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
