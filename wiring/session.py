"""A session wires settings to live resources: the strategy store, model servers, chat clients."""

from __future__ import annotations

from contextlib import ExitStack
from dataclasses import dataclass
from typing import Any

from langchain_core.language_models import BaseChatModel

from agents.chat import ChatClient, EndpointLimit, build_chat_model
from dialogues.errors import InputError
from runtime.settings import Role, Settings
from stores.base import StrategyStore


class Session:
    """Owns what a run needs and releases it on exit (also on Ctrl-C and errors).

    The embedded model server starts lazily, the first time a role without a `base_url`
    asks for a chat client, so a run that points every role at a server starts nothing.
    The chat models' HTTP connections belong to the event loop that first used them: run
    everything of one session in one loop (`asyncio.Runner` for several runs).
    """

    def __init__(
        self,
        settings: Settings,
        store: StrategyStore | None = None,
        chat_models: dict[Role, BaseChatModel] | None = None,
    ) -> None:
        """Use `store` and `chat_models` when given (tests); otherwise open the configured ones."""
        self.settings = settings
        self._store = store
        self._chat_models: dict[Any, BaseChatModel] = dict(chat_models or {})
        self._limits: dict[str, EndpointLimit] = {}
        self._stack = ExitStack()
        self.server: Any = None
        self._retriever: Any = None
        self._learned: Any = None

    def __enter__(self) -> Session:
        """Enter the session."""
        return self

    def __exit__(self, *exc_info: object) -> None:
        """Stop whatever the session started."""
        self.close()

    def close(self) -> None:
        """Stop the embedded server, if it was started."""
        self._stack.close()

    @property
    def store(self) -> StrategyStore:
        """The strategy library named in the settings (opened on first use)."""
        if self._store is None:
            from stores.chroma import open_store
            from stores.starter import ensure_library

            s = self.settings
            self._store = open_store(s.library, path=s.store, chroma_url=s.chroma_url)
            ensure_library(self._store)
        return self._store

    @property
    def retriever(self) -> Any:
        """How candidates are found (`settings.retrieval`; see `choose_retriever`), built once."""
        if self._retriever is None:
            self._retriever = choose_retriever(self.store, self.settings.retrieval)
        return self._retriever

    @property
    def learned_retriever(self) -> Any:
        """The library's learned ranker (for `--strategist learned`), whatever `retrieval` says.

        Raises:
            RetrievalUnavailable: The library has no learned ranker.
        """
        from stores.ranker import LearnedRetriever

        if isinstance(self.retriever, LearnedRetriever):
            return self.retriever
        if self._learned is None:
            try:
                self._learned = choose_retriever(self.store, "learned")
            except RetrievalUnavailable as e:
                raise RetrievalUnavailable(
                    f"{e} (the learned strategist, the default on the bundled model, needs one), "
                    "or choose another strategist (--strategist llm)"
                ) from None
        return self._learned

    def check_strategist(self, settings: Settings | None = None) -> None:
        """Fail now if the strategist the settings resolve to needs a ranker the library lacks.

        Called before a batch or an ablation writes anything, so the advised fix (another
        `--strategist`) is not then refused as a change of settings.

        Raises:
            RetrievalUnavailable: The strategist is `learned` and the library has no ranker.
        """
        agents, _ = (settings or self.settings).resolve_agents()
        if agents.strategist == "learned":
            self.learned_retriever  # noqa: B018 - raises when there is none

    def chat(self, role: Role, settings: Settings | None = None) -> ChatClient:
        """Return a chat client for `role`, starting the embedded server if it needs it.

        Args:
            role: The role that will use the client.
            settings: Settings that differ from the session's (an ablation variant's); the
                client follows their model settings for `role`.
        """
        settings = settings or self.settings
        model_settings = settings.model_for(role)
        key = role if role in self._chat_models else (role, model_settings.model_dump_json())
        if key not in self._chat_models:
            base_url = model_settings.base_url or self.embedded_url(model_settings.model)
            self._chat_models[key] = build_chat_model(model_settings, base_url)
        endpoint = model_settings.base_url or "embedded"
        n = self.settings.endpoint_concurrency or (8 if model_settings.base_url else 1)
        limit = self._limits.setdefault(endpoint, EndpointLimit(n))
        return ChatClient(
            self._chat_models[key],
            structured_method=model_settings.structured_output,
            history_tokens=self.settings.history_tokens,
            limit=limit,
            seed=self.settings.seed,
            timeout=model_settings.timeout,
            timeout_retries=model_settings.max_retries,
        )

    def with_settings(self, settings: Settings) -> SessionView:
        """Return this session's resources seen with other settings (an ablation variant's)."""
        return SessionView(self, settings)

    def embedded_url(self, model: str) -> str:
        """Start the embedded llama.cpp server once and return its base URL.

        It serves the bundled model under its alias and, switched per request by model name,
        every shipped trained simulator and the adapters the settings name (`runtime.adapters`).
        """
        if self.server is None:
            from runtime.adapters import all_shipped
            from runtime.server import EmbeddedServer
            from runtime.settings import EMBEDDED_ALIAS, ROLES

            s = self.settings
            served = all_shipped(EMBEDDED_ALIAS) if s.gguf is None else {}
            for role in ROLES:
                adapter = s.adapter_for(role)
                if adapter is not None:
                    served[adapter.alias] = adapter.path
            server = EmbeddedServer(
                gguf=s.gguf,
                alias=EMBEDDED_ALIAS if model in served else model,
                port=s.server_port,
                n_ctx=s.server_ctx,
                n_threads=s.server_threads,
                adapters=served,
                prompt_cache_bytes=s.server_cache_mib << 20,
            )
            self.server = self._stack.enter_context(server)
        return self.server.base_url


@dataclass(frozen=True)
class SessionView:
    """A session's store, retrievers and servers, with chat clients following other settings."""

    session: Session
    settings: Settings

    @property
    def store(self) -> StrategyStore:
        """The session's strategy library."""
        return self.session.store

    @property
    def retriever(self) -> Any:
        """The session's retriever."""
        return self.session.retriever

    @property
    def learned_retriever(self) -> Any:
        """The session's learned ranker."""
        return self.session.learned_retriever

    def chat(self, role: Role) -> ChatClient:
        """Return a chat client for `role` with this view's model settings."""
        return self.session.chat(role, self.settings)


class RetrievalUnavailable(InputError, ValueError):
    """The retrieval mode asked for needs something the library does not have; one line."""


def choose_retriever(store: StrategyStore, mode: str) -> Any:
    """Return the retriever for `mode`: `learned`, `context`, `text`, or `auto` (the best there is).

    `auto` takes the library's learned ranker when it has one, else its answer contexts, else the
    strategy texts.

    Raises:
        RetrievalUnavailable: `learned` or `context` was asked for and the library lacks it.
    """
    if mode == "text":
        return store
    if mode in ("auto", "learned"):
        from stores.ranker import LearnedRetriever, RankerModel

        data = store.metadata().get("ranker")  # .get: Chroma metadata; no ranker: None
        retriever = None
        if data:
            try:
                retriever = LearnedRetriever.from_store(store, RankerModel.from_metadata(data))
            except ValueError:
                retriever = None
        if retriever is not None:
            return retriever
        if mode == "learned":
            raise RetrievalUnavailable(
                f"library {store.library!r} has no learned ranker; rebuild it with "
                "`run.py induce` or `run.py strategies train-ranker`"
            )
    contexts = getattr(store, "contexts", None)
    index = contexts() if contexts is not None else None
    if index is None or index.count() == 0:
        if mode == "context":
            raise RetrievalUnavailable(f"library {store.library!r} has no answer contexts")
        return store
    from stores.contexts import ContextRetriever

    return ContextRetriever(store, index, store.embedding)
