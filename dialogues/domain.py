"""Whether a text holds code, and whether a strategy is specific to programming: the fit rule.

A strategy *fits* a dialogue unless it is programming-specific and the dialogue so far holds no
code (docs/metrics-fit.md). Both halves are transparent keyword rules, so a reader can check any
verdict by eye:

- a text *holds code* when it has a fenced block (three backticks or tildes) or at least one line
  that starts like a statement of a common language (`def `, `class `, `import `, `return `,
  `#include`, `function `, `const `, `public `, `print(`, `console.log(`, ...) or ends in `{`
  or `;`;
- a strategy is *programming-specific* when its text names one of `PROGRAMMING_WORDS` (code,
  function, test, error, paste, method, variable, compile, bug, debug, script, syntax,
  assertion, implementation, loop, class; plurals and -ing/-ed forms included).
"""

from __future__ import annotations

import re
from collections.abc import Iterable

PROGRAMMING_WORDS = (
    "code",
    "function",
    "test",
    "error",
    "paste",
    "method",
    "variable",
    "compile",
    "bug",
    "debug",
    "script",
    "syntax",
    "assertion",
    "implementation",
    "loop",
    "class",
)
"""The words that mark a strategy as programming-specific (the issue's list)."""

_PROGRAMMING = re.compile(
    r"\b(?:" + "|".join(PROGRAMMING_WORDS) + r")(?:s|es|d|ed|ing|r|rs)?\b", re.IGNORECASE
)
_FENCE = re.compile(r"^\s*(?:```|~~~)", re.MULTILINE)
_STATEMENT = re.compile(
    r"^\s*(?:def |class \w|import \w|from \w+ import |return\b|#include|function\s*\w*\(|"
    r"const \w|let \w|var \w|public |private |print\(|console\.log\(|for \(|while \()"
    r"|^[^\n]*[=()][^\n]*[{;]\s*$",
    re.MULTILINE,
)


def holds_code(text: str) -> bool:
    """Return whether `text` has a fenced block or a line that reads as a code statement."""
    return bool(_FENCE.search(text) or _STATEMENT.search(text))


def any_code(texts: Iterable[str]) -> bool:
    """Return whether any of `texts` holds code (e.g. the dialogue so far)."""
    return any(holds_code(t) for t in texts)


def is_programming_strategy(text: str) -> bool:
    """Return whether a strategy's text names a programming word (`PROGRAMMING_WORDS`)."""
    return bool(_PROGRAMMING.search(text))


def misfit(strategy: str, history: Iterable[str]) -> bool:
    """Return whether `strategy` is programming-specific while `history` holds no code."""
    return is_programming_strategy(strategy) and not any_code(history)
