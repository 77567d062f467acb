"""Grow many dialogues concurrently into a batch store; resumable after any kind of stop.

Each job is one LangGraph thread (thread id = job id) checkpointed in SQLite after every step, so
a job that was in flight when the process died resumes from its last completed step. A finished
dialogue is appended to the store and only then is its checkpoint deleted; a failed job keeps its
checkpoint, so `--retry-failed` resumes it too.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Collection
from dataclasses import dataclass, field
from typing import Any, Protocol

from langgraph.checkpoint.sqlite.aio import AsyncSqliteSaver

from agents.chat import ChatClient
from agents.registry import Wiring, build_agents
from agents.strategist import Retriever
from batch.jobs import Job, SeedSet
from batch.store import BatchStore
from dialogues.messages import to_langchain
from dialogues.record import dialogue_document
from graphs.deduction import build_graph
from graphs.state import Deps, initial_state
from runtime.generation import Growth, Outcome
from runtime.settings import Role, Settings
from stores.base import Candidate, StrategyStore


class BalancedRetriever:
    """Spreads strategy use over a dataset: of the `widen * k` best matches, the k least used.

    Ties keep the retrieval order, so relevance still decides among equally used strategies.
    `uses` is shared by every dialogue of the batch and counts strategies selected so far.
    """

    def __init__(self, inner: Retriever, uses: Counter[str], widen: int = 3) -> None:
        """Wrap `inner`, reading the shared `uses` counter."""
        self.inner, self.uses, self.widen = inner, uses, widen

    def search(self, text: str, k: int, *, exclude: Collection[str] = ()) -> list[Candidate]:
        """Return up to k candidates, least used first."""
        pool = self.inner.search(text, k * self.widen, exclude=exclude)
        order = sorted(range(len(pool)), key=lambda i: (self.uses[pool[i].id], i))
        return [pool[i].model_copy(update={"rank": r}) for r, i in enumerate(order[:k])]


@dataclass
class JobWiring:
    """The batch's wiring with one job's settings (its own sampling seed) and retriever."""

    settings: Settings
    store: StrategyStore
    retriever: Retriever
    base: Wiring

    def chat(self, role: Role) -> ChatClient:
        """Return the shared chat client for `role`."""
        return self.base.chat(role)


class Progress(Protocol):
    """What the batch reports while it runs (the CLI draws a progress bar from it)."""

    def start(self, total: int, done: int, failed: int) -> None:
        """The batch starts: `total` jobs planned, `done` stored, `failed` skipped earlier."""

    def job_started(self, job: str) -> None:
        """A job starts (or resumes)."""

    def turn_done(self) -> None:
        """A generated turn was accepted and answered."""

    def job_finished(self, job: str, status: str, turns: int) -> None:
        """A job ended: `done` (stored) or `failed`."""


class NoProgress:
    """Reports nothing."""

    def start(self, total: int, done: int, failed: int) -> None:
        """Ignore."""

    def job_started(self, job: str) -> None:
        """Ignore."""

    def turn_done(self) -> None:
        """Ignore."""

    def job_finished(self, job: str, status: str, turns: int) -> None:
        """Ignore."""


@dataclass
class BatchOptions:
    """How the batch runs (not what it generates: that is in the settings)."""

    concurrency: int = 4
    retry_failed: bool = False
    balance: bool = False
    max_failures_in_row: int = 10
    """Stop taking new jobs after this many failures in a row (the model server is down, say)."""


@dataclass
class BatchReport:
    """What happened in one invocation; filled while it runs, so it survives an interrupt."""

    planned: int = 0
    already_done: int = 0
    skipped_failed: int = 0
    done: int = 0
    failed: int = 0
    resumed: int = 0
    turns: int = 0
    failures: Counter[str] = field(default_factory=Counter)
    aborted: str | None = None
    started: float = field(default_factory=time.perf_counter)
    first_done_after: float | None = None
    """Seconds from the start of this invocation to its first stored dialogue."""

    @property
    def seconds(self) -> float:
        """Seconds since this invocation started."""
        return time.perf_counter() - self.started


@dataclass
class Batch:
    """Everything one batch invocation needs."""

    store: BatchStore
    seeds: SeedSet
    jobs: list[Job]
    wiring: Wiring
    library: dict[str, Any]
    options: BatchOptions = field(default_factory=BatchOptions)
    progress: Progress = field(default_factory=NoProgress)
    report: BatchReport = field(default_factory=BatchReport)
    uses: Counter[str] = field(default_factory=Counter)

    def pending(self) -> list[Job]:
        """Return the planned jobs still to run (failed ones only with `retry_failed`)."""
        statuses = {job.id: self.store.status(job.id) for job in self.jobs}
        report = self.report
        report.planned = len(self.jobs)
        report.already_done = sum(s == "done" for s in statuses.values())
        report.skipped_failed = (
            0 if self.options.retry_failed else sum(s == "failed" for s in statuses.values())
        )
        skip = {"done"} if self.options.retry_failed else {"done", "failed"}
        return [job for job in self.jobs if statuses[job.id] not in skip]

    async def run(self) -> BatchReport:
        """Run every pending job, `options.concurrency` at a time."""
        pending = self.pending()
        self.uses.update(self.store.strategy_uses())
        self.progress.start(
            self.report.planned, self.report.already_done, self.report.skipped_failed
        )
        async with AsyncSqliteSaver.from_conn_string(str(self.store.checkpoints_path)) as saver:
            await _forget_finished(saver, self.store.done())
            graph = build_graph(checkpointer=saver)
            queue = iter(pending)
            in_row = 0

            async def worker() -> None:
                nonlocal in_row
                for job in queue:
                    if self.report.aborted:
                        return
                    ok = await self._run_job(graph, saver, job)
                    in_row = 0 if ok else in_row + 1
                    if in_row >= self.options.max_failures_in_row and not self.report.aborted:
                        reason = self.report.failures.most_common(1)[0][0]
                        self.report.aborted = f"{in_row} failures in a row, last: {reason}"

            workers = max(1, min(self.options.concurrency, len(pending)))
            await asyncio.gather(*(worker() for _ in range(workers)))
        return self.report

    def _deps(self, job: Job) -> Deps:
        settings = self.wiring.settings
        job_settings = settings.model_copy(update={"seed": settings.seed + job.number})
        retriever = self.wiring.retriever
        if self.options.balance:
            retriever = BalancedRetriever(retriever, self.uses)
        wiring = JobWiring(job_settings, self.wiring.store, retriever, self.wiring)
        return Deps(build_agents(wiring), max_rejections=settings.max_rejections)

    def _on_event(self, event: dict[str, Any]) -> None:
        if event.get("event") == "selection" and event.get("strategy"):
            self.uses[event["strategy"]["id"]] += 1
        elif event.get("event") == "answer" and event.get("turn", 0) >= 1:
            self.progress.turn_done()

    async def _run_job(self, graph: Any, saver: AsyncSqliteSaver, job: Job) -> bool:
        """Run (or resume) one job and store its outcome; return whether it succeeded."""
        self.progress.job_started(job.id)
        config = {"configurable": {"thread_id": job.id}}
        try:
            growth = Growth(graph, self._deps(job), self._on_event)
            snapshot = await graph.aget_state(config)
            resumed = bool(snapshot.values)
            if resumed and snapshot.next:
                growth.state = dict(snapshot.values)
                outcome = await growth.run(None, config)
            elif resumed:  # finished before the process died, but never stored
                outcome = _finished(snapshot.values)
            else:
                seed = self.seeds.seeds[job.seed_index]
                messages = to_langchain(seed.to_openai_messages())
                state = initial_state(messages, self.wiring.settings.turns)
                outcome = await growth.run(state, config)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - one bad dialogue never stops the batch
            outcome = Outcome({}, "failed", f"{type(exc).__name__}: {exc}", 0.0)
            resumed = False
        if outcome.status == "failed":
            reason = outcome.reason or "unknown failure"
            self.store.add_failure(job.id, reason)
            self.report.failed += 1
            self.report.failures[reason] += 1
            self.progress.job_finished(job.id, "failed", 0)
            return False
        document = self._document(job, outcome, resumed)
        self.store.add_dialogue(document)
        await saver.adelete_thread(job.id)
        report = self.report
        report.done += 1
        report.resumed += resumed
        report.turns += len(document["turns"])
        if report.first_done_after is None:
            report.first_done_after = report.seconds
        self.progress.job_finished(job.id, "done", len(document["turns"]))
        return True

    def _document(self, job: Job, outcome: Outcome, resumed: bool) -> dict[str, Any]:
        seed = self.seeds.seeds[job.seed_index]
        document = dialogue_document(
            outcome.state,
            status=outcome.status,
            reason=outcome.reason,
            wall_seconds=outcome.wall_seconds,
            settings=self.wiring.settings.public_dump(),
            seed_source=seed.source,
            library=self.library,
        )
        document["batch"] = {
            "job": job.id,
            "seed_index": job.seed_index,
            "repeat": job.repeat,
            "resumed": resumed,
            "sampling_seed": self.wiring.settings.seed + job.number,
        }
        return document


def _finished(state: dict[str, Any]) -> Outcome:
    status = state.get("status")
    if status in ("complete", "ended_early"):
        return Outcome(dict(state), status, state.get("reason"), 0.0)
    return Outcome(dict(state), "failed", "the graph stopped early", 0.0)


async def _forget_finished(saver: AsyncSqliteSaver, done: set[str]) -> None:
    """Delete checkpoints of stored dialogues (left when a process died right after storing)."""
    await saver.setup()
    async with saver.conn.execute("SELECT DISTINCT thread_id FROM checkpoints") as cursor:
        threads = [row[0] async for row in cursor]
    for thread in threads:
        if thread in done:
            await saver.adelete_thread(thread)
