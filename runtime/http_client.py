"""HTTP clients for model servers that refuse a reply body over a size limit.

A server (or a proxy in front of it) that ignores `max_tokens` can send a reply of any size, and a
small gzip body can inflate to hundreds of MB. The clients made here count the body's bytes
*after* decompression while they read it, in pieces of at most 1 MiB (httpx2 inflates no more at
a time), and stop at the limit with `ReplyTooLarge`, so memory never grows past the limit plus
one piece. They are openai's default clients (its timeouts, connection limits and proxy
settings) with one response hook each: the hook puts the counting stream in front of the body
and drops `Content-Encoding`, since the body is decoded by then.

`ReplyTooLarge` is an `openai.OpenAIError`, which the openai client passes on as it is: a reply
over the limit is not retried.
"""

from __future__ import annotations

import datetime
import ssl
from collections.abc import AsyncIterator, Iterator
from functools import cache

import httpx2
import openai

from dialogues.errors import ServiceError


class ReplyTooLarge(ServiceError, openai.OpenAIError):
    """A reply body went over the size limit; the message is one line for the user."""

    def __init__(self, limit: int) -> None:
        """Say that a reply went over `limit` bytes."""
        super().__init__(f"a reply over {limit:,} bytes (the max_reply_bytes setting)")
        self.limit = limit


class _Capped(httpx2.SyncByteStream, httpx2.AsyncByteStream):
    """The decoded body of `raw` (a response as received), failing once past `limit` bytes."""

    def __init__(self, raw: httpx2.Response, limit: int) -> None:
        self.raw, self.limit, self.size = raw, limit, 0

    @property
    def elapsed(self) -> datetime.timedelta | None:
        """The response time the client's own stream measured (httpx2 reads it from here)."""
        return getattr(self.raw.stream, "elapsed", None)

    def _count(self, chunk: bytes) -> bytes:
        self.size += len(chunk)
        if self.size > self.limit:
            raise ReplyTooLarge(self.limit)
        return chunk

    def __iter__(self) -> Iterator[bytes]:
        for chunk in self.raw.iter_bytes():
            yield self._count(chunk)

    async def __aiter__(self) -> AsyncIterator[bytes]:
        async for chunk in self.raw.aiter_bytes():
            yield self._count(chunk)

    def close(self) -> None:
        self.raw.close()

    async def aclose(self) -> None:
        await self.raw.aclose()


def _cap(response: httpx2.Response, limit: int) -> None:
    """Make `response` yield its decoded body through a `_Capped` stream."""
    raw = httpx2.Response(
        response.status_code,
        headers=response.headers,
        stream=response.stream,
        request=response.request,
        extensions=response.extensions,
    )
    response.stream = _Capped(raw, limit)
    response.headers = httpx2.Headers(
        [
            (key, value)
            for key, value in response.headers.multi_items()
            if key.lower() not in ("content-encoding", "content-length")
        ]
    )


@cache
def _ssl_context() -> ssl.SSLContext:
    """The TLS settings every client shares (building them takes ~0.2 s; clients are many)."""
    return httpx2.create_ssl_context()


def capped_async_client(max_reply_bytes: int) -> httpx2.AsyncClient:
    """Return openai's default async client, refusing reply bodies over `max_reply_bytes`."""

    async def cap(response: httpx2.Response) -> None:
        _cap(response, max_reply_bytes)

    return openai.DefaultAsyncHttpxClient(verify=_ssl_context(), event_hooks={"response": [cap]})


def capped_sync_client(max_reply_bytes: int) -> httpx2.Client:
    """Return openai's default client, refusing reply bodies over `max_reply_bytes`."""
    return openai.DefaultHttpxClient(
        verify=_ssl_context(),
        event_hooks={"response": [lambda response: _cap(response, max_reply_bytes)]},
    )
