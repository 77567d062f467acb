"""Write an evaluation into a directory: markdown table, JSON, plots and sample dialogues.

Every file is written atomically (temporary file in the same directory, then a rename), and
`report.md` last, so a `report.md` on disk means the rest of the report is complete.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

from dialogues.output import OutputError, write_bytes_atomic, write_json_atomic
from evaluation.inputs import EvalDialogue
from evaluation.plots import depth_by_turn_png, metrics_png, strategies_png
from evaluation.real_users import describe
from evaluation.results import EvaluationResult, VariantResult
from evaluation.samples import samples_html

HIGHER, LOWER = "▲", "▼"
"""Markers of a variant significantly above / below the baseline."""

ARROWS = {"higher": "↑", "lower": "↓", None: "·"}


def write_report(
    result: EvaluationResult,
    out_dir: str | Path,
    *,
    samples: Mapping[str, Sequence[EvalDialogue]] | None = None,
    samples_per_variant: int = 3,
    top_strategies: int = 12,
) -> dict[str, Path]:
    """Write `report.md`, `report.json`, three PNG plots and `samples.html` into `out_dir`.

    Args:
        result: What `evaluate` returned (or `EvaluationResult.from_dict` read back).
        out_dir: The report directory; created when missing.
        samples: Variant name -> its dialogues, to show a few in `samples.html` (the page lists
            no dialogues without them).
        samples_per_variant: Dialogues shown per variant.
        top_strategies: Strategies shown per variant in `strategies.png`.

    Returns:
        File name -> path of every file written.

    Raises:
        OutputError: The directory cannot be created or written.
    """
    out = Path(out_dir)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputError(out, f"cannot create the report directory: {exc.strerror}") from None
    files = {
        "metrics.png": metrics_png(result),
        "strategies.png": strategies_png(result, top_strategies),
        "depth_by_turn.png": depth_by_turn_png(result),
        "samples.html": samples_html(result, samples or {}, samples_per_variant).encode("utf-8"),
    }
    written = {}
    for name, data in files.items():
        write_bytes_atomic(out / name, data)
        written[name] = out / name
    write_json_atomic(out / "report.json", result.to_dict())
    written["report.json"] = out / "report.json"
    write_bytes_atomic(out / "report.md", markdown(result).encode("utf-8"))
    written["report.md"] = out / "report.md"
    return written


def markdown(result: EvaluationResult) -> str:
    """Return the report's markdown: counts, one metrics table and how to read it."""
    shown = result.columns()
    lines = ["# Evaluation report", ""]
    for variant in shown:
        statuses = ", ".join(f"{k} {v}" for k, v in variant.statuses.items())
        lines.append(
            f"- `{variant.name}`: {variant.dialogues} dialogues, {variant.turns} instructions"
            + (f" ({statuses})" if statuses else "")
        )
    lines += ["", "| metric | better | " + " | ".join(v.name for v in shown) + " |"]
    lines.append("|---|---|" + "---|" * len(shown))
    for spec in result.specs:
        label = spec.label + (" (dataset)" if spec.scope == "dataset" else "")
        cells = [_cell(v, spec.name) for v in shown]
        lines.append(f"| {label} | {ARROWS[spec.better]} | " + " | ".join(cells) + " |")
    lines += ["", *real_user_lines(result), *_how_to_read(result)]
    return "\n".join(lines) + "\n"


def real_user_lines(result: EvaluationResult) -> list[str]:
    """The real users' adherence level beside each variant's, when the level is known."""
    level = result.settings.real_user_adherence
    if not level:
        return []
    generated = ", ".join(
        f"`{v.name}` {format_number(v.metrics['strategy_adherence'].mean)}"
        for v in result.variants.values()
        if "strategy_adherence" in v.metrics and v.metrics["strategy_adherence"].mean is not None
    )
    return [
        f"- Against real users: {describe(level)}; generated: {generated or 'n/a'} "
        "(`benchmarks/adherence_ceiling.py`, committed in `evaluation/real_user_adherence.json`).",
        "",
    ]


def format_number(value: float | None) -> str:
    """Format a number for a table cell: 3 decimals below 10, fewer above; None is `n/a`."""
    if value is None:
        return "n/a"
    size = abs(value)
    if size >= 100:
        return f"{value:,.0f}"
    return f"{value:.1f}" if size >= 10 else f"{value:.3f}"


def _cell(variant: VariantResult, metric: str) -> str:
    summary = variant.metric(metric)
    if summary is None or summary.mean is None:
        return "n/a"
    text = format_number(summary.mean)
    if summary.lo is not None and summary.hi is not None:
        text += f" [{format_number(summary.lo)}, {format_number(summary.hi)}]"
    diff = variant.difference(metric)
    if diff is not None and diff.significant:
        text += f" {HIGHER if diff.diff > 0 else LOWER}"
    return text


def _or_unknown(value: int | None) -> str:
    return "?" if value is None else str(value)


def _how_to_read(result: EvaluationResult) -> list[str]:
    settings = result.settings
    level = round(100 * settings.level)
    paired = {d.paired for v in result.variants.values() for d in v.differences.values()}
    if not paired:
        pairing = "not computed (no other variant to compare)"
    elif paired == {True}:
        pairing = "paired by seed (both variants grew from the same seeds)"
    elif paired == {False}:
        pairing = "unpaired (the variants do not share seed keys)"
    else:
        pairing = "paired by seed where both variants share seeds, else unpaired"
    baseline = f"`{result.baseline}`" if result.baseline else "the baseline (none given)"
    notes = [
        "## How to read this",
        "",
        f"- A cell is `estimate [lo, hi]`, a {level}% confidence interval over dialogues. Rows "
        "marked (dataset) are one value over all of a variant's instructions with a "
        "leave-one-dialogue-out jackknife interval; the others are the mean of per-dialogue "
        "values (cost rows: a ratio of sums) with a percentile bootstrap interval "
        f"({_or_unknown(settings.resamples)} resamples of whole dialogues, seed "
        f"{_or_unknown(settings.seed)}).",
        f"- {HIGHER} / {LOWER}: significantly higher / lower than {baseline}: the interval of "
        f"the difference excludes zero; differences are {pairing}.",
        "- better: ↑ higher is better, ↓ lower is better, · no direction (compare the realism "
        "rates with the real users column, when there is one).",
        "- n/a: the metric does not apply (dialogues from other tools have no strategies, critic "
        "scores or costs; judge rows need a judge model; distances to real users need a "
        "reference set; within-dialogue rows need 2 or more instructions).",
        "- Definitions: `report.json` (`metrics`) and the project's `docs/metrics.md`. "
        "Plots: `metrics.png`, `strategies.png`, `depth_by_turn.png`; dialogues: `samples.html`.",
    ]
    return notes
