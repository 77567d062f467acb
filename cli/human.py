"""Ask the person at the terminal for a user turn when the graph pauses for one."""

from __future__ import annotations

import sys
from typing import Any, TextIO

from rich.console import Console, Group
from rich.panel import Panel
from rich.text import Text

from agents.simulator import TurnQuestion
from wiring.generation import NoAnswer


class TurnPrompt:
    """Asks the person at the terminal for the user turn the human simulator paused on.

    Shows the question (strategy, candidates, the critic's feedback, the drafted turn), reads a
    line from stdin and returns it; an empty line takes the drafted turn.

    Args:
        console: Where the question is shown.
        stdin: Where the answer is read (default: `sys.stdin` at the time of asking).
        candidates: Whether to list the candidate strategies (the trace shows them already,
            except in quiet mode).
    """

    def __init__(
        self, console: Console, stdin: TextIO | None = None, candidates: bool = False
    ) -> None:
        """Ask on `console`, read from `stdin`."""
        self.console, self.stdin, self.candidates = console, stdin, candidates

    def __call__(self, question: dict[str, Any]) -> str:
        """Show `question` and return the line typed.

        Raises:
            NoAnswer: stdin is at its end.
        """
        self.console.print(self._panel(question))
        self.console.print(Text("> ", style="bold cyan"), end="")
        stdin = self.stdin or sys.stdin
        line = stdin.readline()
        if not line:
            self.console.print()
            raise NoAnswer("no user turn on stdin (end of input) for the human simulator")
        if not stdin.isatty():  # a terminal echoes what is typed; show piped input likewise
            self.console.print(Text(line.rstrip("\n")))
        return line.strip()

    def _panel(self, data: dict[str, Any]) -> Panel:
        question = TurnQuestion.model_validate(data)
        parts: list[Text] = []
        strategy = question.strategy
        parts.append(Text.assemble(("strategy ", "bold"), (strategy or "(none)", "green")))
        if self.candidates:
            for i, text in enumerate(question.candidates, 1):
                parts.append(Text(f"  {i}. {text}", style="dim"))
        if feedback := question.feedback:
            parts.append(Text.assemble(("critic's feedback ", "bold"), (feedback, "red")))
        if draft := question.draft:
            parts.append(Text.assemble(("drafted turn ", "bold"), draft))
            hint = "Type the user turn, or press Enter to take the drafted one."
        else:
            hint = "Type the user turn."
        parts.append(Text(hint, style="dim"))
        return Panel(
            Group(*parts), title="your turn (human simulator)", title_align="left", style="cyan"
        )
