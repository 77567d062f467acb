"""`run.py eval` (measure any dialogue sets) and `run.py ablate` (generate variants, then measure).

A variant is a settings patch (`agents.registry.VARIANTS`): a choice of agents from the registries,
or a setting such as the simulator's adapter; no special cases in the graph. `ideas` is the full
method; the others switch one part off.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table
from rich.text import Text

from agents.chat import ChatClient, ModelError, build_chat_model
from agents.registry import VARIANTS, variant_settings
from batch.jobs import load_seed_set
from batch.runner import BatchOptions, JobWiring
from batch.store import Skipped, hold_run_dirs
from cli.batch import (
    check_concurrency,
    check_counts,
    check_n,
    check_run_dir,
    open_batch,
    print_summary,
    resumable_manifest,
    run,
    seed_limit,
    warn_damage,
)
from cli.errors import UsageError
from cli.options import (
    add_agent_arguments,
    add_settings_arguments,
    preflight,
    refuse_human_simulator,
    settings_from_args,
)
from dialogues.output import check_directory_writable
from dialogues.text import display_path
from evaluation.inputs import EvalDialogue, EvalInputError, load_dialogues, reference_dialogues
from runtime.settings import ModelSettings, Settings
from runtime.urls import check_url, redact_url
from wiring.session import Session


def add_report_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the flags shared by eval and ablate: reference data, judge model, output."""
    parser.add_argument("--out", required=True, type=Path, help="report directory")
    parser.add_argument(
        "--reference",
        type=Path,
        nargs="+",
        metavar="FILE",
        help="real dialogues to compare user turns with (any format; several files are pooled)",
    )
    parser.add_argument("--judge-model", help="a separate judge model rates every instruction")
    parser.add_argument("--judge-base-url", help="OpenAI-compatible server of the judge model")
    parser.add_argument(
        "--baseline", help="variant the others are compared to (default: ideas, when present)"
    )


def eval_parser() -> argparse.ArgumentParser:
    """Return the parser of the eval command."""
    parser = argparse.ArgumentParser(
        prog="run.py eval",
        description="Evaluate dialogue sets (ours, or ShareGPT/OpenAI files of another tool).",
    )
    parser.add_argument(
        "dialogues",
        nargs="+",
        help="a batch directory or dialogue file per variant; NAME=PATH names the variant",
    )
    add_report_arguments(parser)
    return parser


def ablate_parser() -> argparse.ArgumentParser:
    """Return the parser of the ablate command."""
    parser = argparse.ArgumentParser(
        prog="run.py ablate",
        description="Generate dialogues per variant from the same seeds and models, then "
        "evaluate them side by side. Resumable: run the same command again.",
    )
    parser.add_argument("--seeds", required=True, type=Path, help="seed source (as for batch)")
    parser.add_argument(
        "--variants",
        default="ideas,plain,random-strategy,no-critic",
        help=f"comma-separated, from: {', '.join(VARIANTS)}",
    )
    parser.add_argument("--n", type=int, help="dialogues per variant (default: one per seed)")
    parser.add_argument(
        "--turns",
        type=int,
        help="most user turns per dialogue (default 6; the user may end sooner, see --ending)",
    )
    parser.add_argument("--concurrency", type=int, default=4, help="dialogues in flight")
    parser.add_argument("--opening-only", action="store_true", help="as for batch")
    parser.add_argument("--shuffle", action="store_true", help="as for batch")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    add_report_arguments(parser)
    add_agent_arguments(parser)
    add_settings_arguments(parser)
    return parser


def named_paths(specs: Sequence[str]) -> dict[str, Path]:
    """Parse `NAME=PATH` or `PATH` (named after the file or directory) arguments."""
    named: dict[str, Path] = {}
    for spec in specs:
        name, _, path = spec.rpartition("=") if "=" in spec else ("", "", spec)
        path_ = Path(path)
        name = display_path(name or (path_.name if path_.is_dir() else path_.stem))
        if name in named:
            raise UsageError(f"two dialogue sets are named {name!r}; use NAME=PATH")
        named[name] = path_
    return named


def variant_names(text: str) -> list[str]:
    """Parse `--variants`."""
    names = [v.strip() for v in text.split(",") if v.strip()]
    unknown = [v for v in names if v not in VARIANTS]
    if unknown:
        raise UsageError(f"unknown variant {unknown[0]!r}; choose from {', '.join(VARIANTS)}")
    if not names:
        raise UsageError("--variants is empty")
    return list(dict.fromkeys(names))


def judge_client(args: argparse.Namespace, settings: Settings | None) -> ChatClient | None:
    """Return the judge's chat client, or None when no judge was asked for."""
    if not args.judge_model:
        if args.judge_base_url:
            raise UsageError("--judge-base-url needs --judge-model")
        return None
    base_url = args.judge_base_url or (settings.model.base_url if settings else None)
    if not base_url:
        raise UsageError("--judge-model needs --judge-base-url (a server that hosts the judge)")
    try:
        check_url(base_url)
    except ValueError as exc:
        raise UsageError(f"--judge-base-url: {exc}") from None
    model = ModelSettings(
        base_url=base_url, model=args.judge_model, temperature=0.0, max_tokens=256
    )
    return ChatClient(build_chat_model(model, base_url), structured_method="json_schema")


def load_reference_lengths(paths: Sequence[Path] | None) -> list[int] | None:
    """User turns per real dialogue of the reference files (after `load_reference` checked them)."""
    if not paths:
        return None
    from induction.loaders import load

    return [
        sum(t.role == "user" for t in dialogue.turns)
        for path in paths
        for dialogue in load(path).dialogues
    ]


def load_reference(paths: Sequence[Path] | None) -> list[EvalDialogue] | None:
    """Read the real follow-ups of the reference dialogue files (pooled)."""
    if not paths:
        return None
    from induction.loaders import NotDialogueFile, load

    pairs = []
    for path in paths:
        if path.is_dir():
            raise UsageError(f"{display_path(path)}: is a directory; give a dialogue file")
        try:
            found = load(path).pairs
        except FileNotFoundError:
            raise UsageError(f"{display_path(path)}: file not found") from None
        except NotDialogueFile as exc:
            raise UsageError(str(exc)) from None
        if not found:
            raise UsageError(f"{display_path(path)}: no follow-up turns to compare with")
        pairs += found
    return reference_dialogues(pairs)


def check_baseline(baseline: str | None, names: Sequence[str]) -> None:
    """Refuse a `--baseline` that names none of the variants."""
    if baseline is not None and baseline not in names:
        raise UsageError(f"--baseline {baseline!r} is not one of the variants ({', '.join(names)})")


def report(
    variants: Mapping[str, list[EvalDialogue]],
    args: argparse.Namespace,
    console: Console,
    judge: ChatClient | None,
    generation: dict[str, Any] | None = None,
    reference: list[EvalDialogue] | None = None,
) -> None:
    """Judge (optionally), evaluate and write the report; print its table.

    `generation` (ablate) records how each variant was generated: agents, per-role models and
    temperatures, sampling seed, seeds; it goes into report.json's settings. `reference` is
    the already loaded `--reference` (see `load_reference`).
    """
    from evaluation.evaluate import evaluate
    from evaluation.judge import Judge
    from evaluation.report import real_user_lines, write_report
    from evaluation.results import JudgeSetting
    from stores.embeddings import MiniLMEmbedding

    if judge is not None:
        judging = Judge(judge)

        async def judge_all() -> dict[str, list[EvalDialogue]]:
            return {name: await judging.judge_dialogues(d) for name, d in variants.items()}

        variants = asyncio.run(judge_all())
        if judging.failures:
            console.print(Text(f"judge: {len(judging.failures)} ratings failed", style="yellow"))
    result = evaluate(
        variants,
        embedder=MiniLMEmbedding(),
        reference=reference,
        reference_lengths=load_reference_lengths(args.reference) if reference else None,
        baseline=args.baseline or "ideas",
    )
    if generation:
        result.settings.generation = generation
    if judge is not None:
        url = args.judge_base_url
        result.settings.judge = JudgeSetting(
            model=args.judge_model, base_url=url and redact_url(url)
        )
    paths = write_report(result, args.out, samples=variants)
    console.print(summary_table(result))
    for line in real_user_lines(result)[:1]:
        console.print(Text(line.removeprefix("- ")))
    console.print(
        Text.assemble(
            ("report", "bold"),
            f" (with 95% intervals): {display_path(paths['report.md'])}; plots, samples and JSON "
            f"in {display_path(args.out)}",
        )
    )


def summary_table(result: Any) -> Table:
    """Return the report's table for the terminal: means only (intervals are in report.md).

    ▲/▼ mark a significant difference to the baseline.
    """
    from evaluation.report import HIGHER, LOWER, format_number

    columns = result.columns()
    table = Table(title="evaluation (mean; ▲/▼ significantly above/below the baseline)")
    table.add_column("metric")
    for variant in columns:
        table.add_column(Text(f"{variant.name}\n{variant.dialogues} dlg"), justify="right")
    for spec in result.specs:
        cells = []
        for variant in columns:
            cell = format_number(variant.mean(spec.name))
            diff = variant.difference(spec.name)
            if diff is not None and diff.significant:
                cell += f" {HIGHER if diff.diff > 0 else LOWER}"
            cells.append(cell)
        table.add_row(spec.label, *cells)
    return table


def eval_command(argv: list[str], console: Console) -> int:
    """Run the eval command; return the exit code."""
    args = eval_parser().parse_args(argv)
    paths = named_paths(args.dialogues)
    check_baseline(args.baseline, list(paths))
    check_directory_writable(args.out)
    judge = judge_client(args, None)
    skipped = {name: Skipped() for name in paths}
    try:
        variants = {name: load_dialogues(path, skipped[name]) for name, path in paths.items()}
    except EvalInputError as exc:
        raise UsageError(str(exc)) from None
    for name, lines in skipped.items():
        if lines.describe():
            console.print(Text(f"warning: {name}: skipped {lines.describe()}", style="yellow"))
    reference = load_reference(args.reference)
    for name, dialogues in variants.items():
        turns = sum(len(d.turns) for d in dialogues)
        console.print(Text(f"{name}: {len(dialogues)} dialogues, {turns} generated user turns"))
    report(variants, args, console, judge, reference=reference)
    return 0


def ablate(argv: list[str], console: Console) -> int:
    """Run the ablate command; return the exit code.

    The report directory and every variant's run directory are locked (`hold_run_dir`) from
    before the first write to the end, the report included.
    """
    with contextlib.ExitStack() as locks:
        return _ablate(argv, console, locks)


def _ablate(argv: list[str], console: Console, locks: contextlib.ExitStack) -> int:
    args = ablate_parser().parse_args(argv)
    names = variant_names(args.variants)
    check_baseline(args.baseline, names)
    check_counts(args)
    check_directory_writable(args.out)
    settings = settings_from_args(args)
    refuse_human_simulator(settings)
    check_concurrency(args.concurrency, settings)
    judge = judge_client(args, settings)
    reference = load_reference(args.reference)  # before hours of generation, not after
    seeds = load_seed_set(args.seeds, opening_only=args.opening_only, limit=seed_limit(args))
    if args.shuffle:
        seeds = seeds.shuffled(settings.seed)
    n = args.n or len(seeds.seeds)
    check_n(n, settings)
    runs = {name: args.out / "runs" / name for name in names}
    for run_dir in runs.values():
        check_run_dir(run_dir)
    manifests = {
        name: resumable_manifest(runs[name], seeds, variant_settings(settings, name))
        for name in names
    }
    preflight(settings)
    options = BatchOptions(concurrency=args.concurrency)
    variants: dict[str, list[EvalDialogue]] = {}
    generation: dict[str, Any] = {}
    # One event loop for every variant: the session's HTTP clients keep connections bound to it.
    with Session(settings) as session, asyncio.Runner() as loop:
        for name in names:  # before any run directory is made: nothing to undo
            session.check_strategist(variant_settings(settings, name))
        locks.enter_context(hold_run_dirs([args.out, *runs.values()]))
        for name in names:
            vs = variant_settings(settings, name)
            wiring = JobWiring(vs, session.store, session.retriever, session.with_settings(vs))
            batch = open_batch(runs[name], seeds, n, wiring, options, manifests[name])
            warn_damage(console, batch.store)
            agents = vs.resolve_agents()[0]
            console.print(
                Text.assemble(
                    (name, "bold"),
                    f": strategist {agents.strategist}, simulator {agents.simulator}, "
                    f"critic {agents.critic}; {len(batch.store.done())}/{n} stored",
                )
            )
            finished = run(
                batch, console, label=name, quiet=args.quiet, executor=lambda b: loop.run(b.run())
            )
            if not finished:
                print_summary(console, batch.report, batch.store, interrupted=True)
                return 130
            if not batch.store.done():
                reasons = "; ".join(batch.report.failures)
                raise ModelError(f"{name}: no dialogue was generated ({reasons or 'no reason'})")
            variants[name] = load_dialogues(runs[name])
            generation[name] = {
                "agents": agents.model_dump(),
                "roles": vs.fingerprint()["models"],
                "sampling_seed": vs.seed,
                "turns": vs.turns,
                "n": n,
                "seeds": seeds.describe(),
            }
    report(paired(variants, console), args, console, judge, generation, reference)
    return 0


def paired(
    variants: Mapping[str, list[EvalDialogue]], console: Console
) -> dict[str, list[EvalDialogue]]:
    """Keep the dialogues of the jobs that every variant stored; say how many were dropped.

    A job that failed in one variant would otherwise leave that variant with other seeds than the
    baseline, and the comparison would silently become unpaired.

    Raises:
        ModelError: If no job was stored by every variant.
    """
    from evaluation.evaluate import shared_seeds

    kept = shared_seeds(variants)
    dropped = {name: len(variants[name]) - len(kept[name]) for name in variants}
    if any(dropped.values()):
        shared = len(next(iter(kept.values()), []))
        if not shared:
            raise ModelError("no job has a dialogue in every variant; nothing to compare")
        counts = ", ".join(f"{name} {count}" for name, count in dropped.items() if count)
        console.print(
            Text(
                f"warning: compared on the {shared} jobs every variant stored; dropped {counts} "
                "(jobs missing from another variant)",
                style="yellow",
            )
        )
    return kept
