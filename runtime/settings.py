"""One settings object: defaults < optional TOML config file < `IDEAS_*` env vars < CLI flags."""

from __future__ import annotations

import tomllib
from collections.abc import Mapping
from contextvars import ContextVar
from pathlib import Path
from typing import Any, Literal, get_args

from platformdirs import user_data_dir
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)
from pydantic_settings import (
    SettingsError as PydanticSettingsError,
)

from dialogues.errors import InputError
from dialogues.lengths import LengthCues
from dialogues.models import GENERATION_ROLES, GenerationRole
from runtime import adapters
from runtime.adapters import Adapter
from runtime.server import PROMPT_CACHE_MIB
from runtime.urls import check_url, redact_url

Role = GenerationRole | Literal["extractor", "abstractor"]
"""A role with its own model settings: the generation roles, and induction's two."""
ROLES: tuple[Role, ...] = (*GENERATION_ROLES, "extractor", "abstractor")
StructuredMethod = Literal["function_calling", "json_schema", "json_mode"]

EMBEDDED_ALIAS = "smollm2-135m-instruct"
EMBEDDED_GUIDANCE = 5.0
"""The trained simulator's guidance weight on the bundled model (`Settings.guidance`): on 40
MT-Bench-101 seeds it doubled strategy adherence (0.150 to 0.303) without restating the
strategy's words more (docs/results/guidance/)."""
GUIDED_SAMPLING: dict[str, float] = {
    "top_k": 40,
    "top_p": 1.0,
    "min_p": 0.02,
    "repeat_penalty": 1.0,
}
"""The truncation of every guided request (`agents.chat.ChatClient.guided`): the plausible set
(top-k, min-p) alone, measured in docs/results/guidance/ (section 3). The client sends it, so a
batch's fingerprint holds it; the embedded endpoint's defaults (`GuideRequest`) are the same."""
_config_file: ContextVar[Path | None] = ContextVar("ideas_config_file", default=None)


class SettingsError(InputError, ValueError):
    """Settings could not be loaded; the message is one line for the user."""


def _model_url(url: str | None) -> str | None:
    """Validate a model server URL (None = the embedded server)."""
    return None if url is None else check_url(url)


def _adapter(value: str | None) -> str | None:
    """Accept `none`, `trained`, a path or a name (checked with the role's server: `Settings`)."""
    if value is not None and not value.strip():
        raise ValueError("an adapter is `trained`, `none`, a folder or a served name, not empty")
    return value


ADAPTER_HELP = (
    "The role's LoRA adapter. On the embedded server: `trained` (the shipped simulator trained "
    "for the simulator agent; the simulator's default on the bundled model, ignored with --gguf), "
    "`none` (the model as it is), or a `run.py train-simulator` folder (it must fit the model). "
    "With a base_url: the name the server serves the adapter under (vLLM --lora-modules, SGLang "
    "--lora-paths), sent as the role's model; `trained` is ignored there."
)


REPLY_BASE_BYTES = 64 << 10
REPLY_BYTES_PER_TOKEN = 64
"""The default reply limit: 64 KiB for the reply's JSON frame, plus 64 bytes a completion token
(a token is 3-5 characters of text; JSON escapes make a character up to 12 bytes)."""

MAX_REPLY_HELP = (
    "Largest reply body accepted from the model server, in bytes after decompression; a larger "
    "reply fails the call. Unset: 64 KiB + 64 bytes per max_tokens token (84 KiB for 320)."
)


class ModelSettings(BaseModel):
    """How one role reaches its chat model (any OpenAI-compatible server)."""

    base_url: str | None = Field(
        default=None, description="OpenAI-compatible URL; unset = the embedded server."
    )
    model: str = Field(default=EMBEDDED_ALIAS, description="Model name sent to the server.")
    api_key: SecretStr = Field(default=SecretStr("not-needed"), description="API key, if any.")
    temperature: float = Field(default=0.7, ge=0.0, le=2.0)
    max_tokens: int = Field(default=256, gt=0, description="Completion token limit.")
    structured_output: StructuredMethod = Field(
        default="function_calling",
        description="with_structured_output method: function_calling for llama-cpp-python, "
        "json_schema for OpenAI and llama-server.",
    )
    timeout: float = Field(default=120.0, gt=0, description="Seconds per request.")
    max_retries: int = Field(default=3, ge=0, description="Retries of transient errors.")
    frequency_penalty: float | None = Field(
        default=None, ge=-2.0, le=2.0, description="Sent only when set (extractor: 0.6)."
    )
    adapter: str | None = Field(default=None, description=ADAPTER_HELP)
    max_reply_bytes: int | None = Field(default=None, gt=0, description=MAX_REPLY_HELP)

    _check_base_url = field_validator("base_url")(_model_url)
    _check_adapter = field_validator("adapter")(_adapter)

    def reply_limit(self) -> int:
        """Return the largest reply body accepted, in bytes after decompression.

        `max_reply_bytes` when set, else `REPLY_BASE_BYTES` plus `REPLY_BYTES_PER_TOKEN` for
        each token of `max_tokens`.
        """
        if self.max_reply_bytes is not None:
            return self.max_reply_bytes
        return REPLY_BASE_BYTES + REPLY_BYTES_PER_TOKEN * self.max_tokens


class RoleOverride(BaseModel):
    """Per-role overrides of the shared model settings; unset fields inherit.

    Unknown fields are refused, so a typo such as `IDEAS_CRITIC__TEMPRATURE` is an error.
    """

    model_config = ConfigDict(extra="forbid")

    base_url: str | None = None
    model: str | None = None
    api_key: SecretStr | None = None
    temperature: float | None = Field(default=None, ge=0.0, le=2.0)
    max_tokens: int | None = Field(default=None, gt=0)
    structured_output: StructuredMethod | None = None
    frequency_penalty: float | None = Field(default=None, ge=-2.0, le=2.0)
    adapter: str | None = None
    max_reply_bytes: int | None = Field(default=None, gt=0)

    _check_base_url = field_validator("base_url")(_model_url)
    _check_adapter = field_validator("adapter")(_adapter)


StrategistName = Literal["llm", "random", "learned", "none"]
SimulatorName = Literal["strategy", "plain", "human"]
CriticName = Literal["llm", "novelty", "none"]
AssistantName = Literal["llm"]
Auto = Literal["auto"]


def _names(annotation: Any) -> tuple[str, ...]:
    """Return the strings a `Literal` (or a union of them) allows, in order."""
    args = get_args(annotation)
    return tuple(n for a in args for n in (_names(a) if get_args(a) else (a,)))


class AgentChoice(BaseModel):
    """Which implementation plays each role (the ablation switches).

    `critic="auto"` means `llm`, except when the critic would run on the bundled SmolLM2-135M:
    that model returns the same verdict for every draft (measured: 0 of 20 good follow-ups
    accepted), so the default falls back to the novelty check and says so.
    `strategist="auto"` means `learned` when the strategist would run on the bundled model (the
    LLM strategist there takes the top candidate 82-92% of the time; the learned ranker's draw
    gave more varied strategies, as closely followed, for a third fewer LLM calls: the ablation
    in docs/simulators.md), else `llm` (a capable model choosing among the learned top-k).

    Each field is typed with its role's implementation names (the keys of the role's registry
    in `agents.registry`, which a test holds equal) and says its default (the `--<role>` flag's
    help).
    """

    model_config = ConfigDict(extra="forbid")

    strategist: StrategistName | Auto = Field(
        default="auto", description="default auto: learned on the bundled model, else llm"
    )
    simulator: SimulatorName = Field(
        default="strategy",
        description="default strategy; human: you type each user turn (or take the drafted one)",
    )
    critic: CriticName | Auto = Field(
        default="auto",
        description="default auto: llm, or novelty on the bundled SmolLM2 (its verdicts are "
        "constant)",
    )
    assistant: AssistantName = Field(default="llm", description="default llm")

    @field_validator(*GENERATION_ROLES, mode="before")
    @classmethod
    def _registered(cls, name: Any, info: Any) -> Any:
        """Refuse a name the role's type does not allow, in one line that lists the choices."""
        names = _names(cls.model_fields[info.field_name].annotation)
        if name not in names:
            raise ValueError(f"unknown {info.field_name} {name!r}; choose from {', '.join(names)}")
        return name


def agent_choices(role: GenerationRole) -> tuple[str, ...]:
    """Return the names `role`'s agent setting accepts (`auto` included where it is one)."""
    return _names(AgentChoice.model_fields[role].annotation)


AGENT_NAMES: dict[GenerationRole, tuple[str, ...]] = {
    role: tuple(n for n in agent_choices(role) if n != "auto") for role in GENERATION_ROLES
}
"""The implementations each role can be played by (without `auto`), read from `AgentChoice`'s
types: settings sit below the roles, so the registries (`agents.registry.REGISTRIES`) are typed
with these names and a test holds their keys equal."""


ROLE_DEFAULTS: dict[Role, dict[str, Any]] = {
    "strategist": {"temperature": 0.0, "max_tokens": 48},
    "simulator": {"temperature": 0.8, "max_tokens": 96, "adapter": "trained"},
    "critic": {"temperature": 0.0, "max_tokens": 128},
    "assistant": {"temperature": 0.7, "max_tokens": 320},
    "extractor": {"temperature": 0.0, "max_tokens": 160, "frequency_penalty": 0.6},
    "abstractor": {"temperature": 0.0, "max_tokens": 64},
}
"""Per-role sampling defaults, applied over the shared model settings (`IDEAS_<ROLE>__*` wins)."""


class Settings(BaseSettings):
    """Everything a run can be configured with."""

    model_config = SettingsConfigDict(
        env_prefix="IDEAS_", env_nested_delimiter="__", extra="forbid", validate_default=True
    )

    model: ModelSettings = Field(default_factory=ModelSettings)
    strategist: RoleOverride = Field(default_factory=RoleOverride)
    simulator: RoleOverride = Field(default_factory=RoleOverride)
    critic: RoleOverride = Field(default_factory=RoleOverride)
    assistant: RoleOverride = Field(default_factory=RoleOverride)
    extractor: RoleOverride = Field(default_factory=RoleOverride)
    abstractor: RoleOverride = Field(default_factory=RoleOverride)
    agents: AgentChoice = Field(default_factory=AgentChoice)

    gguf: Path | None = Field(default=None, description="GGUF model for the embedded server.")
    server_port: int | None = Field(default=None, ge=1, le=65535)
    server_ctx: int = Field(default=4096, gt=0)
    server_threads: int = Field(default=2, gt=0)
    server_cache_mib: int = Field(
        default=PROMPT_CACHE_MIB,
        ge=0,
        description="Embedded server: MiB of model states its prefix cache keeps (0: no cache).",
    )

    store: Path = Field(default_factory=lambda: Path(user_data_dir("ideas")) / "store")
    chroma_url: str | None = Field(default=None, description="Chroma server URL.")
    library: str = Field(
        default="default",
        description="Strategy library: `default` (induced from real dialogues, shipped), "
        "`starter` (team-written) or one built with `run.py induce`.",
    )
    retrieval: Literal["auto", "learned", "context", "text"] = Field(
        default="auto",
        description="learned: the library's learned ranker; context: by the real answers that "
        "preceded each strategy; text: by strategy text; auto: the first of these the library "
        "has.",
    )
    strategy_temperature: float = Field(
        default=0.5,
        ge=0.0,
        le=10.0,
        description="Learned strategist: temperature of its draw from the ranker's distribution "
        "(0 = always the most likely strategy; 1 = the ranker's own probabilities; 0.5, the "
        "default, is the highest on the measured curve whose misfit per draw is at most 0.04: "
        "docs/results/strategist-temperature/).",
    )

    cluster_threshold: float = Field(
        default=0.5, gt=0.0, lt=1.0, description="Induction: cosine threshold of clustering."
    )
    tiers: int = Field(default=2, ge=1, le=5, description="Induction: abstraction tiers.")
    turns: int = Field(default=6, ge=1, le=100, description="Generated user turns.")
    top_k: int = Field(default=8, ge=1, le=50, description="Candidates retrieved per turn.")
    max_rejections: int = Field(default=6, ge=1, description="Rejections in a row that end.")
    min_turns: int = Field(
        default=2, ge=0, le=100, description="No user ending before this many generated turns."
    )
    ending: Literal["learned", "never"] = Field(
        default="learned",
        description="learned: the simulator may end the dialogue before --turns (the rules of "
        "dialogues/ending.py); never: every dialogue runs to --turns.",
    )
    simulator_drafts: int = Field(
        default=1,
        ge=1,
        le=16,
        description="Strategy simulator: drafts written per attempt and reranked by their "
        "log-likelihood ratio under the turn's strategy against the other candidates (1: one "
        "draft, as before; needs a server that scores replies, as the embedded one does: "
        "docs/simulators.md).",
    )
    simulator_guidance: float | None = Field(
        default=None,
        ge=0.0,
        le=10.0,
        description="Strategy simulator: the weight gamma of the strategy when sampling a draft "
        "(classifier-free guidance against the same prompt without it; 1: plain sampling; needs "
        "a server with the guided endpoint, as the embedded one has: docs/simulators.md). "
        f"Unset: {EMBEDDED_GUIDANCE:g} for the trained simulator on the bundled model, else 1.",
    )
    simulator_length_floor: bool = Field(
        default=True,
        description="Trained simulators: each turn draws a length at the real users' shares "
        "(the card's `length_floor`, `python -m training.lengths`) and its drafts do not end "
        "before that length's fewest words, unless they write the end marker or loop (needs "
        "the guided endpoint, as the embedded server has: docs/simulators.md). False: drafts "
        "end where the simulator ends them.",
    )
    novelty_threshold: float = Field(default=0.8, gt=0.0, le=1.0)
    min_depth: int = Field(default=3, ge=1, le=5)
    min_insight: int = Field(default=3, ge=1, le=5)
    history_tokens: int = Field(
        default=2400, gt=0, description="Approximate token budget of history sent to a model."
    )
    seed: int = Field(
        default=0,
        description="Seed for sampling choices (random strategist) and the per-request "
        "sampling seeds sent to model servers.",
    )
    endpoint_concurrency: int | None = Field(
        default=None,
        ge=1,
        description="Requests in flight to one model endpoint at once; unset = 1 for the "
        "embedded server (it answers one at a time), 8 for a server given by URL.",
    )
    max_dialogues: int = Field(
        default=1_000_000,
        ge=1,
        description="The most dialogues one `batch` or `ablate` variant may plan (`--n`): a "
        "guard against a typo that would plan 10^8 jobs in memory.",
    )

    @field_validator("chroma_url")
    @classmethod
    def _check_chroma_url(cls, url: str | None) -> str | None:
        """Accept `http(s)://host:port` or a bare `host:port` (http is assumed)."""
        return None if url is None else check_url(url, default_scheme="http")

    @model_validator(mode="after")
    def _adapters_fit_their_servers(self) -> Settings:
        """Check each role's adapter where it runs: a folder fitting the embedded model, or a name.

        Whether a server at a URL serves the name is asked of the server (`cli.options.preflight`).
        """
        for role in ROLES:
            configured = self._configured(role)
            value = configured.adapter
            if value in (None, *adapters.KEYWORDS):
                continue
            if configured.base_url is None:
                try:
                    path = adapters.adapter_file(value)
                    if self.gguf is not None and self.gguf.is_file():
                        adapters.check_fits(path, self.gguf)
                except ValueError as exc:
                    raise ValueError(f"{role}.adapter: {exc}") from None
            elif Path(value).expanduser().exists():
                raise ValueError(
                    f"the {role}'s adapter {value} is a path, but the {role} runs on a server "
                    "at a URL, which loads adapters itself: register it there under a name "
                    f"(vLLM: --lora-modules NAME={value}) and give that name "
                    "(docs/trained-simulators.md)"
                )
        return self

    def _configured(self, role: Role) -> ModelSettings:
        """The model settings of `role` as configured: shared < role defaults < overrides."""
        override: RoleOverride = getattr(self, role)
        update = ROLE_DEFAULTS[role] | override.model_dump(exclude_none=True)
        return self.model.model_copy(update=update)

    def model_for(self, role: Role) -> ModelSettings:
        """Return the model settings of `role`: shared < the role's defaults < its overrides.

        With an adapter (`adapter_for`), `model` is the adapter's name on the embedded server
        and `adapter` its file; otherwise `adapter` is None.
        """
        configured = self._configured(role)
        served = self.served_adapter(role)
        if served is not None:
            return configured.model_copy(update={"model": served, "adapter": None})
        adapter = self.adapter_for(role)
        if adapter is None:
            return configured.model_copy(update={"adapter": None})
        return configured.model_copy(update={"model": adapter.alias, "adapter": str(adapter.path)})

    def adapter_for(self, role: Role) -> Adapter | None:
        """Return the LoRA adapter `role` runs with on the embedded server, if any.

        The shipped trained simulators (`trained`) fit the bundled model only; a folder serves
        on the bundled model or on `--gguf`'s (the settings checked that it fits).
        """
        configured = self._configured(role)
        if configured.base_url is not None:
            return None
        if configured.adapter == "trained" and self.gguf is not None:
            return None
        agent = self.agents.simulator if role == "simulator" else None
        return adapters.resolve(configured.adapter, agent, configured.model)

    def served_adapter(self, role: Role) -> str | None:
        """Return the name `role`'s server at a URL serves its adapter under, if it has one."""
        configured = self._configured(role)
        if configured.base_url is None or configured.adapter in (None, *adapters.KEYWORDS):
            return None
        return configured.adapter

    def uses_bundled_model(self, role: Role) -> bool:
        """Whether `role` runs on the embedded server with the bundled SmolLM2 model."""
        return self._configured(role).base_url is None and self.gguf is None

    def resolve_agents(self) -> tuple[AgentChoice, str | None]:
        """Return the agent choice with `auto` resolved, and a notice when it was downgraded."""
        agents, notice = self.agents, None
        if agents.strategist == "auto":
            strategist = "learned" if self.uses_bundled_model("strategist") else "llm"
            agents = agents.model_copy(update={"strategist": strategist})
        if agents.critic != "auto":
            return agents, notice
        if self.uses_bundled_model("critic"):
            notice = (
                "critic: novelty check only; the bundled SmolLM2-135M cannot judge depth or "
                "insight (its verdicts are constant). Use --critic llm to run it anyway, or "
                "give the critic a capable model (IDEAS_CRITIC__BASE_URL or --gguf)."
            )
            return agents.model_copy(update={"critic": "novelty"}), notice
        return agents.model_copy(update={"critic": "llm"}), notice

    def fingerprint(self) -> dict[str, Any]:
        """Return what decides the content of a dialogue (not where servers or stores live).

        A resumed batch must match the fingerprint it started with.
        """
        models = {}
        for role in GENERATION_ROLES:
            m = self.model_for(role)
            models[role] = {
                "model": m.model,
                "temperature": m.temperature,
                "max_tokens": m.max_tokens,
                "frequency_penalty": m.frequency_penalty,
                "structured_output": m.structured_output,
            }
        keys = (
            "library retrieval turns top_k max_rejections novelty_threshold min_depth "
            "min_insight history_tokens seed min_turns ending"
        ).split()
        agents = self.resolve_agents()[0]
        if agents.strategist == "learned":
            keys.append("strategy_temperature")
        drafting = {}
        if agents.simulator == "strategy":  # only when they change drafting: older batches resume
            drafting = {
                "simulator_drafts": self.simulator_drafts,
                "simulator_guidance": self.guidance(),
            }
            drafting = {key: value for key, value in drafting.items() if value != 1}
            if "simulator_guidance" in drafting:
                drafting["guided_sampling"] = GUIDED_SAMPLING
        if agents.simulator in ("strategy", "plain") and (floor := self.length_floor()):
            drafting["length_floor"] = dict(floor.shares)
        return {
            "agents": agents.model_dump(),
            "models": models,
            "gguf": self.gguf.name if self.gguf else None,
            **{key: getattr(self, key) for key in keys},
            **drafting,
        }

    def length_floor(self) -> LengthCues | None:
        """The real users' length shares the simulator holds its turns to, if it does.

        Those of the embedded trained simulator's card (`training.lengths`), unless the
        `simulator_length_floor` setting is off; None for any other simulator.

        Raises:
            adapters.CardError: The card's entry is broken.
        """
        adapter = self.adapter_for("simulator")
        if not self.simulator_length_floor or adapter is None:
            return None
        return adapters.length_floor(adapter.path)

    def guidance(self) -> float:
        """The `strategy` simulator's guidance weight: the setting, or its default when unset.

        Unset, it is `EMBEDDED_GUIDANCE` for the trained simulator on the bundled model, where it
        was measured, and 1 (plain sampling) for any other simulator model.
        """
        if self.simulator_guidance is not None:
            return self.simulator_guidance
        trained = self.adapter_for("simulator") is not None
        return EMBEDDED_GUIDANCE if trained and self.uses_bundled_model("simulator") else 1.0

    def patched(self, patch: Mapping[str, Any]) -> Settings:
        """Return a copy with a settings patch applied, validated as the settings load.

        A patch names settings the way a TOML config file does: a section (`agents`,
        `simulator`...) maps to the fields it changes, which update that section and keep its
        others; any other key replaces that setting. The ablation variants
        (`agents.registry.VARIANTS`) are patches.

        Raises:
            SettingsError: A key is not a setting, or a value fails validation.
        """
        copy = self.model_copy(deep=True)
        validator = type(self).__pydantic_validator__
        try:
            for key, value in patch.items():
                current = getattr(copy, key) if key in type(self).model_fields else None
                if isinstance(current, BaseModel) and isinstance(value, Mapping):
                    value = current.model_dump() | dict(value)
                validator.validate_assignment(copy, key, value)
        except ValidationError as exc:
            raise _settings_error(exc) from None
        return copy

    def public_dump(self) -> dict[str, Any]:
        """Return the settings as plain JSON data: `auto` resolved, secrets removed.

        API keys are left out and every URL is redacted (no user info or query string).
        """
        data = self.model_dump(mode="json")
        agents, notice = self.resolve_agents()
        data["agents"] = agents.model_dump() | {"notice": notice}
        data["roles"] = self.fingerprint()["models"]  # what each role ran with, defaults applied
        data["simulator_guidance"] = self.guidance()
        for section in ("model", *ROLES):
            data[section].pop("api_key", None)
            if data[section].get("base_url"):
                data[section]["base_url"] = redact_url(data[section]["base_url"])
        if data.get("chroma_url"):
            data["chroma_url"] = redact_url(data["chroma_url"])
        return data

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        """Rank sources: CLI (init) > env > TOML config file."""
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        config = _config_file.get()
        if config is not None:
            sources.append(TomlConfigSettingsSource(settings_cls, toml_file=config))
        return tuple(sources)


def load_settings(config: Path | None = None, **overrides: Any) -> Settings:
    """Load settings from an optional TOML file, the environment and explicit overrides.

    Args:
        config: TOML file; when None, `IDEAS_CONFIG` is used if set.
        **overrides: values from the command line (None values are ignored).

    Raises:
        SettingsError: the file is missing or invalid, or a value fails validation.
    """
    import os

    if config is None and os.environ.get("IDEAS_CONFIG"):
        config = Path(os.environ["IDEAS_CONFIG"])
    if config is not None:
        _check_config(config)
    token = _config_file.set(config)
    try:
        return Settings(**{k: v for k, v in overrides.items() if v is not None})
    except ValidationError as exc:
        raise _settings_error(exc) from None
    except PydanticSettingsError as exc:
        raise SettingsError(" ".join(str(exc).split())) from None
    finally:
        _config_file.reset(token)


def _settings_error(exc: ValidationError) -> SettingsError:
    """Return the first validation error as one line that names the setting."""
    err = exc.errors()[0]
    where = ".".join(str(p) for p in err["loc"])
    message = err["msg"].removeprefix("Value error, ")
    prefix = f"invalid setting {where}" if where else "invalid settings"
    return SettingsError(f"{prefix}: {message}")


def _check_config(config: Path) -> None:
    if not config.is_file():
        raise SettingsError(f"{config}: config file not found")
    try:
        tomllib.loads(config.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise SettingsError(f"{config}: invalid TOML: {exc}") from None
