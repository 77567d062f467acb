"""Command-line entry point: dispatch, and turn known failures into one-line errors."""

from __future__ import annotations

import sys

from rich.console import Console
from rich.text import Text

from cli.batch import batch
from cli.errors import classify, message
from cli.evaluate import ablate, eval_command
from cli.export import export_command
from cli.generate import generate
from cli.induce import induce
from cli.strategies import strategies
from cli.train import train_simulator
from wiring.generation import Terminated

COMMANDS = {
    "induce": induce,
    "strategies": strategies,
    "batch": batch,
    "export": export_command,
    "eval": eval_command,
    "ablate": ablate,
    "train-simulator": train_simulator,
}
"""Subcommands; anything else is the generate command (`run.py --seed ...`)."""


def main(argv: list[str] | None = None) -> int:
    """Run the CLI and return its exit code."""
    argv = sys.argv[1:] if argv is None else argv
    console = Console(highlight=False)
    errors = Console(stderr=True, highlight=False)
    command = COMMANDS.get(argv[0]) if argv else None
    try:
        if command is not None:
            return command(argv[1:], console)
        return generate(argv, console)
    except KeyboardInterrupt as exc:
        errors.print(Text("interrupted before anything was generated", style="yellow"))
        return 128 + exc.signum if isinstance(exc, Terminated) else 130
    except Exception as exc:  # noqa: BLE001 - known failures become one line, bugs re-raise
        code = classify(exc)
        if code is None:
            raise
        errors.print(Text(f"error: {message(exc)}", style="bold red"), soft_wrap=True)
        return code
