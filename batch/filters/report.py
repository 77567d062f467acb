"""What each filter did (`FilterStats`), collected in a `FilterReport` and shown as a table."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from typing import Any

from rich.table import Table
from rich.text import Text


@dataclass
class FilterStats:
    """What one filter did."""

    name: str
    enabled: bool
    dialogues_affected: int = 0
    """Dialogues the filter changed: cut, dropped or flagged."""
    turns_removed: int = 0
    """Generated turns removed (cut off, or in dropped dialogues)."""
    dialogues_dropped: int = 0
    turns_flagged: int = 0
    """Turns marked but kept (contamination `flag`; with `drop`, the contaminated turns found)."""
    settings: dict[str, Any] = field(default_factory=dict)
    details: dict[str, Any] = field(default_factory=dict)


@dataclass
class FilterReport:
    """Every filter's effect, and the dialogues and generated turns before and after."""

    dialogues_in: int = 0
    turns_in: int = 0
    dialogues_out: int = 0
    turns_out: int = 0
    filters: list[FilterStats] = field(default_factory=list)

    def stats(self, name: str) -> FilterStats:
        """Return one filter's stats by name."""
        return next(s for s in self.filters if s.name == name)

    def as_dict(self) -> dict[str, Any]:
        """Return plain JSON data."""
        return {
            "dialogues_in": self.dialogues_in,
            "dialogues_out": self.dialogues_out,
            "turns_in": self.turns_in,
            "turns_out": self.turns_out,
            "filters": {s.name: {k: v for k, v in asdict(s).items() if k != "name"} for s in self},
        }

    def __iter__(self) -> Iterator[FilterStats]:
        """Iterate over the filters' stats in the order they ran."""
        return iter(self.filters)

    def rows(self) -> list[tuple[str, str, str, str, str, str]]:
        """Return (filter, on/off, settings, affected, turns removed, dropped) per filter."""
        rows = []
        for s in self.filters:
            shown = {k: v for k, v in s.settings.items() if k != "files"}
            setting = ", ".join(f"{k}={v}" for k, v in shown.items())
            affected = str(s.dialogues_affected) if s.enabled else "-"
            if s.enabled and s.turns_flagged:
                plural = "s" if s.turns_flagged != 1 else ""
                affected += f" ({s.turns_flagged} flagged turn{plural})"
            rows.append(
                (
                    s.name,
                    "on" if s.enabled else "off",
                    setting,
                    affected,
                    str(s.turns_removed) if s.enabled else "-",
                    str(s.dialogues_dropped) if s.enabled else "-",
                )
            )
        return rows

    def table(self) -> Table:
        """Return the report as a rich table."""
        table = Table(
            title=f"filters: {self.dialogues_in} -> {self.dialogues_out} dialogues, "
            f"{self.turns_in} -> {self.turns_out} turns"
        )
        for column in ("filter", "", "settings"):
            table.add_column(column)
        for column in ("dialogues affected", "turns removed", "dropped"):
            table.add_column(column, justify="right")
        for row in self.rows():
            table.add_row(*map(Text, row), style=None if row[1] == "on" else "dim")
        return table
