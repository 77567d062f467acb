"""The report's PNG plots, drawn with matplotlib's Agg canvas (no pyplot, no global state)."""

from __future__ import annotations

import io
import math

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from evaluation.results import CURVES, EvaluationResult, VariantResult

COLUMNS = 4
"""Panels per row of `metrics.png`."""

REAL_COLOR = "0.6"
"""Grey for the real users' bars and lines."""

CURVE_LIMITS = {"critic_depth": (1, 5), "critic_insight": (1, 5)} | {
    name: (1, 10) for name in ("judge_depth", "judge_insight", "judge_coherence")
}
"""The score scales, so curves of different reports look alike."""

CURVE_LABELS = {
    "critic_depth": "critic depth (1-5)",
    "critic_insight": "critic insight (1-5)",
    "judge_depth": "judge depth (1-10)",
    "judge_insight": "judge insight (1-10)",
    "judge_coherence": "judge coherence (1-10)",
    "answer_similarity": "similarity to previous answer",
}


def _colors(result: EvaluationResult) -> dict[str, str]:
    colors = {v.name: f"C{i % 10}" for i, v in enumerate(result.columns())}
    if result.reference:
        colors[result.reference.name] = REAL_COLOR
    return colors


def _png(figure: Figure) -> bytes:
    FigureCanvasAgg(figure)
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=100)
    return buffer.getvalue()


def metrics_png(result: EvaluationResult) -> bytes:
    """Small multiples: one panel per metric with a value, a bar with its CI per variant."""
    shown = result.columns()
    colors = _colors(result)
    specs = [s for s in result.specs if any(_value(v, s.name) is not None for v in shown)]
    rows = max(1, math.ceil(len(specs) / COLUMNS))
    figure = Figure(figsize=(4 * COLUMNS, 2.8 * rows), layout="constrained")
    axes = np.atleast_1d(figure.subplots(rows, COLUMNS, squeeze=False)).ravel()
    for ax, spec in zip(axes, specs, strict=False):
        for x, variant in enumerate(shown):
            summary = variant.metric(spec.name)
            if summary is None or summary.mean is None:
                ax.text(x, 0, "n/a", ha="center", va="bottom", fontsize=7, color="0.4")
                continue
            low = summary.mean - summary.lo if summary.lo is not None else 0
            high = summary.hi - summary.mean if summary.hi is not None else 0
            ax.bar(x, summary.mean, color=colors[variant.name], width=0.7)
            ax.errorbar(
                x,
                summary.mean,
                yerr=[[max(low, 0)], [max(high, 0)]],
                color="black",
                capsize=3,
                linewidth=1,
            )
        arrow = {"higher": " ↑", "lower": " ↓", None: ""}[spec.better]
        ax.set_title(spec.label + arrow, fontsize=9)
        ax.set_xticks(
            range(len(shown)), [v.name for v in shown], rotation=30, fontsize=7, ha="right"
        )
        ax.tick_params(axis="y", labelsize=7)
    for ax in axes[len(specs) :]:
        ax.set_visible(False)
    if not specs:
        axes[0].set_visible(True)
        axes[0].text(0.5, 0.5, "no metric has a value", ha="center", transform=axes[0].transAxes)
    figure.suptitle("Metrics with confidence intervals")
    return _png(figure)


def strategies_png(result: EvaluationResult, top: int = 12) -> bytes:
    """One panel per variant: the share of turns that applied each of its top strategies."""
    variants = list(result.columns()[: len(result.variants)])
    colors = _colors(result)
    height = max(2.0, 0.28 * top + 1.0)
    figure = Figure(figsize=(10, height * max(1, len(variants))), layout="constrained")
    axes = np.atleast_1d(figure.subplots(max(1, len(variants)), 1, squeeze=False)).ravel()
    for ax, variant in zip(axes, variants, strict=False):
        used = variant.strategies[:top]
        total = sum(s["count"] for s in variant.strategies)
        ax.set_title(f"{variant.name}: {len(variant.strategies)} strategies used", fontsize=9)
        if not used:
            ax.text(
                0.5,
                0.5,
                "no strategy data",
                ha="center",
                va="center",
                transform=ax.transAxes,
                color="0.4",
            )
            ax.set_axis_off()
            continue
        labels = [_short(f"{s['id']}: {s['text']}", 60) for s in used]
        shares = [s["count"] / total for s in used]
        positions = np.arange(len(used))
        ax.barh(positions, shares, color=colors[variant.name], height=0.7)
        ax.set_yticks(positions, labels, fontsize=7)
        ax.set_ylim(top - 0.5, -0.5)
        ax.set_xlabel("share of turns", fontsize=8)
        ax.tick_params(axis="x", labelsize=7)
    if not variants:
        axes[0].set_axis_off()
    figure.suptitle(f"Strategy use (top {top})")
    return _png(figure)


def depth_by_turn_png(result: EvaluationResult) -> bytes:
    """Per-turn curves: critic and judge scores when any exist, else similarity to the answer."""
    shown = result.columns()
    colors = _colors(result)
    scored = [c for c in CURVES[:-1] if any(_has_curve(v, c) for v in result.variants.values())]
    curves = scored or ["answer_similarity"]
    figure = Figure(figsize=(4.5 * len(curves), 3.4), layout="constrained")
    axes = np.atleast_1d(figure.subplots(1, len(curves), squeeze=False)).ravel()
    for ax, curve in zip(axes, curves, strict=True):
        for variant in shown:
            values = variant.curve(curve)
            if not any(v is not None for v in values):
                continue
            ys = [np.nan if v is None else v for v in values]
            ax.plot(
                range(1, len(ys) + 1),
                ys,
                marker="o",
                label=variant.name,
                color=colors[variant.name],
            )
        ax.set_title(CURVE_LABELS[curve], fontsize=9)
        ax.set_xlabel("generated turn", fontsize=8)
        ax.xaxis.get_major_locator().set_params(integer=True)
        if curve in CURVE_LIMITS:
            low, high = CURVE_LIMITS[curve]
            ax.set_ylim(low - 0.2, high + 0.2)
        ax.tick_params(labelsize=7)
        if ax.get_lines():
            ax.legend(fontsize=7)
        else:
            ax.text(0.5, 0.5, "no values", ha="center", transform=ax.transAxes, color="0.4")
    figure.suptitle("Scores by turn" if scored else "Coherence by turn (no critic or judge scores)")
    return _png(figure)


def _value(variant: VariantResult, metric: str) -> float | None:
    return variant.mean(metric)


def _has_curve(variant: VariantResult, curve: str) -> bool:
    return any(v is not None for v in variant.curve(curve))


def _short(text: str, limit: int) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"
