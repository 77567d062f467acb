"""`run.py train-simulator`: fine-tune a model (default: the bundled one) as a user simulator."""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import math
import os
from pathlib import Path
from typing import Annotated

from pydantic import TypeAdapter, ValidationError
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.text import Text

from cli.errors import UsageError
from cli.induce import load_sources
from induction.annotations import AnnotationError, load_extractions
from runtime.settings import Settings
from stores.packaged import PACKAGED, read_records
from training import INSTALL_HINT, TrainingError
from training.convert import converter_tree
from training.job import TrainJob, base_format
from training.pairs import PairSet, build_end_pairs, build_pairs, strategy_texts

EXTRA_MODULES = ("torch", "transformers", "peft", "gguf")
MAX_RANK = 1024
"""Largest LoRA rank taken: far above what a simulator needs (8), below the widest bases'."""
_HISTORY_TOKENS = TypeAdapter(Annotated[int, Settings.model_fields["history_tokens"]])
"""Validates `--history-tokens` with the bounds of the run-time setting `history_tokens`."""


def build_parser() -> argparse.ArgumentParser:
    """Return the parser of the train-simulator command."""
    parser = argparse.ArgumentParser(prog="run.py train-simulator", description=__doc__)
    parser.add_argument("--dialogues", nargs="+", required=True, type=Path, metavar="FILE")
    parser.add_argument(
        "--extractions",
        required=True,
        type=Path,
        metavar="FILE",
        help="team-written strategies of the pairs (JSONL)",
    )
    parser.add_argument("--out", required=True, type=Path, help="output folder, e.g. models/NAME")
    parser.add_argument(
        "--no-strategy",
        action="store_true",
        help="train the plain simulator's prompt on the same pairs",
    )
    parser.add_argument(
        "--endings",
        action="store_true",
        help="also learn the end marker after each real dialogue its user ended "
        "(SimulatorArena's); dialogues cut by their source are not endings",
    )
    parser.add_argument(
        "--ending-weight",
        type=int,
        default=1,
        metavar="K",
        help="with --endings: each ending pair is trained K times an epoch (default 1; endings are "
        "rare targets)",
    )
    parser.add_argument(
        "--strategy-dropout",
        type=float,
        default=0.0,
        metavar="P",
        help="train this share of the pairs on the contrast request (no strategy) instead of "
        "their strategy, so guided decoding contrasts two learned distributions (default 0)",
    )
    parser.add_argument(
        "--length-cues",
        action="store_true",
        help="put each real follow-up's length (under 8, 8 to 15, 16 to 31, 32 or more words) "
        "in its request; at run time it is drawn at the real users' shares",
    )
    parser.add_argument(
        "--strategy-level",
        choices=["high", "extracted"],
        default="high",
        help="which strategy the prompt gets (default: high, as at run time)",
    )
    parser.add_argument(
        "--library",
        type=Path,
        default=PACKAGED / "default",
        help="packaged library whose parent links give the high-level strategy",
    )
    parser.add_argument(
        "--base",
        type=Path,
        help="base model: a GGUF file or a Hugging Face model directory (config.json, safetensors, "
        "tokenizer with its chat template); default: the bundled SmolLM2",
    )
    parser.add_argument(
        "--device",
        choices=["auto", "cuda", "cpu"],
        default="auto",
        help="auto (default): CUDA in bfloat16 when torch sees a GPU, else CPU in float32",
    )
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0, help="split, order and dropout seed")
    parser.add_argument("--max-steps", type=int, help="stop after N optimiser steps in all")
    parser.add_argument("--learning-rate", type=float, default=2e-4)
    parser.add_argument("--accumulation", type=int, default=8, help="pairs per optimiser step")
    parser.add_argument("--rank", type=int, default=8, help="LoRA rank")
    parser.add_argument("--alpha", type=int, default=16, help="LoRA alpha (scale: alpha/rank)")
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch threads (1: on 2 shared cores, 2 threads ran 2-4x slower than 1)",
    )
    parser.add_argument("--held-out", type=float, default=0.1, help="share of dialogues held out")
    parser.add_argument(
        "--eval-limit", type=int, help="evaluate on at most N held-out pairs (default: all of them)"
    )
    parser.add_argument("--max-length", type=int, default=1024, help="longest pair in tokens")
    parser.add_argument(
        "--history-tokens",
        type=int,
        default=Settings().history_tokens,
        help="history budget, as at run time (setting history_tokens)",
    )
    return parser


def train_simulator(argv: list[str], console: Console) -> int:
    """Run the train-simulator command; return the exit code."""
    args = build_parser().parse_args(argv)
    job = make_job(args)
    loaded = load_sources(args.dialogues, None)
    real_pairs = [p for r in loaded for p in r.pairs]
    endings = [(r.path.name, d) for r in loaded for d in r.dialogues] if job.endings else []
    pair_set = make_pairs(args, job, real_pairs, endings)
    missing = [m for m in EXTRA_MODULES if importlib.util.find_spec(m) is None]
    if missing:
        raise TrainingError(f"train-simulator needs {', '.join(missing)}: {INSTALL_HINT}")
    converter_tree()  # installed with the extra: a missing one stops before --out is created
    created = create_out(job.out)
    try:
        return _train(job, pair_set, real_pairs, console)
    except BaseException:
        if created:
            remove_empty(job.out)  # a run that failed before its first checkpoint leaves nothing
        raise


def _train(job: TrainJob, pair_set: PairSet, real_pairs: list, console: Console) -> int:
    from training.pipeline import run

    console.print(
        f"{len(pair_set.pairs)} pairs from {len(real_pairs)} real follow-ups "
        f"({job.variant} variant) -> {job.out}"
    )
    with _progress(console) as progress:
        task = progress.add_task("held-out loss of the base model", total=None, loss=0.0, rate=0.0)

        def report(event: str, state) -> None:
            if event == "eval":
                progress.update(task, description="held-out loss")
            elif state is not None:
                progress.update(
                    task,
                    description=f"epoch {state.epoch}",
                    completed=state.step,
                    total=state.total_steps,
                    loss=state.loss,
                    rate=state.tokens_per_s,
                )

        card = run(job, pair_set, real_pairs, report, lambda line: console.print(Text(line)))
    last, adapter = card["epochs"][-1], card["adapter"]
    gguf = (
        f"{job.out / adapter['file']} ({adapter['bytes'] / 2**20:.1f} MiB), "
        if adapter["file"]
        else ""
    )
    console.print(
        f"held-out perplexity {card['epochs'][0]['held_out_perplexity']:.2f} (base) -> "
        f"{last['held_out_perplexity']:.2f}; {last['tokens_per_s']} tokens/s on "
        f"{card['device']}; peak RSS {card['peak_rss_mib']} MiB; wrote {gguf}the PEFT adapter "
        f"({adapter['peft_bytes'] / 2**20:.1f} MiB) and {job.out / 'CARD.md'}"
    )
    return 0


def make_job(args: argparse.Namespace) -> TrainJob:
    """Check the paths and numbers given and return the job (one-line usage errors)."""
    for path in (args.extractions, args.library / "records.jsonl"):
        if not path.is_file():
            raise UsageError(f"{path}: file not found")
    if args.base is None:
        from runtime.server import default_gguf

        args.base = default_gguf()
    elif not args.base.exists():
        raise UsageError(f"{args.base}: file not found")
    base_format(args.base)
    check_out(args.out)
    check_numbers(args)
    return TrainJob(
        dialogues=list(args.dialogues),
        extractions=args.extractions,
        library=args.library,
        out=args.out,
        base=args.base,
        with_strategy=not args.no_strategy,
        endings=args.endings,
        ending_weight=args.ending_weight,
        strategy_dropout=args.strategy_dropout,
        length_cues=args.length_cues,
        level=args.strategy_level,
        history_tokens=args.history_tokens,
        max_length=args.max_length,
        held_out=args.held_out,
        eval_limit=args.eval_limit,
        threads=args.threads,
        device=args.device,
        lora={"rank": args.rank, "alpha": args.alpha},
        loop={
            "epochs": args.epochs,
            "learning_rate": args.learning_rate,
            "accumulation": args.accumulation,
            "max_steps": args.max_steps,
            "seed": args.seed,
        },
    )


def check_numbers(args: argparse.Namespace) -> None:
    """Refuse numbers the run would fail on (or silently ignore) after the model load."""
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    bounds = [
        ("--epochs", args.epochs, 1, None),
        ("--max-steps", args.max_steps, 1, None),
        ("--accumulation", args.accumulation, 1, None),
        ("--rank", args.rank, 1, MAX_RANK),
        ("--threads", args.threads, 1, cpus or 1),
        ("--eval-limit", args.eval_limit, 1, None),
        ("--max-length", args.max_length, 1, None),
        ("--ending-weight", args.ending_weight, 1, None),
    ]
    for flag, value, low, high in bounds:
        if value is None:
            continue
        if value < low or (high is not None and value > high):
            between = f"at least {low}" if high is None else f"between {low} and {high}"
            raise UsageError(f"{flag} must be {between}, not {value}")
    if args.ending_weight != 1 and not args.endings:
        raise UsageError("--ending-weight needs --endings (there are no ending pairs to weigh)")
    if not 0 <= args.strategy_dropout < 1:
        raise UsageError(f"--strategy-dropout must be in [0, 1), not {args.strategy_dropout}")
    if args.strategy_dropout and args.no_strategy:
        raise UsageError("--strategy-dropout needs a strategy to drop (not --no-strategy)")
    if not (math.isfinite(args.alpha) and args.alpha > 0):
        raise UsageError(f"--alpha must be above 0 (the LoRA scale: alpha/rank), not {args.alpha}")
    if not (math.isfinite(args.learning_rate) and 0 < args.learning_rate <= 1):
        raise UsageError(f"--learning-rate must be in (0, 1], not {args.learning_rate}")
    if not 0 < args.held_out < 1:
        raise UsageError("--held-out must be a share between 0 and 1")
    try:
        _HISTORY_TOKENS.validate_python(args.history_tokens)
    except ValidationError as exc:
        reason = exc.errors()[0]["msg"].lower()
        raise UsageError(f"--history-tokens: {reason} (as the run-time setting)") from None


def check_out(out: Path) -> None:
    """Accept a new folder, or one holding this command's checkpoints (to resume)."""
    if out.exists() and not out.is_dir():
        raise UsageError(f"--out {out}: exists and is not a folder")
    if (out / "card.json").exists():
        raise UsageError(f"--out {out}: already holds a trained simulator; choose another folder")
    if out.is_dir() and any(out.iterdir()) and not (out / "checkpoints").is_dir():
        raise UsageError(f"--out {out}: folder is not empty and holds no checkpoints to resume")


def create_out(out: Path) -> bool:
    """Create the output folder once every check passed; return whether it is new."""
    existed = out.is_dir()
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UsageError(f"--out {out}: cannot create folder: {exc.strerror}") from None
    return not existed


def remove_empty(out: Path) -> None:
    """Remove `out` if nothing but empty folders is in it (a checkpoint to resume stays)."""
    for folder in sorted((p for p in out.rglob("*") if p.is_dir()), reverse=True):
        with contextlib.suppress(OSError):
            folder.rmdir()
    with contextlib.suppress(OSError):
        out.rmdir()


def make_pairs(
    args: argparse.Namespace, job: TrainJob, real_pairs: list, endings: list | None = None
) -> PairSet:
    """Build the training pairs of the job (usage error when there are none).

    With `endings` (`(source, dialogue)` of every real dialogue, `--endings`), the ending pairs
    of the dialogues their users ended are added; their dropped counts go in as `ending: ...`.
    """
    if not real_pairs:
        raise UsageError("no (answer, follow-up) pairs in the given files")
    try:
        extractions = load_extractions(job.extractions)
    except AnnotationError as exc:
        raise UsageError(str(exc)) from None
    strategies = strategy_texts(extractions, read_records(job.library), job.level)
    shape = {"with_strategy": job.with_strategy, "history_tokens": job.history_tokens}
    pair_set = build_pairs(real_pairs, strategies, length_cues=job.length_cues, **shape)
    if endings:
        ends = build_end_pairs(endings, strategies, lengths=pair_set.length_cues, **shape)
        pair_set.pairs.extend(ends.pairs)
        pair_set.dropped |= {f"ending: {k}": v for k, v in ends.dropped.items()}
    if not pair_set.pairs:
        raise UsageError(
            f"none of the {len(real_pairs)} pairs has a strategy in {job.extractions.name} "
            f"that the library {job.library} holds"
        )
    return pair_set


def _progress(console: Console) -> Progress:
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("loss {task.fields[loss]:.3f}"),
        TextColumn("{task.fields[rate]:.0f} tok/s"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=console,
    )
