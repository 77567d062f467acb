"""Render the graph's trace events live in the terminal with rich; model text is never markup."""

from __future__ import annotations

from typing import Literal

from rich.console import Console
from rich.panel import Panel
from rich.rule import Rule
from rich.table import Table
from rich.text import Text

from dialogues.models import DialogueDocument, Summary
from graphs.events import (
    AnswerEvent,
    DraftEvent,
    EndedEvent,
    SelectionEvent,
    TraceEvent,
    TurnEvent,
    UserEndedEvent,
    VerdictEvent,
)

Verbosity = Literal["quiet", "normal", "verbose"]
_CLIP = 700


class Tracer:
    """Turns the graph's trace events (`graphs.events`) into terminal output."""

    def __init__(self, console: Console | None = None, verbosity: Verbosity = "normal") -> None:
        """Print to `console` (stderr-free stdout by default) at `verbosity`."""
        self.console = console or Console(highlight=False)
        self.verbosity = verbosity

    def event(self, event: TraceEvent) -> None:
        """Render one trace event."""
        if self.verbosity == "quiet":
            return
        match event:
            case TurnEvent(turn=turn, of=of):
                self.console.print(Rule(f"turn {turn} of {of}"))
            case SelectionEvent():
                self._selection(event)
            case DraftEvent(attempt=attempt, text=text, author=author):
                title = f"user draft {attempt}"
                if author == "human":
                    title += " (written by a person)"
                self.console.print(
                    Panel(
                        self._clip(text or "(empty)"),
                        title=title,
                        title_align="left",
                        border_style="cyan",
                    )
                )
            case VerdictEvent():
                self._verdict(event)
            case AnswerEvent(turn=turn, text=text):
                title = "assistant (answer to the seed)" if turn == 0 else "assistant"
                self.console.print(
                    Panel(self._clip(text), title=title, title_align="left", border_style="magenta")
                )
            case EndedEvent(reason=reason):
                self.console.print(Text("ended early: " + reason, style="bold yellow"))
            case UserEndedEvent(turn=turn):
                self.console.print(
                    Text(
                        f"the user ended the conversation (turn {turn} not taken)",
                        style="bold green",
                    )
                )

    def _clip(self, text: str) -> Text:
        if self.verbosity != "verbose" and len(text) > _CLIP:
            text = text[:_CLIP].rstrip() + " ..."
        return Text(text)

    def _selection(self, event: SelectionEvent) -> None:
        chosen = event.strategy
        if event.candidates:
            table = Table(title="candidate strategies", title_justify="left", expand=False)
            table.add_column("#", justify="right")
            table.add_column("score", justify="right")
            table.add_column("strategy")
            for c in event.candidates:
                picked = chosen is not None and c.id == chosen.id
                table.add_row(
                    Text(("> " if picked else "") + str(c.rank + 1)),
                    f"{c.score:.2f}",
                    Text(c.text, style="bold green" if picked else ""),
                )
            self.console.print(table)
        label = Text("strategy ", style="bold")
        label.append(chosen.text if chosen else "(none)", style="green")
        label.append(f"  [{event.method}]", style="dim")
        if draw := event.draw:
            label.append(
                f"  drawn at temperature {draw.temperature:g}: p={draw.probability:.3f}, "
                f"rank {draw.rank + 1} of {draw.pool}",
                style="dim",
            )
        self.console.print(label)
        if event.note:
            self.console.print(Text(event.note, style="yellow"))

    def _verdict(self, event: VerdictEvent) -> None:
        scores = event.scores
        line = Text("ending " if event.ending else "critic ", style="bold")
        line.append(
            "accepted" if event.accepted else "rejected",
            style="green" if event.accepted else "red",
        )
        if scores is not None:
            line.append(
                f"  correct={scores.correct} coherent={scores.coherent}"
                f" depth={scores.depth} insight={scores.insight}"
            )
        line.append(f"  similarity={event.similarity:.2f}", style="dim")
        if event.end_probability is not None:
            line.append(f"  p_end={event.end_probability:.2f}", style="dim")
        if event.guidance is not None:
            line.append(f"  guided x{event.guidance:g}", style="dim")
        if event.floor is not None:
            line.append(f"  held to {event.floor} words", style="dim")
        self.console.print(line)
        if not event.accepted or self.verbosity == "verbose":
            self.console.print(
                Text("  " + event.reason, style="red" if not event.accepted else "dim")
            )
            if scores is not None and scores.feedback:
                self.console.print(Text("  feedback: " + scores.feedback, style="dim"))

    def notice(self, text: str) -> None:
        """Show a note about how the run was configured (also in quiet mode)."""
        self.console.print(Text("note: " + text, style="yellow"))

    def seed(self, messages: list[dict[str, str]], source: str) -> None:
        """Show the seed dialogue before generation starts."""
        if self.verbosity == "quiet":
            return
        self.console.print(Rule(Text(f"seed {source}")))
        for m in messages:
            style = "cyan" if m["role"] == "user" else "magenta"
            self.console.print(
                Panel(
                    self._clip(m["content"]),
                    title=m["role"],
                    title_align="left",
                    border_style=style,
                )
            )

    def summary(self, document: DialogueDocument, out: str | None) -> None:
        """Show the run's outcome and cost per agent (also in quiet mode)."""
        s = document.summary or Summary()
        status = f"{document.status}" + (f" ({document.reason})" if document.reason else "")
        head = Text.assemble(
            ("done: ", "bold"),
            (status, "green" if document.status in ("complete", "ended_by_user") else "yellow"),
            f"  turns {s.turns}/{s.target_turns}, rejections {s.rejections}, "
            f"LLM calls {s.llm_calls}, tokens {s.input_tokens}+{s.output_tokens}, "
            f"{s.wall_seconds:.1f}s",
        )
        if self.verbosity != "quiet":
            self.console.print(Rule("summary"))
            table = Table(expand=False)
            for column in ("agent", "calls", "input tokens", "output tokens", "seconds"):
                table.add_column(column, justify="left" if column == "agent" else "right")
            for agent, u in s.per_agent.items():
                table.add_row(
                    agent,
                    str(u.calls),
                    str(u.input_tokens),
                    str(u.output_tokens),
                    f"{round(u.seconds, 4):.2f}",  # as the file has it (4 places)
                )
            self.console.print(table)
        self.console.print(head)
        if out:
            self.console.print(Text(f"wrote {out}", style="dim"))
