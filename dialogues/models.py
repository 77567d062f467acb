"""Typed output documents: a dialogue (turn records, usage, batch envelope), a batch's manifest.

Every model keeps the keys it does not know (`extra="allow"`) and `dump()` writes back exactly
the keys that were set, so a document loads and dumps to the same JSON whichever version wrote
it: a key an older writer left out stays out (old usage records have no `cached_tokens`), and a
key a newer one added survives. Code that builds a record passes every field it writes.

The shapes (`ideas-dialogue/1`):

- `DialogueDocument`: `format`, `status`, `reason`, `created_at`, `seed`, `messages` (OpenAI
  form), `opening`, `turns`, `unfinished_turn`, `summary`, `library`, `settings`; in a batch
  run directory also `batch` (`BatchInfo`) and, after the export's filters, `filters`.
- `TurnRecord`: one generated turn's decisions: `index`, `candidates`, `strategy`, `selection`,
  `drafts` (each with the critic's verdict), `critic` (the accepted draft's verdict),
  `instruction`, `answer` and `usage` per agent.

The batch manifest (`ideas-batch/1`, a run directory's `batch.json`) is `BatchManifest`:
`format`, `created_at`, `seeds` (`SeedSource`), `n`, `turns`, `fingerprint`, `settings`
(`SettingsDump`, the run's `Settings.public_dump()`), `agents` (`AgentNames`) and `library`
(`LibraryInfo`). It also dumps its keys back in the order the file had them, so a manifest
rewritten on resume keeps its text.
"""

from __future__ import annotations

from typing import Any, Literal, Self, get_args

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    NonNegativeInt,
    PrivateAttr,
    ValidatorFunctionWrapHandler,
    field_serializer,
    model_validator,
)

FORMAT = "ideas-dialogue/1"
BATCH_FORMAT = "ideas-batch/1"
SCORE_KEYS = ("correct", "coherent", "depth", "insight")


class Record(BaseModel):
    """A part of the output document: unknown keys kept, dumped back as it was set."""

    model_config = ConfigDict(extra="allow")

    def dump(self) -> dict[str, Any]:
        """Return the JSON data: the keys that were set (built or loaded), and only those."""
        return self.model_dump(mode="json", exclude_unset=True)


class Usage(Record):
    """LLM calls, tokens and seconds spent by one agent.

    `input_tokens` are the prompt tokens sent; `cached_tokens` those of them the server reported
    as reused from its prefix cache (OpenAI's `usage.prompt_tokens_details.cached_tokens`, filled
    in by the embedded server, and by vLLM and SGLang when asked to), so the server evaluated
    `input_tokens - cached_tokens`. A server that reports nothing counts as 0 cached.
    """

    calls: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    seconds: float = 0.0
    cached_tokens: int = 0

    def __init__(self, *counts: float, **fields: Any) -> None:
        """Build a usage; counts given positionally (or none at all) set every field.

        Loading (`model_validate`, a usage nested in a record) passes keywords only, and sets
        just the keys the data has, so an old record without `cached_tokens` dumps back without
        it. `Usage(1, 100, 20, 0.5)` and `Usage()` are built in code, and dump every field.
        """
        if counts or not fields:
            defaults = {name: info.default for name, info in Usage.model_fields.items()}
            fields = defaults | dict(zip(defaults, counts, strict=False)) | fields
        super().__init__(**fields)

    def __add__(self, other: Usage) -> Usage:
        """Sum two usages."""
        return Usage(
            self.calls + other.calls,
            self.input_tokens + other.input_tokens,
            self.output_tokens + other.output_tokens,
            self.seconds + other.seconds,
            self.cached_tokens + other.cached_tokens,
        )

    @field_serializer("seconds")
    def _round_seconds(self, seconds: float) -> float:
        return round(seconds, 4)

    @property
    def evaluated_tokens(self) -> int:
        """Prompt tokens the server actually evaluated (sent minus reused from its cache)."""
        return self.input_tokens - self.cached_tokens

    def as_dict(self) -> dict[str, float]:
        """Return plain data for state and output: every field, seconds rounded."""
        return self.model_dump(mode="json")

    @classmethod
    def from_dict(cls, data: dict | None) -> Usage:
        """Rebuild from `as_dict` output (None: zero usage; old records lack `cached_tokens`)."""
        return cls.model_validate(data) if data else cls()


UsageByAgent = dict[str, Usage]
"""Usage per agent name (`strategist`, `simulator`, `critic`, `assistant`)."""


def total_usage(usages: UsageByAgent) -> Usage:
    """Return the sum over agents."""
    return sum(usages.values(), Usage())


class StrategyRef(Record):
    """The strategy a turn applied."""

    id: str
    text: str = ""


class Candidate(Record):
    """A strategy retrieved for a turn (its `text` is left out of slimmed export inputs)."""

    id: str
    text: str = ""
    score: float = 0.0
    rank: int = 0


class Scores(Record):
    """The LLM critic's scores of a draft (absent from a draft only the novelty check judged)."""

    correct: bool | None = None
    coherent: bool | None = None
    depth: int | None = None
    insight: int | None = None
    feedback: str | None = None


class Rerank(Record):
    """How the simulator chose this draft among several it wrote (`--simulator-drafts`)."""

    kept: int = 0
    """The index in `drafts` of the draft kept (the one judged)."""
    drafts: list[str] = Field(default_factory=list)
    """Every draft written for this attempt, in the order written."""
    ratios: list[float] | None = None
    """Each draft's log-likelihood ratio under the turn's strategy against the other candidates
    (natural log); None when no draft was reranked: one was the end marker, or the server cannot
    score replies, and the first draft was kept."""


class Verdict(Record):
    """A drafted user instruction with the critic's verdict on it."""

    text: str = ""
    accepted: bool = False
    reason: str = ""
    similarity: float = 0.0
    scores: Scores | None = None
    ending: bool | None = None
    """The draft is the end marker: the user ends the conversation (judged by the ending rules,
    never by the critic; accepted, it ended the dialogue). Absent on other drafts."""
    rerank: Rerank | None = None
    """The drafts this one was chosen from; absent when the simulator wrote one draft."""
    end_probability: float | None = None
    """The simulator's probability of ending the conversation here, where it decided whether to
    end by its calibrated threshold (`agents.simulator.StrategySimulator`); absent otherwise."""
    guidance: float | None = None
    """The guidance weight the draft was sampled with (`--simulator-guidance`), where it was
    guided; absent otherwise."""
    floor: int | None = None
    """The fewest words the draft was held open for (`--length-floor`), where a floor held it;
    absent otherwise."""

    def verdict_scores(self) -> Scores | None:
        """Return the scores, also from a record that carries them beside the verdict."""
        if self.scores is not None:
            return self.scores
        flat = {k: v for k, v in (self.model_extra or {}).items() if k in Scores.model_fields}
        if any(flat.get(k) is not None for k in SCORE_KEYS):
            return Scores.model_validate(flat)
        return None

    def verdict_feedback(self) -> str | None:
        """Return the critic's feedback, also from a record that carries it beside the verdict."""
        scores = self.verdict_scores()
        if scores is not None and scores.feedback is not None:
            return scores.feedback
        return (self.model_extra or {}).get("feedback")


class SelectionSummary(Record):
    """How a turn's strategy was chosen: method, note and, for a drawn one, the draw."""

    method: str | None = None
    note: str | None = None
    draw: dict[str, Any] | None = None


class StrategySelection(Record):
    """The strategist's decision as the graph's state holds it, until the turn closes."""

    candidates: list[Candidate] = Field(default_factory=list)
    strategy: StrategyRef | None = None
    method: str | None = None
    note: str | None = None
    draw: dict[str, Any] | None = None

    def summary(self) -> SelectionSummary:
        """Return the turn record's `selection` (the draw only for a drawn strategy)."""
        drawn = {"draw": self.draw} if self.draw is not None else {}
        return SelectionSummary(method=self.method, note=self.note, **drawn)


class TurnDecisions(Record):
    """What a turn decided before its instruction was answered."""

    index: int | None = None
    """The turn's number, from 1 (None only in records that never carried one)."""
    candidates: list[Candidate] = Field(default_factory=list)
    strategy: StrategyRef | None = None
    selection: SelectionSummary = Field(default_factory=SelectionSummary)
    drafts: list[Verdict] = Field(default_factory=list)


class UnfinishedTurn(TurnDecisions):
    """A turn that started but did not finish."""

    usage: UsageByAgent = Field(default_factory=dict)


class TurnRecord(TurnDecisions):
    """One generated turn: its decisions, the accepted instruction and the answer to it."""

    critic: Verdict | None = None
    """The accepted draft's verdict (the last of `drafts`)."""
    instruction: str = ""
    answer: str = ""
    usage: UsageByAgent = Field(default_factory=dict)

    def all_drafts(self) -> list[Verdict]:
        """Return the drafts; a record with a verdict but no drafts has the verdict alone."""
        if not self.drafts and self.critic is not None:
            return [self.critic]
        return list(self.drafts)


class Opening(Record):
    """The assistant's answer to a seed that ended with a user message."""

    answer: str = ""
    usage: UsageByAgent = Field(default_factory=dict)


class Summary(Record):
    """Turn, rejection, call, token and time counts of a run."""

    turns: int = 0
    target_turns: int | None = None
    rejections: int = 0
    llm_calls: int = 0
    input_tokens: int = 0
    cached_tokens: int = 0
    output_tokens: int = 0
    llm_seconds: float = 0.0
    wall_seconds: float = 0.0
    per_agent: UsageByAgent = Field(default_factory=dict)


class SeedRef(Record):
    """Where the seed dialogue came from."""

    source: str = ""


class ChatMessage(Record):
    """One message in OpenAI form (a seed's system message, then user and assistant turns)."""

    role: Literal["system", "user", "assistant"]
    content: str


class LibraryInfo(Record):
    """The strategy library a dialogue drew from: its name and the store's metadata as is."""

    name: str | None = None
    version: int | str | None = None
    """The library's version as its metadata spells it (the bundled one writes `"2"`)."""

    def size(self) -> int | None:
        """Return how many strategies it offers the strategist (its high-level count)."""
        extra = self.model_extra or {}
        counts, count = extra.get("counts"), extra.get("count")
        if isinstance(counts, dict) and _is_int(counts.get("high")):
            return counts["high"]
        return count if _is_int(count) else None


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


class BatchInfo(Record):
    """Where a dialogue of a batch run directory sits in the batch (its envelope)."""

    job: str | None = None
    seed_index: int | None = None
    repeat: int | None = None
    resumed: bool | None = None
    sampling_seed: int | None = None


class ContaminationMatch(Record):
    """A generated turn the contamination filter found close to a benchmark question."""

    turn: int
    match: str | None = None
    score: float | None = None
    source: str | None = None


class FilterCut(Record):
    """One cut a filter made: `at` generated turns kept, `removed` cut off."""

    by: str
    """The filter that cut (`refusal`, `dedup`, `contamination`)."""
    at: int
    removed: int


class FilterInfo(Record):
    """What the export's filters did to a dialogue."""

    generated_turns: int | None = None
    """Generated turns before any filter."""
    truncated_at: int | None = None
    """Generated turns kept after the last cut."""
    by: str | None = None
    """The filter that made the last cut."""
    cuts: list[FilterCut] = Field(default_factory=list)
    opening_removed: bool = False
    contaminated_turns: list[ContaminationMatch] = Field(default_factory=list)


class DialogueDocument(Record):
    """One generated dialogue: `--out`'s file, a line of a run directory's dialogues.jsonl."""

    format: str = FORMAT
    status: str | None = None
    reason: str | None = None
    created_at: str | None = None
    seed: SeedRef = Field(default_factory=SeedRef)
    messages: list[ChatMessage] = Field(default_factory=list)
    opening: Opening | None = None
    turns: list[TurnRecord] = Field(default_factory=list)
    unfinished_turn: UnfinishedTurn | None = None
    summary: Summary | None = None
    library: LibraryInfo = Field(default_factory=LibraryInfo)
    settings: dict[str, Any] = Field(default_factory=dict)
    batch: BatchInfo | None = None
    """Set in a batch run directory."""
    filters: FilterInfo | None = None
    """Set by the export's filters on a dialogue they flagged or cut."""

    @model_validator(mode="after")
    def _turns_end_the_messages(self) -> Self:
        """Each turn record is one of the user-assistant pairs that end `messages`."""
        start = self.generated_start
        if start < 0:
            raise ValueError("turn 1 does not match the messages (more turns than messages)")
        for number in range(len(self.turns)):
            pair = self.messages[start + 2 * number : start + 2 * number + 2]
            if [m.role for m in pair] != ["user", "assistant"]:
                raise ValueError(f"turn {number + 1} does not match the messages")
        return self

    @classmethod
    def of(cls, document: DialogueDocument | dict[str, Any]) -> DialogueDocument:
        """Return `document` typed (loaded from its JSON data when it is a mapping).

        Raises:
            pydantic.ValidationError: The data is not a dialogue document (a ValueError).
        """
        return document if isinstance(document, cls) else cls.model_validate(document)

    @property
    def generated_start(self) -> int:
        """The index in `messages` of the first generated user message."""
        return len(self.messages) - 2 * len(self.turns)

    @property
    def job(self) -> str | None:
        """The batch job id (None outside a batch)."""
        return self.batch.job if self.batch else None


class IndexEntry(Record):
    """One job outcome in a run directory's `index.jsonl` (a later line for a job supersedes).

    `done`: the dialogue is stored at byte `offset` of `dialogues.jsonl`, with its turn count
    and the ids of the strategies its turns applied. `failed`: why, and how many attempts so far.
    """

    job: str = Field(min_length=1)
    status: Literal["done", "failed"]
    offset: NonNegativeInt | None = None
    turns: NonNegativeInt | None = None
    strategies: list[str] = Field(default_factory=list)
    reason: str | None = None
    attempts: NonNegativeInt = 0
    at: str | None = None

    @model_validator(mode="after")
    def _failure_has_reason(self) -> Self:
        if self.status == "failed" and self.reason is None:
            raise ValueError("a failed job needs a reason")
        return self


class SeedSource(Record):
    """The seed source a batch started with (`batch.jobs.SeedSet.describe`)."""

    path: str | None = None
    sha256: str | None = None
    format: str | None = None
    count: int | None = None
    skipped: dict[str, Any] | None = None
    order: str = "file"
    """`file`, or `shuffled (seed N)` (older manifests leave it out: file order)."""


class ModelSection(Record):
    """A model section of the settings dump: shared, a role's override, or what a role ran with.

    That is the dump's `model`, a role's own section, or an entry of its `roles`. Other keys
    (`frequency_penalty`, `adapter`...) are kept.
    """

    model: str | None = None
    base_url: str | None = None
    temperature: float | int | None = None
    max_tokens: int | None = None

    def values(self) -> dict[str, Any]:
        """Return the keys set, without those set to None (a role's override leaves them out)."""
        return {key: value for key, value in self.dump().items() if value is not None}


class AgentNames(Record):
    """Which agent played each generation role (`notice`: why `auto` was downgraded)."""

    strategist: str | None = None
    simulator: str | None = None
    critic: str | None = None
    assistant: str | None = None
    notice: str | None = None


class SettingsDump(Record):
    """The settings a batch ran with (`Settings.public_dump()`).

    The model sections and the agents are typed; every other setting (`turns`, `top_k`,
    `library`...) is kept as is (`values`).
    """

    model: ModelSection = Field(default_factory=ModelSection)
    """The shared model settings."""
    strategist: ModelSection | None = None
    simulator: ModelSection | None = None
    critic: ModelSection | None = None
    assistant: ModelSection | None = None
    agents: AgentNames = Field(default_factory=AgentNames)
    roles: dict[str, ModelSection] = Field(default_factory=dict)
    """What each role ran with, its defaults applied (older manifests: absent)."""

    @classmethod
    def of(cls, settings: SettingsDump | dict[str, Any] | None) -> SettingsDump:
        """Return `settings` typed (loaded from its JSON data when it is a mapping)."""
        return settings if isinstance(settings, cls) else cls.model_validate(settings or {})

    def override(self, role: str) -> ModelSection:
        """Return the role's own model section (empty when it has none)."""
        section = getattr(self, role, None) if role in ROLE_SECTIONS else None
        return section if isinstance(section, ModelSection) else ModelSection()

    def resolved(self, role: str) -> ModelSection:
        """Return what the role ran with, as recorded (empty in older manifests)."""
        return self.roles.get(role) or ModelSection()

    def values(self, keys: tuple[str, ...]) -> dict[str, Any]:
        """Return the settings of `keys` that are set, in the order of `keys`."""
        data = self.dump()
        return {key: data[key] for key in keys if key in data}


GenerationRole = Literal["strategist", "simulator", "critic", "assistant"]
"""A generation role: one agent registry, one model section in the settings, one usage entry."""
GENERATION_ROLES: tuple[GenerationRole, ...] = get_args(GenerationRole)
"""The generation roles in the order a turn runs them: the one list of them, imported elsewhere."""
ROLE_SECTIONS = GENERATION_ROLES
"""The generation roles, each with its model section in the settings."""


class BatchManifest(Record):
    """A batch run directory's manifest (`batch.json`).

    Dumped with its keys (nested ones too) in the order they were loaded or built with.
    """

    format: str = BATCH_FORMAT
    created_at: str | None = None
    seeds: SeedSource = Field(default_factory=SeedSource)
    n: int | None = None
    turns: int | None = None
    fingerprint: dict[str, Any] = Field(default_factory=dict)
    """What decides a dialogue's content (`Settings.fingerprint`); a resume must match it."""
    settings: SettingsDump = Field(default_factory=SettingsDump)
    agents: AgentNames = Field(default_factory=AgentNames)
    """The agent of each role, `auto` resolved."""
    library: LibraryInfo = Field(default_factory=LibraryInfo)

    _order: Any = PrivateAttr(default=None)

    @model_validator(mode="wrap")
    @classmethod
    def _remember_order(cls, data: Any, handler: ValidatorFunctionWrapHandler) -> Any:
        manifest = handler(data)
        if isinstance(data, dict) and isinstance(manifest, BatchManifest):
            manifest._order = _key_order(data)
        return manifest

    @classmethod
    def of(cls, manifest: BatchManifest | dict[str, Any]) -> BatchManifest:
        """Return `manifest` typed (loaded from its JSON data when it is a mapping).

        Raises:
            pydantic.ValidationError: The data is not a batch manifest (a ValueError).
        """
        return manifest if isinstance(manifest, cls) else cls.model_validate(manifest)

    def dump(self) -> dict[str, Any]:
        """Return the JSON data: the keys that were set, in the order they came."""
        return _in_order(super().dump(), self._order)

    def library_data(self) -> dict[str, Any]:
        """Return the library part as the file has it (its keys in the file's order)."""
        return _in_order(self.library.dump(), (self._order or {}).get("library"))


def _key_order(data: Any) -> Any:
    """Return the keys of `data` and of the mappings in it, in order (None for other values)."""
    if isinstance(data, dict):
        return {key: _key_order(value) for key, value in data.items()}
    return None


def _in_order(data: Any, order: Any) -> Any:
    """Return `data` with its keys, nested too, in `order` (`_key_order`); new keys last."""
    if not isinstance(data, dict) or not isinstance(order, dict):
        return data
    keys = [key for key in order if key in data] + [key for key in data if key not in order]
    return {key: _in_order(data[key], order.get(key)) for key in keys}
