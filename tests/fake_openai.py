"""A fake OpenAI-compatible chat server for tests and benchmarks: real HTTP, no model.

Plain requests get a made-up sentence (different for every request, deterministic per request
body and count); structured requests (tools or a JSON schema response format) get arguments built
from the schema: enums pick one value, integers take their maximum, strings fit their length
limits. Every request body is recorded, so tests assert what was asked.

Run it alone (`python tests/fake_openai.py --port 8011 --latency 0.05`) to point a batch at it.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import random
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

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


class FakeOpenAI:
    """The fake server; use as a context manager, then point a client at `base_url`.

    Args:
        latency: Seconds each request takes (to make concurrency and kills observable).
        fail: Requests whose body makes this return True get an HTTP 500.
        port: 0 picks a free port.
    """

    def __init__(
        self,
        latency: float = 0.0,
        fail: Callable[[dict[str, Any]], bool] = lambda body: False,
        port: int = 0,
    ) -> None:
        """Configure the server (it starts on enter)."""
        self.latency, self.fail = latency, fail
        self.requests: list[dict[str, Any]] = []
        self.inflight = self.max_inflight = 0
        self.lock = threading.Lock()
        self.server = ThreadingHTTPServer(("127.0.0.1", port), self._handler())
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def base_url(self) -> str:
        """The OpenAI base URL (with `/v1`)."""
        return f"http://127.0.0.1:{self.server.server_address[1]}/v1"

    def __enter__(self) -> FakeOpenAI:
        """Start serving in a background thread."""
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        """Stop serving."""
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
        if tools:
            function = tools[0]["function"]
            params = function.get("parameters", {})
            args = fake_value(params, rng, params.get("$defs", {}))
            message["tool_calls"] = [
                {
                    "id": f"call_{count}",
                    "type": "function",
                    "function": {"name": function["name"], "arguments": json.dumps(args)},
                }
            ]
        elif response_format.get("type") == "json_schema":
            schema = response_format["json_schema"]["schema"]
            message["content"] = json.dumps(fake_value(schema, rng, schema.get("$defs", {})))
        else:
            message["content"] = sentence(rng)
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
                self._send(200, {"object": "list", "data": [{"id": "fake", "object": "model"}]})

            def do_POST(self) -> None:  # noqa: N802 - http.server's naming
                length = int(self.headers.get("Content-Length", 0))
                body = json.loads(self.rfile.read(length) or b"{}")
                with fake.lock:
                    fake.inflight += 1
                    fake.max_inflight = max(fake.max_inflight, fake.inflight)
                try:
                    if fake.latency:
                        time.sleep(fake.latency)
                    if fake.fail(body):
                        error = {"error": {"message": "scripted failure", "type": "server"}}
                        self._send(500, error)
                    else:
                        self._send(200, fake.reply(body))
                finally:
                    with fake.lock:
                        fake.inflight -= 1

            def _send(self, status: int, payload: dict[str, Any]) -> None:
                data = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                try:
                    self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):  # the client was killed
                    pass

        return Handler


def main() -> None:
    """Serve until killed."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--latency", type=float, default=0.0)
    args = parser.parse_args()
    with FakeOpenAI(args.latency, port=args.port) as fake:
        print(fake.base_url, flush=True)  # noqa: T201 - the script's output
        threading.Event().wait()


if __name__ == "__main__":
    main()
