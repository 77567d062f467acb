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
