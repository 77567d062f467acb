"""`run.py batch --executor ray`: grow a batch's dialogues on Ray workers (local or a cluster).

The driver (the `run.py batch` process) plans the jobs, splits the pending ones into shards and
submits each shard as one Ray task. A task opens its own session (the Chroma server by URL, the
model servers by URL), grows its shard's dialogues `--concurrency` at a time, and returns their
outcomes. The driver is the only writer of the run directory: it stores each outcome as its
shard comes back, so the crash-safe store and the resume rules are the same as with the local
executor.

Differences from the local executor:
- A killed driver loses only the shards in flight: finished dialogues are stored, but workers
  keep no per-step checkpoints, so those jobs start over when the same command is run again.
- The per-endpoint request limit (`IDEAS_ENDPOINT_CONCURRENCY`) applies per task, not per batch.
- A shard whose task dies (worker crash, node lost) counts as failed for each of its jobs;
  `--retry-failed` runs them again.
- Each shard is balanced (`--balance`) against the strategy uses known when it was submitted.

Workers import this project. A local Ray starts them from the same Python environment, so an
installed checkout is enough. A cluster given by `--ray-address` must have
`ideas-dialogues[ray]` installed in its image (or be reached with a `runtime_env` that installs
it), and must reach the Chroma server and the model servers at the URLs given to the driver.
"""

from __future__ import annotations

import asyncio
import importlib.util
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from batch.jobs import Job
from batch.runner import Batch, BatchReport, Grower, JobResult
from dialogues.errors import InputError
from dialogues.models import GENERATION_ROLES
from dialogues.seeds import Seed
from runtime.pool import run_pool
from runtime.settings import Settings


class RaySettingsError(InputError, ValueError):
    """Ray is missing or the settings cannot run on Ray workers; the message is one line."""


def check_ray_settings(settings: Settings) -> None:
    """Refuse settings that Ray workers cannot use, before anything starts.

    Raises:
        RaySettingsError: Ray is not installed, there is no Chroma server URL, or a generation role
            would use the embedded model server.
    """
    if importlib.util.find_spec("ray") is None:
        raise RaySettingsError(
            "--executor ray needs the ray extra: pip install 'ideas-dialogues[ray]'"
        )
    if not settings.chroma_url:
        raise RaySettingsError(
            "--executor ray needs a Chroma server (--chroma-url); "
            "start one with `chroma run --path DIR --port 8000`"
        )
    if any(settings.model_for(role).base_url is None for role in GENERATION_ROLES):
        raise RaySettingsError(
            "--executor ray needs a model server by URL (--base-url); "
            "the embedded server is not shared with Ray workers"
        )


@dataclass
class ShardResult:
    """What one shard's task returns: its jobs' outcomes and the strategy uses it added."""

    results: list[JobResult]
    uses: Counter[str] = field(default_factory=Counter)


def grow_shard(
    settings: Settings,
    seeds: Mapping[int, Seed],
    jobs: list[Job],
    library: dict[str, Any],
    balance: bool,
    uses: Mapping[str, int],
    concurrency: int,
) -> ShardResult:
    """Grow one shard's dialogues in this process (the body of a Ray task).

    Args:
        settings: The batch's settings (Chroma and every generation role by URL).
        seeds: Seed number -> seed, for the shard's jobs.
        jobs: The shard's jobs.
        library: The library description stored with each dialogue.
        balance: Spread strategy use (see `BalancedRetriever`).
        uses: Strategy uses known to the driver when the shard was submitted.
        concurrency: Dialogues grown at once.

    Returns:
        One outcome per job, in the order they finished, and the uses added by this shard.
    """
    from graphs.deduction import build_graph
    from wiring.session import Session

    with Session(settings) as session:
        session.store  # noqa: B018 - an unreachable Chroma server fails the shard at once
        grower = Grower(seeds, session, library, balance=balance, uses=Counter(uses))
        graph = build_graph()  # no checkpoints on workers: the driver stores finished dialogues
        results = asyncio.run(_grow_all(grower, graph, jobs, concurrency))
    return ShardResult(results, grower.uses - Counter(uses))


async def _grow_all(
    grower: Grower, graph: Any, jobs: list[Job], concurrency: int
) -> list[JobResult]:
    """Grow `jobs`, `concurrency` at a time (the same pool as `Batch.run`)."""
    results: list[JobResult] = []

    async def handle(job: Job) -> None:
        results.append(await grower.grow(graph, job))

    await run_pool(jobs, concurrency, handle)
    return results


def run_on_ray(
    batch: Batch,
    settings: Settings,
    address: str | None = None,
    shard_size: int = 8,
    num_cpus: int | None = None,
) -> BatchReport:
    """Run every pending job of `batch` on Ray, storing outcomes as their shards come back.

    Uses the Ray already initialised in this process if there is one; otherwise starts a local
    Ray (or connects to `address`) and shuts it down on return.

    Args:
        batch: The batch; its store is written only from this process.
        settings: The batch's settings (checked by `check_ray_settings`).
        address: Ray cluster address; None starts a local Ray.
        shard_size: Jobs per Ray task.
        num_cpus: CPUs of a local Ray (default: all of this machine's).

    Returns:
        The batch's report (also filled while it runs, so it survives an interrupt).
    """
    import ray

    started = not ray.is_initialized()
    if started:
        ray.init(
            address=address,
            num_cpus=num_cpus if address is None else None,
            include_dashboard=False,
            ignore_reinit_error=True,
            log_to_driver=False,
        )
    task = ray.remote(max_retries=0)(grow_shard)
    inflight: dict[Any, list[Job]] = {}
    try:
        pending = batch.begin()
        size = max(1, shard_size)
        shards = iter([pending[i : i + size] for i in range(0, len(pending), size)])
        limit = max(2, int(ray.cluster_resources().get("CPU", 0)))  # .get: Ray's resource dict

        def submit() -> None:
            while len(inflight) < limit and not batch.report.aborted:
                shard = next(shards, None)
                if shard is None:
                    return
                seeds = {job.seed_index: batch.seeds.seeds[job.seed_index] for job in shard}
                ref = task.remote(
                    settings,
                    seeds,
                    shard,
                    batch.library,
                    batch.options.balance,
                    dict(batch.uses),
                    batch.options.concurrency,
                )
                inflight[ref] = shard
                for job in shard:
                    batch.progress.job_started(job.id)

        submit()
        while inflight and not batch.report.aborted:
            [ref], _ = ray.wait(list(inflight), num_returns=1)
            shard = inflight.pop(ref)
            try:
                outcome: ShardResult = ray.get(ref)
            except ray.exceptions.RayError as exc:
                reason = f"Ray task failed: {_one_line(exc)}"
                outcome = ShardResult([JobResult(job, None, reason) for job in shard])
            batch.uses.update(outcome.uses)
            for result in outcome.results:
                batch.record(result)
                for _ in result.document.turns if result.document else []:
                    batch.progress.turn_done()
            submit()
    finally:
        for ref in inflight:
            ray.cancel(ref)
        if started:
            ray.shutdown()
    return batch.report


def _one_line(exc: BaseException) -> str:
    """Return why a Ray task failed, in one line (the task's own exception when it raised)."""
    cause = getattr(exc, "cause", None)
    if isinstance(cause, BaseException):
        exc = cause
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return f"{type(exc).__name__}: {lines[0] if lines else 'no message'}"
