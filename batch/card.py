"""The data card of an export: what was generated, how, what the filters did, and what remains.

`build_card` gathers it from the batch manifest, the job counts, the filter report and the export
result; `write_card` writes it next to the export as `<out>.card.json` (the data) and
`<out>.card.md` (readable tables), both atomically (with the export itself, given its
`StagedWrites`).
"""

from __future__ import annotations

import contextlib
from collections import Counter
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from batch.export import ExportResult
from batch.filters import FilterReport
from dialogues.models import (
    GENERATION_ROLES,
    AgentNames,
    BatchManifest,
    DialogueDocument,
    LibraryInfo,
    ModelSection,
    SettingsDump,
)
from dialogues.output import StagedWrites
from dialogues.strategy_use import normalised_entropy
from runtime.urls import redact_url

FORMAT = "ideas-card/1"
TOP_STRATEGIES = 20
"""Strategies listed by name in the card; the rest are summed as `others`."""
GENERATION_SETTINGS = (
    "top_k",
    "max_rejections",
    "min_turns",
    "ending",
    "novelty_threshold",
    "min_depth",
    "min_insight",
    "history_tokens",
    "simulator_drafts",
    "simulator_guidance",
    "retrieval",
    "seed",
    "gguf",
)
"""Settings of the manifest shown in the card (beside the per-role models)."""


class CardCounts(BaseModel):
    """The card's counts: stored, failed, exported."""

    dialogues_stored: int
    jobs_failed: int
    dialogues_exported: int
    turns_exported: int
    records_exported: int
    turns_without_strategy: int


class LengthRow(BaseModel):
    """Exported dialogues with `turns` generated user turns, and those their user ended."""

    turns: int
    dialogues: int
    ended_by_user: int


class CardBatch(BaseModel):
    """The batch the export came from, as its manifest records it."""

    created_at: str | None
    n: int | None
    turns: int | None


class CardSeeds(BaseModel):
    """The seed source of the batch."""

    path: str | None
    sha256: str | None
    format: str | None
    count: int | None


class DataCard(BaseModel):
    """The data card (`<out>.card.json`); `dump` gives its JSON, keys in this order."""

    format: str = FORMAT
    created_at: str
    run_dir: str
    export: dict[str, Any]
    """`ExportResult.as_dict()`."""
    counts: CardCounts
    skipped: dict[str, int]
    """Run-directory lines passed over, by kind (`batch.store.Skipped.as_dict`)."""
    filters: dict[str, Any]
    """`FilterReport.as_dict()`."""
    strategies: dict[str, Any]
    """`strategy_distribution`."""
    lengths: list[LengthRow]
    batch: CardBatch
    seeds: CardSeeds
    library: dict[str, Any]
    """The manifest's library metadata as it was written."""
    models: dict[str, Any]
    """`role_models`."""
    settings: dict[str, Any]

    def dump(self) -> dict[str, Any]:
        """Return the JSON data."""
        return self.model_dump(mode="json")


def card_paths(out_path: str | Path) -> tuple[Path, Path]:
    """Return the card's Markdown and JSON paths for an export written to `out_path`."""
    return Path(f"{out_path}.card.md"), Path(f"{out_path}.card.json")


def strategy_distribution(
    documents: Sequence[DialogueDocument],
    top: int = TOP_STRATEGIES,
    available: int | None = None,
) -> dict[str, Any]:
    """Count the strategies applied in the exported turns.

    Strategies are counted by text (ids that share a text are listed together). The entropy is
    the evaluation report's (`dialogues.strategy_use.normalised_entropy`): divided by
    log2(min(`available`, strategy turns)), `available` being the library's size, or the number
    of distinct strategies used when that is unknown; 0.0 where it is undefined (at most one
    strategy and no library size). Shares are of the turns that applied a strategy.

    Returns:
        `turns`, `with_strategy`, `without_strategy`, `distinct`, `entropy`, `max_share`, `top`
        (up to `top` rows of `strategy`, `ids`, `count`, `share`, most used first, ties by text)
        and `others` (`strategies`, `count`, `share` of the rest).
    """
    counts: Counter[str] = Counter()
    ids: dict[str, list[str]] = {}
    turns = without = 0
    for doc in documents:
        for turn in doc.turns:
            turns += 1
            strategy = turn.strategy
            if not strategy:
                without += 1
                continue
            counts[strategy.text] += 1
            if strategy.id not in ids.setdefault(strategy.text, []):
                ids[strategy.text].append(strategy.id)
    total = sum(counts.values())
    ranked = sorted(counts.items(), key=lambda item: (-item[1], item[0]))
    entropy = normalised_entropy(list(counts.values()), available) or 0.0
    rest = ranked[top:]
    rest_count = sum(c for _, c in rest)
    return {
        "turns": turns,
        "with_strategy": total,
        "without_strategy": without,
        "distinct": len(counts),
        "entropy": round(entropy, 4),
        "max_share": round(ranked[0][1] / total, 4) if total else 0.0,
        "top": [
            {"strategy": text, "ids": ids[text], "count": c, "share": round(c / total, 4)}
            for text, c in ranked[:top]
        ],
        "others": {
            "strategies": len(rest),
            "count": rest_count,
            "share": round(rest_count / total, 4) if total else 0.0,
        },
    }


def role_models(
    settings: SettingsDump | dict[str, Any], agents: AgentNames | dict[str, Any] | None = None
) -> dict[str, Any]:
    """Return per generation role the agent, model, endpoint and sampling settings used.

    A role's model is the shared one, under the role's defaults, under its own settings, under
    what the manifest records it ran with (`roles`; older manifests have none).

    Args:
        settings: The settings dump of the manifest (`Settings.public_dump()`).
        agents: The manifest's role -> agent name (over `settings["agents"]`).
    """
    from runtime.settings import ROLE_DEFAULTS

    settings = SettingsDump.of(settings)
    chosen = settings.agents.dump() | AgentNames.model_validate(agents or {}).dump()
    agent = AgentNames.model_validate(chosen)
    models = {}
    for role in GENERATION_ROLES:
        merged = ModelSection.model_validate(
            settings.model.dump()
            | ROLE_DEFAULTS[role]
            | settings.override(role).values()
            | settings.resolved(role).dump()
        )
        models[role] = {
            "agent": getattr(agent, role),
            "model": merged.model,
            "endpoint": redact_url(merged.base_url) if merged.base_url else "embedded server",
            "temperature": merged.temperature,
            "max_tokens": merged.max_tokens,
        }
    return models


def build_card(
    manifest: BatchManifest | dict[str, Any],
    *,
    run_dir: str | Path,
    stored: int,
    failed: int,
    report: FilterReport,
    result: ExportResult,
    documents: Sequence[DialogueDocument],
    skipped: dict[str, int] | None = None,
) -> DataCard:
    """Assemble the data card.

    Args:
        manifest: The batch manifest (`batch.store.load_manifest`; its JSON data will do).
        run_dir: The batch's run directory.
        stored: Dialogues stored in the batch (before filters).
        failed: Jobs whose latest outcome is a failure.
        report: What the filters did.
        result: What the export wrote.
        documents: The exported dialogue documents (for the strategy distribution).
        skipped: Lines of the run directory that were passed over (`batch.store.Skipped`):
            unreadable or duplicate dialogue lines, unreadable index lines.
    """
    manifest = BatchManifest.of(manifest)
    seeds = manifest.seeds
    return DataCard(
        created_at=datetime.now(UTC).isoformat(timespec="seconds"),
        run_dir=str(run_dir),
        export=result.as_dict(),
        counts=CardCounts(
            dialogues_stored=stored,
            jobs_failed=failed,
            dialogues_exported=result.dialogues,
            turns_exported=result.turns,
            records_exported=result.records,
            turns_without_strategy=result.turns_without_strategy,
        ),
        skipped={
            "unreadable_lines": 0,
            "duplicate_lines": 0,
            "unreadable_index_lines": 0,
            **(skipped or {}),
        },
        filters=report.as_dict(),
        strategies=strategy_distribution(documents, available=manifest.library.size()),
        lengths=length_histogram(documents),
        batch=CardBatch(created_at=manifest.created_at, n=manifest.n, turns=manifest.turns),
        seeds=CardSeeds(
            path=seeds.path, sha256=seeds.sha256, format=seeds.format, count=seeds.count
        ),
        library=manifest.library_data(),
        models=role_models(manifest.settings, manifest.agents),
        settings=manifest.settings.values(GENERATION_SETTINGS),
    )


def length_histogram(documents: Sequence[DialogueDocument | dict[str, Any]]) -> list[LengthRow]:
    """Count the exported dialogues by generated user turns, and those their user ended.

    Returns:
        One row per length, shortest first: `turns`, `dialogues`, `ended_by_user`.
    """
    lengths: Counter[int] = Counter()
    ended: Counter[int] = Counter()
    for doc in documents:
        document = DialogueDocument.of(doc)
        lengths[len(document.turns)] += 1
        ended[len(document.turns)] += document.status == "ended_by_user"
    return [
        LengthRow(turns=n, dialogues=lengths[n], ended_by_user=ended[n]) for n in sorted(lengths)
    ]


def _settings_text(settings: dict[str, Any]) -> str:
    parts = []
    for key, value in settings.items():
        if isinstance(value, list):
            value = ", ".join(Path(str(v)).name for v in value)
        parts.append(f"{key}={value}")
    return ", ".join(parts)


def _affected(stats: dict[str, Any]) -> str:
    flagged = stats["turns_flagged"]
    if not flagged:
        return str(stats["dialogues_affected"])
    return f"{stats['dialogues_affected']} ({flagged} flagged turn{'s' if flagged != 1 else ''})"


def _cell(value: Any) -> str:
    text = "-" if value is None else str(value)
    return " ".join(text.split()).replace("|", "\\|")


def _table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(_cell(v) for v in row) + " |" for row in rows]
    return [*lines, ""]


def render_markdown(card: DataCard) -> str:
    """Return the card as Markdown with tables."""
    export, counts, seeds = card.export, card.counts, card.seeds
    filters, strategies = card.filters, card.strategies
    library = LibraryInfo.model_validate(card.library)
    lines = [
        f"# Data card: {Path(export['path']).name}",
        "",
        f"IDEAS dialogues exported as `{export['format']}`"
        + (" (plain, without decision records)" if export["plain"] else "")
        + f" on {card.created_at} from the batch `{card.run_dir}`.",
        "",
        "## Counts",
        "",
        *_table(
            ["what", "count"],
            [
                ("dialogues stored", counts.dialogues_stored),
                ("failed jobs", counts.jobs_failed),
                ("dialogues exported", counts.dialogues_exported),
                ("generated turns exported", counts.turns_exported),
                ("records written", counts.records_exported),
                ("turns without a strategy", counts.turns_without_strategy),
                *_skipped_rows(card.skipped),
            ],
        ),
        *_lengths_lines(card.lengths),
        "## Filters",
        "",
        f"{filters['dialogues_in']} dialogues ({filters['turns_in']} turns) in, "
        f"{filters['dialogues_out']} dialogues ({filters['turns_out']} turns) out, "
        "filters applied in this order:",
        "",
        *_table(
            ["filter", "enabled", "settings", "dialogues affected", "turns removed", "dropped"],
            [
                (
                    name,
                    "yes" if f["enabled"] else "no",
                    _settings_text(f["settings"]),
                    _affected(f),
                    f["turns_removed"],
                    f["dialogues_dropped"],
                )
                for name, f in filters["filters"].items()
            ],
        ),
        "## Strategies",
        "",
        f"{strategies['with_strategy']} of {strategies['turns']} exported turns applied one of "
        f"{strategies['distinct']} strategies; normalised entropy {strategies['entropy']}, "
        f"largest share {strategies['max_share']:.1%}.",
        "",
        *_table(
            ["strategy", "ids", "turns", "share"],
            [
                *(
                    (s["strategy"], ", ".join(s["ids"]), s["count"], f"{s['share']:.1%}")
                    for s in strategies["top"]
                ),
                *(
                    [
                        (
                            f"others ({strategies['others']['strategies']} strategies)",
                            "",
                            strategies["others"]["count"],
                            f"{strategies['others']['share']:.1%}",
                        )
                    ]
                    if strategies["others"]["strategies"]
                    else []
                ),
            ],
        ),
        "## Models",
        "",
        *_table(
            ["role", "agent", "model", "endpoint", "temperature", "max tokens"],
            [
                (role, m["agent"], m["model"], m["endpoint"], m["temperature"], m["max_tokens"])
                for role, m in card.models.items()
            ],
        ),
        "## Generation",
        "",
        *_table(
            ["setting", "value"],
            [
                ("strategy library", f"{library.name} (version {library.version})"),
                ("seeds", seeds.path),
                ("seeds sha256", seeds.sha256),
                ("seed format", seeds.format),
                ("seed count", seeds.count),
                ("n", card.batch.n),
                ("target turns", card.batch.turns),
                ("batch created", card.batch.created_at),
                *((k, v) for k, v in card.settings.items()),
            ],
        ),
    ]
    return "\n".join(lines)


def _lengths_lines(rows: Sequence[LengthRow]) -> list[str]:
    """The histogram of user turns per dialogue, a bar per length (none without dialogues)."""
    if not rows:
        return []
    most = max(r.dialogues for r in rows) or 1
    return [
        "## Dialogue lengths",
        "",
        "Generated user turns per exported dialogue; `ended by the user`: dialogues whose user "
        "ended the conversation (the rest ran to the target turns or ended early).",
        "",
        *_table(
            ["user turns", "dialogues", "ended by the user", ""],
            [
                (r.turns, r.dialogues, r.ended_by_user, "#" * round(20 * r.dialogues / most))
                for r in rows
            ],
        ),
    ]


def _skipped_rows(skipped: dict[str, int]) -> list[tuple[str, int]]:
    """Return the Counts rows of run-directory lines passed over (only those that happened)."""
    labels = {
        "unreadable_lines": "unreadable dialogue lines skipped",
        "duplicate_lines": "duplicate dialogue lines skipped",
        "unreadable_index_lines": "unreadable index lines skipped",
    }
    return [(label, skipped[key]) for key, label in labels.items() if skipped[key]]


def write_card(
    out_path: str | Path, card: DataCard, staged: StagedWrites | None = None
) -> tuple[Path, Path]:
    """Write the card next to the export; return the Markdown and JSON paths.

    Args:
        out_path: The export the card describes.
        card: The card (`build_card`).
        staged: Stage the files there (renamed into place with the export) instead of writing
            them now.

    Raises:
        OutputError: A file cannot be written.
    """
    md_path, json_path = card_paths(out_path)
    with contextlib.ExitStack() as stack:
        if staged is None:
            staged = stack.enter_context(StagedWrites())
        staged.write_json(json_path, card.dump())
        staged.write_lines(md_path, render_markdown(card).rstrip("\n").split("\n"))
    return md_path, json_path
