"""Serve the deduction graph with LangGraph's Agent Server (`langgraph.json`, `langgraph dev`).

The server's runs carry only JSON, so the graph factory builds the agents from settings: the
`IDEAS_*` environment (and `IDEAS_CONFIG`), under the run's `configurable["settings"]` (the
same nested keys as the TOML config: `{"model": {"base_url": ...}, "agents": {"simulator":
"human"}}`). Runs with equal settings share one session (strategy store, embedded model server,
chat clients), opened by the first run that needs it and closed when the server shuts down (the
Starlette `app` that `langgraph.json` mounts exists for that lifespan). Calls that only read
state or draw the graph get the same topology with nothing opened. The server brings its own
checkpointer; there is none here.

Needs the optional `serve` extra (`pip install -e ".[serve]"`).
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any

from langchain_core.runnables import RunnableConfig
from langgraph.graph.state import CompiledStateGraph
from starlette.applications import Starlette

from agents.registry import build_agents
from graphs.deduction import build_served_graph
from graphs.state import Deps
from runtime.settings import SettingsError, load_settings
from wiring.session import Session

if TYPE_CHECKING:
    from langgraph_sdk.runtime import ServerRuntime

logger = logging.getLogger(__name__)


class Sessions:
    """One open session per distinct settings, shared by the runs that use them."""

    def __init__(self) -> None:
        """Start with none open."""
        self._open: dict[str, tuple[Session, Deps]] = {}
        self._lock = threading.Lock()

    def deps(self, overrides: dict[str, Any]) -> Deps:
        """Return the agents for `overrides` on top of the environment's settings.

        Blocks (opening the store, starting the embedded server): call it in a worker thread.

        Raises:
            SettingsError: The settings are invalid.
        """
        key = json.dumps(overrides, sort_keys=True, default=str)
        with self._lock:
            if key not in self._open:
                settings = load_settings(**overrides)
                session = Session(settings)
                try:
                    agents = build_agents(session)
                except BaseException:
                    session.close()
                    raise
                self._open[key] = (session, Deps(agents, max_rejections=settings.max_rejections))
            return self._open[key][1]

    def close(self) -> None:
        """Close every session (stopping the embedded servers they started)."""
        with self._lock:
            sessions, self._open = list(self._open.values()), {}
        for session, _ in sessions:
            session.close()
        logger.info("ideas: closed %d session(s) at shutdown", len(sessions))


SESSIONS = Sessions()


@asynccontextmanager
async def make_graph(config: RunnableConfig, runtime: ServerRuntime) -> AsyncIterator[Any]:
    """Yield the graph for one server call: with its agents for a run, bare for anything else.

    The server calls this for every run and every state read; `runtime.execution_runtime` is
    set only for runs.
    """
    graph: CompiledStateGraph
    if runtime.execution_runtime is None:
        graph = build_served_graph(None)
    else:
        # .get: LangGraph's RunnableConfig from the client, every key optional (total=False)
        overrides = (config.get("configurable") or {}).get("settings") or {}
        if not isinstance(overrides, dict):
            raise SettingsError("configurable.settings must be an object of settings")
        graph = build_served_graph(await asyncio.to_thread(SESSIONS.deps, overrides))
    yield graph


@asynccontextmanager
async def lifespan(app: Starlette) -> AsyncIterator[None]:
    """Close the shared sessions when the server shuts down."""
    try:
        yield
    finally:
        await asyncio.to_thread(SESSIONS.close)


app = Starlette(lifespan=lifespan)
"""Mounted by `langgraph.json` (`http.app`) for its lifespan only: no routes of its own."""
