"""What an evaluation found, as plain data that round-trips through JSON.

Per variant: every metric with its CI, its difference to the baseline, strategy use and per-turn
curves; plus the real users' column and the settings used.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

from pydantic import BaseModel, ConfigDict

from evaluation.bootstrap import Difference, Interval
from evaluation.specs import METRICS, MetricSpec

CURVES = (
    "critic_depth",
    "critic_insight",
    "judge_depth",
    "judge_insight",
    "judge_coherence",
    "answer_similarity",
)
"""Per-turn scores kept as curves over the turn index."""


class JudgeSetting(BaseModel):
    """The judge model that rated the dialogues (its URL with any credentials redacted)."""

    model: str | None = None
    base_url: str | None = None


class EvaluationSettings(BaseModel):
    """The settings an evaluation ran with, as `report.json`'s `settings` holds them.

    `to_dict` writes only the fields that were set, so a file written before a field existed
    reads back and writes out unchanged; unknown keys from other versions are kept.
    """

    model_config = ConfigDict(extra="allow", validate_assignment=True)

    resamples: int | None = None
    """Bootstrap resamples (None: not recorded)."""
    seed: int | None = None
    """Seed of the bootstrap (None: not recorded)."""
    level: float = 0.95
    """Confidence level of every interval."""
    embedder: str | None = None
    bandwidth: float | None = None
    """RBF bandwidth of the MMD (None without a reference set)."""
    available_strategies: int | None = None
    reference_followups: int = 0
    reference_dialogues: int = 0
    real_user_adherence: dict[str, Any] | None = None
    """The committed real-user level (`evaluation.real_users`), verbatim."""
    generation: dict[str, dict[str, Any]] | None = None
    """Variant name -> how it was generated (ablate: agents, per-role models, seeds)."""
    judge: JudgeSetting | None = None


@dataclass
class VariantResult:
    """Everything measured on one variant's dialogues."""

    name: str
    dialogues: int
    """Number of dialogues."""
    turns: int
    """Number of generated instructions."""
    metrics: dict[str, Interval]
    """Metric name -> estimate with CI and n (all None when n/a)."""
    differences: dict[str, Difference] = field(default_factory=dict)
    """Metric name -> this variant minus the baseline (empty for the baseline itself)."""
    statuses: dict[str, int] = field(default_factory=dict)
    """Run status -> number of dialogues (our documents only)."""
    strategies: list[dict[str, Any]] = field(default_factory=list)
    """`{"id", "text", "count"}` per strategy used, most used first."""
    per_turn: dict[str, list[float | None]] = field(default_factory=dict)
    """Curve name (`CURVES`) -> mean per turn index (1-based position i at list index i - 1)."""

    def metric(self, name: str) -> Interval | None:
        """Return the metric's estimate (None where this column does not have the metric)."""
        return self.metrics.get(name)  # .get: Optional by design (metric not in this column)

    def mean(self, name: str) -> float | None:
        """Return the metric's estimate alone (None where it is missing or not applicable)."""
        summary = self.metric(name)
        return summary.mean if summary is not None else None

    def difference(self, name: str) -> Difference | None:
        """Return this variant minus the baseline on the metric (None: not compared)."""
        return self.differences.get(name)  # .get: Optional by design (baseline: none)

    def curve(self, name: str) -> list[float | None]:
        """Return the per-turn means of a curve (empty where there are none)."""
        return self.per_turn.get(name) or []  # .get: a curve without scores is absent


@dataclass
class EvaluationResult:
    """The results of all variants, the real users' column and the settings used."""

    variants: dict[str, VariantResult]
    baseline: str | None
    """The variant every other is compared with (None when it is not among the variants)."""
    reference: VariantResult | None = None
    """The real follow-ups' values, when a reference set was given."""
    settings: EvaluationSettings = field(default_factory=EvaluationSettings)
    specs: tuple[MetricSpec, ...] = METRICS

    def columns(self) -> list[VariantResult]:
        """The variants in report order: the baseline first, the others, then real users."""
        ordered = sorted(self.variants.values(), key=lambda v: v.name != self.baseline)
        return [*ordered, *([self.reference] if self.reference else [])]

    def to_dict(self) -> dict[str, Any]:
        """Return plain JSON-ready data (`from_dict` reads it back)."""
        return {
            "baseline": self.baseline,
            "settings": self.settings.model_dump(mode="json", exclude_unset=True),
            "metrics": [asdict(s) for s in self.specs],
            "variants": {k: _variant_dict(v) for k, v in self.variants.items()},
            "reference": _variant_dict(self.reference) if self.reference else None,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> EvaluationResult:
        """Rebuild a result from `to_dict` output (a loaded `report.json`)."""
        reference = data["reference"]
        return cls(
            variants={k: _variant_from(v) for k, v in data["variants"].items()},
            baseline=data["baseline"],
            reference=_variant_from(reference) if reference else None,
            settings=EvaluationSettings.model_validate(data["settings"]),
            specs=tuple(MetricSpec(**s) for s in data["metrics"]),
        )


def _variant_dict(result: VariantResult) -> dict[str, Any]:
    data = asdict(result)
    data["differences"] = {
        k: {**asdict(d), "significant": d.significant} for k, d in result.differences.items()
    }
    return data


def _variant_from(data: Mapping[str, Any]) -> VariantResult:
    return VariantResult(
        name=data["name"],
        dialogues=data["dialogues"],
        turns=data["turns"],
        metrics={k: Interval(**v) for k, v in data["metrics"].items()},
        differences={
            k: Difference(v["diff"], v["lo"], v["hi"], v["paired"])
            for k, v in data["differences"].items()
        },
        statuses=dict(data["statuses"]),
        strategies=list(data["strategies"]),
        per_turn={k: list(v) for k, v in data["per_turn"].items()},
    )
