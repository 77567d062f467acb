"""Helpers shared by the in-process CLI tests: an isolated environment and a captured run."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from cli.main import main
from wiring.session import Session

SEED = [
    {"role": "user", "content": "How do vaccines train the immune system?"},
    {"role": "assistant", "content": "They show it a harmless antigen so memory cells form."},
]
"""A two-message seed dialogue (OpenAI messages)."""


def isolate_cli(mp: pytest.MonkeyPatch, store: Path) -> None:
    """Drop the developer's settings, point the store at `store`, refuse the embedded server."""
    for name in list(os.environ):
        if name.upper().startswith("IDEAS_") or name in ("FORCE_COLOR", "TTY_COMPATIBLE"):
            mp.delenv(name)
    mp.setenv("IDEAS_STORE", str(store))
    mp.setenv("COLUMNS", "1000")  # in-process: no wrapping (see the subprocess tests)

    def refuse(self, model):
        raise AssertionError("a test tried to start the embedded llama.cpp server")

    mp.setattr(Session, "embedded_url", refuse)


def run_cli(capsys, *argv: object) -> tuple[int, str, str]:
    """Run `run.py ARGV` in-process; return its exit code, stdout and stderr."""
    code = main([str(a) for a in argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def lines(text: str) -> list[str]:
    """Return the non-blank lines of `text`."""
    return [line for line in text.splitlines() if line.strip()]


def write_seed(tmp_path: Path, seed: list[dict[str, str]] = SEED) -> Path:
    """Write `seed` as `seed.json` under `tmp_path` and return its path."""
    path = tmp_path / "seed.json"
    path.write_text(json.dumps(seed), encoding="utf-8")
    return path
