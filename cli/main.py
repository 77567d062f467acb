"""Command-line entry point: dispatch, and turn known failures into one-line errors."""

from __future__ import annotations

import sys

from rich.console import Console
from rich.text import Text

from cli.errors import classify
from cli.generate import generate


def main(argv: list[str] | None = None) -> int:
    """Run the CLI and return its exit code."""
    argv = sys.argv[1:] if argv is None else argv
    console = Console(highlight=False)
    errors = Console(stderr=True, highlight=False)
    try:
        return generate(argv, console)
    except KeyboardInterrupt:
        errors.print(Text("interrupted before anything was generated", style="yellow"))
        return 130
    except Exception as exc:  # noqa: BLE001 - known failures become one line, bugs re-raise
        code = classify(exc)
        if code is None:
            raise
        errors.print(Text(f"error: {exc}", style="bold red"), soft_wrap=True)
        return code
