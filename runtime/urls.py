"""Check the URLs a user configures, and redact the secrets they may carry before output.

A base URL can hold credentials: `http://user:sk-...@host/v1` or Azure's `...?api-key=...`.
Everything the project writes or prints shows a URL as `scheme://host:port/path` only: user
info, query string and fragment are replaced by `***` (see `redact_url`). `redact_urls` does
the same inside free text, such as an error message that quotes a URL.
"""

from __future__ import annotations

import re
from urllib.parse import urlsplit

REDACTED = "***"
_URL = re.compile(r"\b[a-zA-Z][a-zA-Z0-9+.-]*://[^\s'\"<>()\[\]]+")


def redact_url(url: str) -> str:
    """Return `url` without user info, query string or fragment (each replaced by `***`).

    Args:
        url: Any URL-like string; one that cannot be parsed is replaced whole by `***`.
    """
    try:
        parts = urlsplit(url)
        host = parts.hostname or ""
        port = parts.port
    except ValueError:
        return REDACTED if ("@" in url or "?" in url) else url
    if not parts.scheme or not parts.netloc:
        return url if "@" not in url and "?" not in url else REDACTED
    if ":" in host:
        host = f"[{host}]"
    netloc = (f"{REDACTED}@" if "@" in parts.netloc else "") + host
    if port is not None:
        netloc += f":{port}"
    text = f"{parts.scheme}://{netloc}{parts.path}"
    if parts.query:
        text += f"?{REDACTED}"
    if parts.fragment:
        text += f"#{REDACTED}"
    return text


def redact_urls(text: str) -> str:
    """Return `text` with every URL in it redacted (see `redact_url`)."""
    return _URL.sub(lambda match: redact_url(match.group(0)), text)


def check_url(url: str, *, default_scheme: str | None = None) -> str:
    """Return `url` if it is a usable http(s) URL; raise ValueError with a one-line reason.

    Args:
        url: The URL to check.
        default_scheme: Prepended (as `scheme://`) when `url` has none (Chroma's `host:port`).

    Raises:
        ValueError: The URL is empty, holds spaces, is not http(s), has no host, or its port is
            out of range.
            The message shows the URL redacted.
    """
    if not url.strip():
        raise ValueError("empty URL; leave the setting out instead")
    full = url if "://" in url or default_scheme is None else f"{default_scheme}://{url}"
    shown = redact_url(full)
    try:
        parts = urlsplit(full)
        port = parts.port
    except ValueError as exc:
        raise ValueError(f"{shown} is not a valid URL ({exc})") from None
    if any(ch.isspace() for ch in url):
        raise ValueError(f"{shown!r} is not a valid URL (it contains spaces)")
    if parts.scheme not in ("http", "https"):
        raise ValueError(f"{shown} is not an http:// or https:// URL")
    if not parts.hostname:
        raise ValueError(f"{shown} has no host")
    if port == 0:
        raise ValueError(f"{shown}: port must be 1-65535")
    return url
