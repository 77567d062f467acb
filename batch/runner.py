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
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from langgraph.checkpoint.sqlite.aio import AsyncSqliteSaver

from agents.chat import ChatClient
from agents.registry import Wiring, build_agents
from agents.strategist import RankingRetriever, Retriever
from batch.jobs import Job, SeedSet
from batch.store import BatchStore, StoreFull, is_disk_full
from dialogues.messages import to_langchain
from dialogues.models import BatchInfo, DialogueDocument, StrategyRef
from dialogues.record import dialogue_document
from dialogues.seeds import Seed
from graphs.deduction import build_graph
from graphs.events import AnswerEvent, SelectionEvent, TraceEvent
from graphs.state import Deps, initial_state
from runtime.pool import run_pool
from runtime.settings import Role, Settings
from stores.base import Candidate, StrategyStore
from wiring.generation import Growth, Outcome


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
        """Return the shared chat client for `role`, sending seeds derived from the job's."""
        return self.base.chat(role).seeded(self.settings.seed)

    @property
    def learned_retriever(self) -> RankingRetriever:
        """The batch's learned ranker (shared; each job draws with its own seed)."""
        return self.base.learned_retriever


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
    failures_in_row: int = 0
    aborted: str | None = None
    started: float = field(default_factory=time.perf_counter)
    first_done_after: float | None = None
    """Seconds from the start of this invocation to its first stored dialogue."""

    @property
    def seconds(self) -> float:
        """Seconds since this invocation started."""
        return time.perf_counter() - self.started


@dataclass
class JobResult:
    """The outcome of one job: its dialogue document, or why it failed."""

    job: Job
    document: DialogueDocument | None
    reason: str | None = None


@dataclass
class Grower:
    """Grows one job's dialogue: the per-dialogue code shared by local and Ray execution."""

    seeds: Mapping[int, Seed]
    """Seed number -> seed (all of them locally, a shard's on a Ray worker)."""
    wiring: Wiring
    library: dict[str, Any]
    balance: bool = False
    uses: Counter[str] = field(default_factory=Counter)
    """Strategy selections so far (shared by every dialogue this process grows)."""
    on_turn: Callable[[], None] = lambda: None

    def deps(self, job: Job) -> Deps:
        """Return the agents for `job`: its own sampling seed, the balanced retriever if asked."""
        settings = self.wiring.settings
        job_settings = settings.model_copy(update={"seed": settings.seed + job.number})
        retriever = self.wiring.retriever
        if self.balance:
            retriever = BalancedRetriever(retriever, self.uses)
        wiring = JobWiring(job_settings, self.wiring.store, retriever, self.wiring)
        return Deps(
            build_agents(wiring),
            max_rejections=settings.max_rejections,
            min_turns=settings.min_turns,
            ending=settings.ending,
        )

    def on_event(self, event: TraceEvent) -> None:
        """Count strategy selections and accepted turns from the graph's trace events."""
        match event:
            case SelectionEvent(strategy=StrategyRef(id=strategy)):
                self.uses[strategy] += 1
            case AnswerEvent(turn=turn) if turn >= 1:
                self.on_turn()

    async def grow(self, graph: Any, job: Job) -> JobResult:
        """Run `job` to its end, resuming its checkpoint when the graph has a checkpointer."""
        config = {"configurable": {"thread_id": job.id}}
        try:
            growth = Growth(graph, self.deps(job), self.on_event)
            snapshot = await _resumable(graph, job.id)
            resumed = snapshot is not None
            if resumed and snapshot.next:
                growth.state = dict(snapshot.values)
                outcome = await growth.run(None, config)
            elif resumed:  # finished before the process died, but never stored
                outcome = _finished(snapshot.values)
            else:
                messages = to_langchain(self.seeds[job.seed_index].to_openai_messages())
                state = initial_state(messages, self.wiring.settings.turns)
                outcome = await growth.run(state, config)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - one bad dialogue never stops the batch
            if is_disk_full(exc):  # ...but a full disk stops every one of them
                raise
            return JobResult(job, None, f"{type(exc).__name__}: {exc}")
        if outcome.status == "failed":
            return JobResult(job, None, outcome.reason or "unknown failure")
        return JobResult(job, self.document(job, outcome, resumed))

    def document(self, job: Job, outcome: Outcome, resumed: bool) -> DialogueDocument:
        """Return the stored document: the dialogue's, plus where it sits in the batch."""
        settings = self.wiring.settings
        document = dialogue_document(
            outcome.state,
            status=outcome.status,
            reason=outcome.reason,
            wall_seconds=outcome.wall_seconds,
            settings=settings.public_dump(),
            seed_source=self.seeds[job.seed_index].source,
            library=self.library,
        )
        document.batch = BatchInfo(
            job=job.id,
            seed_index=job.seed_index,
            repeat=job.repeat,
            resumed=resumed,
            sampling_seed=settings.seed + job.number,
        )
        return document


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

    def __post_init__(self) -> None:
        """Prepare the grower for this process."""
        self.grower = Grower(
            dict(enumerate(self.seeds.seeds)),
            self.wiring,
            self.library,
            balance=self.options.balance,
            on_turn=lambda: self.progress.turn_done(),
        )

    @property
    def uses(self) -> Counter[str]:
        """Strategy selections so far, stored dialogues included."""
        return self.grower.uses

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

    def begin(self) -> list[Job]:
        """Return the pending jobs and report the start."""
        pending = self.pending()
        self.uses.update(self.store.strategy_uses())
        report = self.report
        self.progress.start(report.planned, report.already_done, report.skipped_failed)
        return pending

    async def run(self) -> BatchReport:
        """Run every pending job in this process, `options.concurrency` at a time.

        Raises:
            StoreFull: The run directory's disk filled up (what was stored is intact).
        """
        try:
            return await self._run()
        except Exception as exc:
            if is_disk_full(exc):
                raise StoreFull(self.store.run_dir) from None
            raise

    async def _run(self) -> BatchReport:
        pending = self.begin()
        async with AsyncSqliteSaver.from_conn_string(str(self.store.checkpoints_path)) as saver:
            await _forget_finished(saver, self.store.done())
            graph = build_graph(checkpointer=saver)

            async def handle(job: Job) -> None:
                self.progress.job_started(job.id)
                if self.record(await self.grower.grow(graph, job)):
                    await saver.adelete_thread(job.id)

            await run_pool(pending, self.options.concurrency, handle, lambda: self.report.aborted)
        return self.report

    def record(self, result: JobResult) -> bool:
        """Store a job's outcome and count it; return whether it succeeded."""
        report, job = self.report, result.job
        if result.document is None:
            reason = result.reason or "unknown failure"
            self.store.add_failure(job.id, reason)
            report.failed += 1
            report.failures[reason] += 1
            report.failures_in_row += 1
            if report.failures_in_row >= self.options.max_failures_in_row and not report.aborted:
                report.aborted = f"{report.failures_in_row} failures in a row, last: {reason}"
            self.progress.job_finished(job.id, "failed", 0)
            return False
        document = result.document
        self.store.add_dialogue(document)
        turns = len(document.turns)
        report.done += 1
        report.failures_in_row = 0
        report.resumed += bool(document.batch and document.batch.resumed)
        report.turns += turns
        if report.first_done_after is None:
            report.first_done_after = report.seconds
        self.progress.job_finished(job.id, "done", turns)
        return True


async def _resumable(graph: Any, thread: str) -> Any:
    """Return the thread's checkpoint if the job can go on from it; clear an unusable one.

    A process killed before the first step leaves only its input checkpointed, which cannot be
    resumed: that thread is deleted and the job starts over.
    """
    if graph.checkpointer is None:
        return None
    snapshot = await graph.aget_state({"configurable": {"thread_id": thread}})
    if not snapshot.values and not snapshot.next:
        return None
    finished = bool(snapshot.values) and _finished(snapshot.values).status != "failed"
    if snapshot.values and (snapshot.next or finished):
        return snapshot
    await graph.checkpointer.adelete_thread(thread)
    return None


def _finished(state: dict[str, Any]) -> Outcome:
    return Outcome.of(dict(state), 0.0)


async def _forget_finished(saver: AsyncSqliteSaver, done: set[str]) -> None:
    """Delete checkpoints of stored dialogues (left when a process died right after storing)."""
    await saver.setup()
    async with saver.conn.execute("SELECT DISTINCT thread_id FROM checkpoints") as cursor:
        threads = [row[0] async for row in cursor]
    for thread in threads:
        if thread in done:
            await saver.adelete_thread(thread)
