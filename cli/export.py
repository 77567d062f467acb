"""`run.py export RUN_DIR --format F --out FILE`: filter a batch's dialogues, write training data.

The filters (see `batch.filters`) run in order: refusal truncation, self-repeat, near-duplicate
removal across the dataset (MiniLM embeddings), benchmark contamination (with `--contamination`)
and the minimum number of turns. The export (see `batch.export`) and its data card beside it
(`<out>.card.md` and `<out>.card.json`, see `batch.card`) are written as one unit: all three are
replaced, or none. Lines of the run directory that hold no readable dialogue (or repeat a job
already read) are skipped and counted in the summary and the card.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from rich.console import Console
from rich.table import Table
from rich.text import Text

from batch import store as batch_store
from batch.card import DataCard, build_card, write_card
from batch.export import FORMATS, export
from batch.filters import FilterConfig, FilterError, FilterReport, apply_filters, turn_count
from cli.errors import UsageError
from dialogues.models import BatchManifest, DialogueDocument
from dialogues.output import StagedWrites, check_writable
from dialogues.text import display_path
from stores.memory import Embedder

STORE_FILES = (
    batch_store.MANIFEST,
    batch_store.DIALOGUES,
    batch_store.INDEX,
    batch_store.CHECKPOINTS,
    batch_store.LOCK,
)


def _threshold(flag: str):
    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
        if not 0.0 < value <= 1.0:
            raise argparse.ArgumentTypeError(f"{flag} must be in (0, 1], got {text}")
        return value

    return parse


def _count(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more, got {text}")
    return value


def build_parser() -> argparse.ArgumentParser:
    """Return the parser of the export command."""
    parser = argparse.ArgumentParser(
        prog="run.py export",
        description="Filter a batch's dialogues, write them as training data with a data card.",
        epilog="Give RUN_DIR before --contamination (which takes one or more files).",
    )
    parser.add_argument("run_dir", type=Path, metavar="RUN_DIR", help="the batch's run directory")
    parser.add_argument("--format", required=True, choices=FORMATS, help="what to write")
    # A str, not a Path: Path("dir/") drops the slash that says "a directory" (refused).
    parser.add_argument("--out", required=True, metavar="FILE", help="file to write")
    parser.add_argument(
        "--plain", action="store_true", help="leave out the `ideas` decision records"
    )
    f = parser.add_argument_group("filters")
    f.add_argument(
        "--no-truncate-refusals",
        dest="truncate_refusals",
        action="store_false",
        help="keep turns from the first empty or refused answer on",
    )
    f.add_argument(
        "--no-self-repeat",
        dest="self_repeat",
        action="store_false",
        help="keep dialogues whose user turns repeat each other",
    )
    f.add_argument(
        "--self-repeat-threshold",
        type=_threshold("--self-repeat-threshold"),
        metavar="X",
        default=0.8,
        help="normalised Levenshtein similarity of a repeat (0.8)",
    )
    f.add_argument(
        "--no-dedup",
        dest="dedup",
        action="store_false",
        help="keep near-duplicate user turns across dialogues",
    )
    f.add_argument(
        "--dedup-threshold",
        type=_threshold("--dedup-threshold"),
        metavar="X",
        default=0.95,
        help="embedding cosine of a near-duplicate (0.95)",
    )
    f.add_argument(
        "--min-turns",
        type=_count,
        default=2,
        metavar="N",
        help="drop dialogues with fewer generated turns (2; 0 keeps all)",
    )
    f.add_argument(
        "--contamination",
        nargs="+",
        type=Path,
        default=[],
        metavar="FILE",
        help="benchmark files (dialogues, questions as JSON/JSONL, or .txt lines)",
    )
    f.add_argument(
        "--contamination-action",
        choices=["flag", "drop"],
        default="flag",
        help="flag the matching turns, or cut the dialogue before the first (flag)",
    )
    f.add_argument(
        "--contamination-threshold",
        type=_threshold("--contamination-threshold"),
        metavar="X",
        default=0.8,
        help="rapidfuzz ratio / 100 of a match (0.8)",
    )
    return parser


def filter_config(args: argparse.Namespace) -> FilterConfig:
    """Return the filter configuration of parsed arguments."""
    for path in args.contamination:
        if not path.is_file():
            raise UsageError(f"{path}: benchmark file not found")
    return FilterConfig(
        truncate_refusals=args.truncate_refusals,
        self_repeat=args.self_repeat,
        self_repeat_threshold=args.self_repeat_threshold,
        dedup=args.dedup,
        dedup_threshold=args.dedup_threshold,
        contamination_files=args.contamination,
        contamination_action=args.contamination_action,
        contamination_threshold=args.contamination_threshold,
        min_turns=args.min_turns,
    )


def slim(document: DialogueDocument) -> DialogueDocument:
    """Return `document` without what the export never uses, to hold a whole batch in memory.

    That is its settings copy, its unfinished turn (kept for a dialogue its user ended: it is the
    ending's record) and the texts of its turns' candidates (the strategy a turn applied keeps its
    text). `document` itself is not modified.
    """
    turns = [
        turn.model_copy(
            update={"candidates": [c.model_copy(update={"text": ""}) for c in turn.candidates]}
        )
        for turn in document.turns
    ]
    unfinished = document.unfinished_turn if document.status == "ended_by_user" else None
    return document.model_copy(
        update={"settings": {}, "unfinished_turn": unfinished, "turns": turns}
    )


def read_manifest(run_dir: Path) -> BatchManifest:
    """Return the batch manifest of `run_dir`, typed.

    Raises:
        UsageError: There is no batch in `run_dir`, or its manifest is unreadable.
    """
    try:
        return batch_store.load_manifest(run_dir)
    except batch_store.BatchStoreError as exc:
        raise UsageError(str(exc)) from None


def read_dialogues(
    run_dir: Path, skipped: batch_store.Skipped | None = None
) -> tuple[list[DialogueDocument], dict[str, int]]:
    """Return the stored dialogues (slimmed, each job once) and the job counts of a batch.

    Lines that hold no readable dialogue (or repeat a job) are passed over and counted in
    `skipped`, so a damaged line never keeps the rest of the batch from being exported.

    Raises:
        UsageError: The dialogue store or the index cannot be read at all.
    """
    try:
        documents = [slim(d) for d in batch_store.iter_dialogues(run_dir, skipped)]
        counts = batch_store.job_counts(run_dir, skipped)
    except OSError as exc:
        raise UsageError(f"{run_dir}: unreadable batch store ({exc})") from None
    return documents, counts


def check_out(out: str | Path, run_dir: Path) -> None:
    """Refuse an output path that would overwrite the batch's own files; probe that it is writable.

    Raises:
        UsageError: `out` is one of the batch's store files.
        OutputError: `out` cannot be written.
    """
    resolved = Path(out).resolve()
    if any(resolved == (run_dir / name).resolve() for name in STORE_FILES):
        raise UsageError(f"{out}: is a file of the batch itself; write the export elsewhere")
    check_writable(out)


def export_command(argv: list[str], console: Console, *, embedder: Embedder | None = None) -> int:
    """Run the export command; return the exit code.

    Args:
        argv: The arguments after `export`.
        console: Where the summary is printed.
        embedder: Embeds user turns for the dedup filter (default: offline MiniLM).
    """
    args = build_parser().parse_args(argv)
    config = filter_config(args)
    manifest = read_manifest(args.run_dir)
    check_out(args.out, args.run_dir)
    args.out = Path(args.out)
    skipped = batch_store.Skipped()
    documents, counts = read_dialogues(args.run_dir, skipped)
    if skipped.describe():
        console.print(
            Text(
                f"warning: {display_path(args.run_dir)}: skipped {skipped.describe()}",
                style="yellow",
            )
        )
    if config.dedup and embedder is None:
        from stores.embeddings import MiniLMEmbedding

        embedder = MiniLMEmbedding()
    try:
        with console.status(
            f"filtering {len(documents)} dialogues ({turn_count(documents)} turns)"
        ):
            kept, report = apply_filters(documents, config, embedder=embedder)
    except FilterError as exc:
        raise UsageError(str(exc)) from None
    with StagedWrites() as staged:  # the export and its card are renamed into place together
        result = export(kept, args.format, args.out, plain=args.plain, staged=staged)
        card = build_card(
            manifest,
            run_dir=args.run_dir,
            stored=len(documents),
            failed=counts["failed"],
            report=report,
            result=result,
            documents=kept,
            skipped=skipped.as_dict(),
        )
        md_path, json_path = write_card(args.out, card, staged)
    _print_summary(console, card, report, (args.out, md_path, json_path))
    return 0


def _print_summary(
    console: Console, card: DataCard, report: FilterReport, paths: tuple[Path, ...]
) -> None:
    console.print(report.table())
    counts = card.counts
    table = Table(title="export", show_header=False)
    table.add_column("what")
    table.add_column("count", justify="right")
    for label, value in (
        ("dialogues stored", counts.dialogues_stored),
        ("failed jobs", counts.jobs_failed),
        ("dialogues exported", counts.dialogues_exported),
        ("turns exported", counts.turns_exported),
        (f"{card.export['format']} records", counts.records_exported),
        ("turns without a strategy", counts.turns_without_strategy),
    ):
        table.add_row(label, str(value))
    console.print(table)
    strategies = card.strategies
    if strategies["top"]:
        console.print(
            Text(
                f"strategies: {strategies['distinct']} used in {strategies['with_strategy']} "
                f"turns, normalised entropy {strategies['entropy']}, largest share "
                f"{strategies['max_share']:.1%} (top 10)",
                style="bold",
            )
        )
        top = Table()
        top.add_column("strategy")
        top.add_column("turns", justify="right")
        top.add_column("share", justify="right")
        for row in strategies["top"][:10]:
            top.add_row(Text(str(row["strategy"])), str(row["count"]), f"{row['share']:.1%}")
        console.print(top)
    out, md_path, json_path = paths
    console.print(Text(f"wrote {out}", style="bold green"))
    console.print(Text(f"data card: {md_path} and {json_path}"))
