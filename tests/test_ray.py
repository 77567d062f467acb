"""`run.py batch --executor ray` on a local Ray, a real Chroma server and the fake model server."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

ray = pytest.importorskip("ray")

from batch.jobs import load_seed_set, plan_jobs  # noqa: E402
from batch.ray_executor import run_on_ray  # noqa: E402
from batch.runner import Batch, BatchOptions  # noqa: E402
from batch.store import BatchStore, iter_dialogues, read_index  # noqa: E402
from cli.main import main  # noqa: E402
from runtime.settings import Settings  # noqa: E402
from tests.fake_openai import FakeOpenAI  # noqa: E402
from wiring.session import Session  # noqa: E402

CHROMA = Path(sys.executable).with_name("chroma")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def chroma_url(tmp_path_factory):
    port = free_port()
    path = tmp_path_factory.mktemp("chroma")
    server = subprocess.Popen(
        [str(CHROMA), "run", "--path", str(path), "--port", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env={**os.environ, "ANONYMIZED_TELEMETRY": "False"},
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                with urllib.request.urlopen(f"{url}/api/v2/heartbeat", timeout=1):
                    break
            except OSError:
                if server.poll() is not None or time.monotonic() > deadline:
                    pytest.fail("the Chroma server did not start")
                time.sleep(0.2)
        yield url
    finally:
        server.kill()
        server.wait()


@pytest.fixture(scope="module")
def local_ray():
    """One local Ray of 2 CPUs for the module; `run_on_ray` uses it and leaves it running."""
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


def seed_file(tmp_path: Path, count: int = 4) -> Path:
    path = tmp_path / "seeds.txt"
    topics = ["hash tables", "vaccines", "photosynthesis", "tides", "inflation", "compilers"]
    path.write_text("\n".join(f"How do {t} work?" for t in topics[:count]) + "\n")
    return path


def make_batch(tmp_path: Path, settings: Settings, n: int, **options) -> Batch:
    seeds = load_seed_set(seed_file(tmp_path, 3))
    return Batch(
        store=BatchStore.open(tmp_path / "run"),
        seeds=seeds,
        jobs=plan_jobs(len(seeds.seeds), n),
        wiring=Session(settings),
        library={"name": "starter"},
        options=BatchOptions(**options),
    )


def test_run_on_ray_starts_and_stops_a_local_ray_when_none_is_running(tmp_path):
    """First in the module, before the shared Ray starts: the CLI's default path."""
    running = ray.is_initialized()
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    dead = f"http://127.0.0.1:{free_port()}"
    settings = Settings(model={"base_url": "http://127.0.0.1:9/v1"}, chroma_url=dead, turns=2)
    batch = make_batch(tmp_path, settings, 2)
    report = run_on_ray(batch, settings, shard_size=1, num_cpus=2)
    assert (report.done, report.failed) == (0, 2)
    [(reason, count)] = report.failures.most_common()
    assert count == 2
    assert reason.startswith("Ray task failed: StoreUnavailable: Chroma server http://127.0.0.1:")
    assert "did not answer" in reason
    assert ray.is_initialized() == running


def test_ray_batch_stores_each_planned_dialogue_once_and_resumes(
    tmp_path, capsys, chroma_url, local_ray
):
    out = tmp_path / "run"
    with FakeOpenAI() as fake:
        argv = [
            "batch",
            "--seeds", str(seed_file(tmp_path)),
            "--out", str(out),
            "--n", "6",
            "--turns", "2",
            "--executor", "ray",
            "--base-url", fake.base_url,
            "--chroma-url", chroma_url,
            "--library", "starter",
            "--quiet",
            "--concurrency", "2",
        ]  # fmt: skip
        assert main(argv) == 0
        first = capsys.readouterr().out
        asked = len(fake.requests)
        assert asked > 0
        assert main(argv) == 0
        second = capsys.readouterr().out
        assert len(fake.requests) == asked
    jobs = [d.job for d in iter_dialogues(out)]
    assert sorted(jobs) == ["000000.0", "000000.1", "000001.0", "000001.1", "000002.0", "000003.0"]
    assert all(not d.batch.resumed for d in iter_dialogues(out))
    assert re.search(r"stored now\s+6 ", first)
    assert re.search(r"stored before\s+6\s", second)
    assert re.search(r"stored now\s+0 ", second)


def test_shards_are_balanced_against_the_uses_of_earlier_shards(tmp_path, chroma_url, local_ray):
    with FakeOpenAI() as fake:
        settings = Settings(
            model={"base_url": fake.base_url, "max_retries": 0},
            chroma_url=chroma_url,
            library="starter",
            turns=2,
        )
        batch = make_batch(tmp_path, settings, 5, concurrency=2, balance=True)
        report = run_on_ray(batch, settings, shard_size=2)
    assert (report.done, report.failed) == (5, 0)
    assert sorted(d.job for d in iter_dialogues(tmp_path / "run")) == [
        "000000.0", "000000.1", "000001.0", "000001.1", "000002.0",
    ]  # fmt: skip
    assert sum(batch.uses.values()) >= sum(batch.store.strategy_uses().values()) > 0


def test_a_task_that_raises_fails_its_jobs_and_failures_in_a_row_stop_the_batch(
    tmp_path, local_ray
):
    dead = f"http://127.0.0.1:{free_port()}"
    settings = Settings(model={"base_url": "http://127.0.0.1:9/v1"}, chroma_url=dead, turns=2)
    batch = make_batch(tmp_path, settings, 6, max_failures_in_row=2)
    report = run_on_ray(batch, settings, shard_size=1)
    assert report.aborted
    assert 2 <= report.failed < 6
    assert report.done == 0
    [(reason, _)] = report.failures.most_common(1)
    assert reason.startswith("Ray task failed: ")
    assert "\n" not in reason
    index = read_index(tmp_path / "run")
    assert len(index) == report.failed
    assert {e.status for e in index.values()} == {"failed"}


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--base-url", "http://127.0.0.1:9/v1"], "needs a Chroma server (--chroma-url)"),
        (["--chroma-url", "http://127.0.0.1:9"], "needs a model server by URL (--base-url)"),
    ],
)
def test_settings_ray_cannot_use_are_one_line_errors(tmp_path, capsys, flags, message):
    argv = ["batch", "--seeds", str(seed_file(tmp_path)), "--out", str(tmp_path / "run")]
    code = main([*argv, "--executor", "ray", *flags])
    err = capsys.readouterr().err
    assert code == 2
    assert err.count("\n") == 1
    assert err.startswith("error: --executor ray ") and message in err
    assert not (tmp_path / "run").exists()
