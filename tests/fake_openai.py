"""A fake OpenAI-compatible chat server for tests and benchmarks: real HTTP, no model.

Plain requests get a made-up sentence (different for every request, deterministic per request
body and count); structured requests (tools or a JSON schema response format) get arguments built
from the schema: enums pick one value, integers take their maximum, strings fit their length
limits. Every request body is recorded, so tests assert what was asked.

Fault modes make it a broken server instead (`--mode`, with `--delay` for the slow ones):
`trickle` sends a valid reply one byte every `delay` seconds, `empty` answers with empty content
and no tool call, `garbage-tools` gives tool calls whose arguments are not JSON (plain requests
still get sentences), `close-mid-reply` closes the connection halfway through the body,
`error500:N` answers HTTP 500 to the next N requests and then behaves, `hang` never answers,
`non-json` sends a body that is not JSON, `not-completion` sends JSON that is not a chat
completion, `empty-choices` a completion with `choices: []`, `null-message` one whose message is
null, `deep` a body of `size` nested arrays (default 100,000). `huge` makes every reply's content
`size` characters (default 5,000,000: a server that ignores `max_tokens`); `gzipbomb` sends a
completion whose content pads it to `size` bytes (default 200 MB), gzip-compressed to a few
hundred kB with `Content-Encoding: gzip`.

`GET /control?mode=MODE&size=N` switches a running server to another mode (and size).

Run it alone (`python tests/fake_openai.py --port 8011 --latency 0.05`) to point a batch at it.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import random
import socket
import sys
import threading
import time
import zlib
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

MODES = (
    "ok",
    "trickle",
    "empty",
    "garbage-tools",
    "close-mid-reply",
    "error500",
    "hang",
    "non-json",
    "not-completion",
    "empty-choices",
    "null-message",
    "deep",
    "huge",
    "gzipbomb",
)
"""How the server answers POSTs; `error500` takes a count (`error500:N`)."""

SIZES = {"huge": 5_000_000, "gzipbomb": 200_000_000, "deep": 100_000}
"""The default `size` of the modes that take one: characters, inflated bytes, nesting depth."""

WORDS = (
    "why how which what would could should explain compare contrast detail example case cost "
    "risk trade-off assumption evidence limit history future method step reason effect cause "
    "alternative option design measure test data source proof failure success scale speed memory "
    "user team budget plan timeline priority constraint context model theory practice rule "
    "exception pattern structure outline summary draft version feedback critique argument claim "
    "counterpoint benefit drawback metric goal outcome tool process stage phase edge boundary"
).split()


def fake_value(schema: dict[str, Any], rng: random.Random, defs: dict[str, Any]) -> Any:
    """Return a value that validates against a JSON schema (the subset pydantic emits)."""
    if "$ref" in schema:
        return fake_value(defs[schema["$ref"].rsplit("/", 1)[-1]], rng, defs)
    if "enum" in schema:
        return rng.choice(schema["enum"])
    if "const" in schema:
        return schema["const"]
    for key in ("anyOf", "oneOf", "allOf"):
        if key in schema:
            options = [s for s in schema[key] if s.get("type") != "null"] or schema[key]
            return fake_value(options[0], rng, defs)
    kind = schema.get("type", "object")
    if kind == "object":
        props = schema.get("properties", {})
        return {name: fake_value(sub, rng, defs) for name, sub in props.items()}
    if kind == "array":
        count = max(1, schema.get("minItems", 1))
        return [fake_value(schema.get("items", {}), rng, defs) for _ in range(count)]
    if kind == "integer":
        return schema.get("maximum", 5)
    if kind == "number":
        return float(schema.get("maximum", 1.0))
    if kind == "boolean":
        return True
    text = sentence(rng)
    limit = schema.get("maxLength")
    return text[:limit] if limit else text


def sentence(rng: random.Random) -> str:
    """Return a made-up question of 8-16 words."""
    words = rng.sample(WORDS, rng.randint(8, 16))
    return " ".join(words).capitalize() + "?"


class QuietServer(ThreadingHTTPServer):
    """A threading HTTP server that says nothing when a client drops its connection."""

    def handle_error(self, request: Any, client_address: Any) -> None:
        """Ignore a connection the client closed or reset (a client that stopped reading)."""
        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)


class FakeOpenAI:
    """The fake server; use as a context manager, then point a client at `base_url`.

    Args:
        latency: Seconds each request takes (to make concurrency and kills observable).
        fail: Requests whose body makes this return True get an HTTP 500.
        port: 0 picks a free port.
        mode: One of `MODES` (a fault to inject); `error500:N` fails the next N requests.
        delay: Seconds between the bytes of a `trickle` reply.
        size: The size of a `huge`, `gzipbomb` or `deep` reply (default: `SIZES`).
        models: The model names `GET /v1/models` lists (as vLLM lists its LoRA adapters).
    """

    def __init__(
        self,
        latency: float = 0.0,
        fail: Callable[[dict[str, Any]], bool] = lambda body: False,
        port: int = 0,
        mode: str = "ok",
        delay: float = 0.5,
        size: int | None = None,
        models: tuple[str, ...] = ("fake",),
    ) -> None:
        """Configure the server (it starts on enter)."""
        self.latency, self.fail, self.delay = latency, fail, delay
        self.models = models
        self._bombs: dict[int, bytes] = {}
        self.bomb_lock = threading.Lock()
        self.set_mode(mode, size)
        self.stopped = threading.Event()
        self.requests: list[dict[str, Any]] = []
        self.inflight = self.max_inflight = 0
        self.lock = threading.Lock()
        self.server = QuietServer(("127.0.0.1", port), self._handler())
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def set_mode(self, mode: str, size: int | None = None) -> None:
        """Answer as `mode` from now on (see `MODES`), with `size` for the modes that take one.

        Raises:
            ValueError: An unknown mode, or a size that is not positive.
        """
        name, _, count = mode.partition(":")
        if name not in MODES or bool(count) != (name == "error500"):
            raise ValueError(f"unknown mode {mode!r}: one of {', '.join(MODES)} (error500:N)")
        if size is not None and size < 1:
            raise ValueError(f"size must be positive, not {size}")
        self.mode, self.errors_left = name, int(count or 0)
        self.size = size if size is not None else SIZES.get(name, 0)
        if name == "gzipbomb":
            self.gzip_bomb()  # compressed now (~1 s for 200 MB), not in a request's time

    def gzip_bomb(self) -> bytes:
        """Return a gzip-compressed chat completion that inflates to `size` bytes."""
        size = self.size
        with self.bomb_lock:
            if size not in self._bombs:
                message = {"role": "assistant", "content": "PAD"}
                choice = {"index": 0, "message": message, "finish_reason": "stop"}
                completion = {"id": "chatcmpl-bomb", "object": "chat.completion", "created": 0}
                completion |= {"model": "fake", "choices": [choice]}
                head, _, tail = json.dumps(completion).encode().partition(b"PAD")
                pad = max(size - len(head) - len(tail), 0)
                packer = zlib.compressobj(9, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
                parts = [packer.compress(head)]
                block = b"a" * (1 << 20)
                for start in range(0, pad, len(block)):
                    parts.append(packer.compress(block[: pad - start]))
                parts += [packer.compress(tail), packer.flush()]
                self._bombs = {size: b"".join(parts)}
            return self._bombs[size]

    @property
    def base_url(self) -> str:
        """The OpenAI base URL (with `/v1`)."""
        return f"http://127.0.0.1:{self.server.server_address[1]}/v1"

    def __enter__(self) -> FakeOpenAI:
        """Start serving in a background thread."""
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        """Stop serving (and end replies still hanging or trickling)."""
        self.stopped.set()
        self.server.shutdown()
        self.server.server_close()

    def reply(self, body: dict[str, Any]) -> dict[str, Any]:
        """Return the chat completion for one request body."""
        with self.lock:
            self.requests.append(body)
            count = len(self.requests)
        digest = hashlib.sha256(json.dumps(body, sort_keys=True).encode()).digest()
        rng = random.Random(int.from_bytes(digest[:8], "big") + count)
        message: dict[str, Any] = {"role": "assistant", "content": None}
        tools = body.get("tools")
        response_format = body.get("response_format") or {}
        if self.mode == "empty":
            message["content"] = ""
        elif tools:
            function = tools[0]["function"]
            params = function.get("parameters", {})
            args = json.dumps(fake_value(params, rng, params.get("$defs", {})))
            if self.mode == "garbage-tools":
                args = "{'not': json" + args[:10]
            message["tool_calls"] = [
                {
                    "id": f"call_{count}",
                    "type": "function",
                    "function": {"name": function["name"], "arguments": args},
                }
            ]
        elif response_format.get("type") == "json_schema":
            schema = response_format["json_schema"]["schema"]
            message["content"] = json.dumps(fake_value(schema, rng, schema.get("$defs", {})))
        else:
            message["content"] = sentence(rng)
        if self.mode == "huge":
            text = sentence(rng) + " "
            message["content"] = (text * (self.size // len(text) + 1))[: self.size]
        prompt = sum(len(str(m.get("content") or "")) for m in body.get("messages", [])) // 4
        completion = len(json.dumps(message)) // 4
        return {
            "id": f"chatcmpl-{count}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": body.get("model", "fake"),
            "choices": [{"index": 0, "message": message, "finish_reason": "stop"}],
            "usage": {
                "prompt_tokens": prompt,
                "completion_tokens": completion,
                "total_tokens": prompt + completion,
            },
        }

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # keep-alive, as real servers do

            def log_message(self, *args: Any) -> None:
                pass

            def do_GET(self) -> None:  # noqa: N802 - http.server's naming
                url = urlsplit(self.path)
                if url.path != "/control":
                    models = [{"id": name, "object": "model"} for name in fake.models]
                    self._send(200, {"object": "list", "data": models})
                    return
                query = {key: values[-1] for key, values in parse_qs(url.query).items()}
                try:
                    size = int(query["size"]) if "size" in query else None
                    fake.set_mode(query.get("mode", fake.mode), size)
                except ValueError as exc:
                    self._send(400, {"error": {"message": str(exc), "type": "control"}})
                    return
                self._send(200, {"mode": fake.mode, "size": fake.size})

            def do_POST(self) -> None:  # noqa: N802 - http.server's naming
                length = int(self.headers.get("Content-Length", 0))
                body = json.loads(self.rfile.read(length) or b"{}")
                with fake.lock:
                    fake.inflight += 1
                    fake.max_inflight = max(fake.max_inflight, fake.inflight)
                try:
                    if fake.latency:
                        time.sleep(fake.latency)
                    self._answer(body)
                finally:
                    with fake.lock:
                        fake.inflight -= 1

            def _answer(self, body: dict[str, Any]) -> None:
                """Send the reply, or the fault of the server's mode."""
                mode = fake.mode
                with fake.lock:
                    scripted_error = mode == "error500" and fake.errors_left > 0
                    fake.errors_left -= scripted_error
                if fake.fail(body) or scripted_error:
                    error = {"error": {"message": "scripted failure", "type": "server"}}
                    self._send(500, error)
                elif mode == "hang":
                    with fake.lock:
                        fake.requests.append(body)
                    fake.stopped.wait()
                    self.close_connection = True
                elif mode == "non-json":
                    self._send(200, b"<html>this is not JSON</html>")
                elif mode == "not-completion":
                    self._send(200, {"status": "ok", "result": [1, 2, 3]})
                elif mode in ("empty-choices", "null-message"):
                    completion = fake.reply(body)
                    if mode == "empty-choices":
                        completion["choices"] = []
                    else:
                        completion["choices"][0]["message"] = None
                    self._send(200, completion)
                elif mode == "deep":
                    self._send(200, b"[" * fake.size + b"]" * fake.size)
                elif mode == "gzipbomb":
                    with fake.lock:
                        fake.requests.append(body)
                    self._send(200, fake.gzip_bomb(), encoding="gzip")
                else:
                    self._send(200, fake.reply(body))

            def _send(
                self, status: int, payload: dict[str, Any] | bytes, encoding: str | None = None
            ) -> None:
                data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                if encoding:
                    self.send_header("Content-Encoding", encoding)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                try:
                    if fake.mode == "trickle" and status == 200:
                        self._trickle(data)
                    elif fake.mode == "close-mid-reply" and status == 200:
                        self.wfile.write(data[: len(data) // 2])
                        self.wfile.flush()
                        self.close_connection = True
                        self.connection.shutdown(socket.SHUT_RDWR)
                    else:
                        self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):  # the client was killed
                    self.close_connection = True

            def _trickle(self, data: bytes) -> None:
                """Send `data` one byte every `delay` seconds until done or the server stops."""
                for i in range(len(data)):
                    if fake.stopped.wait(fake.delay):
                        self.close_connection = True
                        return
                    self.wfile.write(data[i : i + 1])
                    self.wfile.flush()

        return Handler


def main() -> None:
    """Serve until killed."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--latency", type=float, default=0.0)
    parser.add_argument("--mode", default="ok", help=f"{'|'.join(MODES)} (error500:N)")
    parser.add_argument("--delay", type=float, default=0.5, help="seconds per trickled byte")
    parser.add_argument("--size", type=int, help="size of a huge, gzipbomb or deep reply")
    args = parser.parse_args()
    try:
        fake = FakeOpenAI(
            args.latency, port=args.port, mode=args.mode, delay=args.delay, size=args.size
        )
    except ValueError as exc:
        parser.error(str(exc))
    with fake:
        print(fake.base_url, flush=True)  # noqa: T201 - the script's output
        threading.Event().wait()


if __name__ == "__main__":
    main()
