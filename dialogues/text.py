r"""Text rules shared by seeds, outputs and embeddings: blank text, lone surrogates, deep JSON.

A lone surrogate (`"\ud800"` in a JSON file, or a non-UTF-8 file name decoded by Python with
`surrogateescape`) cannot be encoded as UTF-8: writing or tokenising it fails. Such characters
are replaced by U+FFFD before text is stored, embedded or sent to a model.
"""

from __future__ import annotations

import json
import os
import re
import unicodedata
from typing import Any

_SURROGATE = re.compile("[\ud800-\udfff]")


def scrub(text: str) -> str:
    """Return `text` with every lone surrogate replaced by U+FFFD (the replacement character)."""
    return _SURROGATE.sub("\ufffd", text)


def is_blank(text: str) -> bool:
    """Whether `text` shows nothing: only whitespace and invisible format characters.

    Format characters (Unicode category Cf) include zero-width spaces and joiners, the word
    joiner and the byte-order mark, which `str.strip()` keeps.
    """
    return all(ch.isspace() or unicodedata.category(ch) == "Cf" for ch in text)


def display_path(path: str | os.PathLike[str]) -> str:
    r"""Return a file path as valid text: bytes that are not UTF-8 are shown as `\xNN`.

    Python keeps such bytes of a file name as lone surrogates, which no UTF-8 file (or
    terminal) accepts; this is the form written into documents and printed.
    """
    return os.fsencode(path).decode("utf-8", "backslashreplace")


def parse_json(text: str) -> Any:
    """`json.loads`, except that JSON nested too deeply is a `json.JSONDecodeError` too.

    The standard parser raises `RecursionError` for deep nesting (`[[[[...`), which readers that
    catch `JSONDecodeError` would let through as a traceback.
    """
    try:
        return json.loads(text)
    except RecursionError:
        raise json.JSONDecodeError("JSON nested too deeply", text, 0) from None


_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F]")


def parse_stored_json(data: bytes | str) -> Any:
    r"""Parse JSON that the app stored (a run directory's line, a manifest), strictly.

    Stricter than `json.loads` where another tool's copy could differ from what the app wrote:
    `NaN` and `Infinity` are refused (they are not JSON by RFC 8259, and strict readers of an
    export reject them), nesting too deep is a `json.JSONDecodeError`, and a lone surrogate
    escape (`"\ud800"`, which JSON allows but UTF-8 cannot hold) becomes U+FFFD in keys and
    values, so that nothing read can fail to be written again.

    Raises:
        ValueError: The data is not strict JSON (`json.JSONDecodeError`, `UnicodeDecodeError`).
    """
    raw = data if isinstance(data, bytes) else data.encode("utf-8", "surrogatepass")
    try:
        value = json.loads(data, parse_constant=_refuse_constant)
        return _scrubbed(value) if _SURROGATE_ESCAPE.search(raw) else value
    except RecursionError:
        raise json.JSONDecodeError("JSON nested too deeply", "", 0) from None


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def _scrubbed(value: Any) -> Any:
    if isinstance(value, str):
        return scrub(value)
    if isinstance(value, list):
        return [_scrubbed(item) for item in value]
    if isinstance(value, dict):
        return {scrub(key): _scrubbed(item) for key, item in value.items()}
    return value
