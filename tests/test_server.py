"""Tests for the embedded llama.cpp server wrapper: fast checks, then real-model ones."""

import importlib.util
import json
import socket
import urllib.request
from pathlib import Path

import pytest

from runtime.server import (
    EmbeddedServer,
    ServerError,
    check_port_free,
    default_gguf,
    free_port,
)

needs_llama = pytest.mark.skipif(
    importlib.util.find_spec("llama_cpp") is None, reason="llama-cpp-python not installed"
)


@pytest.fixture
def bound_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield sock.getsockname()[1]


def test_free_port_is_bindable():
    port = free_port()
    check_port_free(port, "127.0.0.1")


def test_check_port_free_rejects_bound_port(bound_port):
    with pytest.raises(ServerError, match=f"^port {bound_port} is already in use$"):
        check_port_free(bound_port, "127.0.0.1")


@needs_llama
def test_busy_port_fails_before_starting(bound_port, tmp_path):
    gguf = tmp_path / "x.gguf"
    gguf.write_text("not a model")
    server = EmbeddedServer(gguf=gguf, port=bound_port)
    with pytest.raises(ServerError, match="already in use"):
        server.start()
    assert server.process is None


@needs_llama
def test_missing_gguf_fails_before_starting(tmp_path):
    missing = tmp_path / "missing.gguf"
    server = EmbeddedServer(gguf=missing)
    with pytest.raises(ServerError, match=f"^GGUF model not found: {missing}$"):
        server.start()
    assert server.process is None


@needs_llama
def test_directory_is_not_a_gguf(tmp_path):
    with pytest.raises(ServerError, match="GGUF model not found"):
        EmbeddedServer(gguf=tmp_path).start()


def test_missing_runtime_is_reported(monkeypatch, tmp_path):
    real_find_spec = importlib.util.find_spec

    def find_spec(name, *args):
        return None if name == "llama_cpp" else real_find_spec(name, *args)

    monkeypatch.setattr(importlib.util, "find_spec", find_spec)
    with pytest.raises(ServerError, match="scripts/setup.sh"):
        EmbeddedServer(gguf=tmp_path / "x.gguf").start()


def test_missing_model_package_is_reported(monkeypatch):
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *args: None)
    with pytest.raises(ServerError, match="^embedded model not installed: .*scripts/setup.sh"):
        default_gguf()


@needs_llama
def test_invalid_gguf_fails_fast_and_leaves_no_process(tmp_path):
    gguf = tmp_path / "x.gguf"
    gguf.write_text("this is not a model\n")
    log = tmp_path / "server.log"
    server = EmbeddedServer(gguf=gguf, log_path=log, startup_timeout=30)
    with pytest.raises(ServerError, match="exited with code") as caught:
        with server:
            pytest.fail("the context body must not run")
    assert "Failed to load model" in str(caught.value)
    assert "\n" not in str(caught.value)
    assert server.process is None
    assert log.stat().st_size > 0


def test_failed_start_keeps_its_temporary_log(tmp_path):
    gguf = tmp_path / "x.gguf"
    gguf.write_text("this is not a model\n")
    server = EmbeddedServer(gguf=gguf, startup_timeout=30)
    with pytest.raises(ServerError):
        server.start()
    assert server.log_path is not None and server.log_path.exists()
    server.log_path.unlink()


# --- the real embedded model (slow; `pytest -m embedded`) ---


@pytest.fixture(scope="module")
def server():
    pytest.importorskip("llama_cpp")
    try:
        gguf = default_gguf()
    except ServerError as error:
        pytest.skip(str(error))
    with EmbeddedServer(gguf=gguf) as running:
        process = running.process
        log = running.log_path
        assert log is not None and log.exists()
        yield running
    assert running.process is None
    assert process.returncode is not None
    assert not log.exists(), "a temporary server log outlived a clean stop"


@pytest.mark.embedded
def test_models_endpoint_lists_alias(server):
    assert server.base_url == f"http://127.0.0.1:{server.port}/v1"
    with urllib.request.urlopen(f"{server.base_url}/models", timeout=5) as response:
        body = json.load(response)
    assert [model["id"] for model in body["data"]] == [server.model]


@pytest.mark.embedded
def test_chat_completion_honours_max_tokens(server):
    from langchain_openai import ChatOpenAI

    llm = ChatOpenAI(
        base_url=server.base_url,
        api_key="x",
        model=server.model,
        temperature=0,
        extra_body={"max_tokens": 16},
    )
    reply = llm.invoke("Say hello.")
    assert isinstance(reply.content, str) and reply.content
    assert 0 < reply.usage_metadata["output_tokens"] <= 16


@pytest.mark.embedded
def test_port_of_running_server_is_refused(server):
    with pytest.raises(ServerError, match=f"^port {server.port} is already in use$"):
        EmbeddedServer(gguf=server.gguf, port=server.port).start()


@pytest.mark.embedded
def test_server_stops_when_body_raises(server, tmp_path):
    second = EmbeddedServer(gguf=server.gguf, log_path=tmp_path / "server.log")
    with pytest.raises(KeyError):
        with second:
            process = second.process
            assert process is not None and process.poll() is None
            raise KeyError("boom")
    assert second.process is None
    assert process.returncode is not None
    check_port_free(second.port, "127.0.0.1")
    second.stop()  # idempotent


def test_default_gguf_points_at_bundled_model():
    try:
        path = default_gguf()
    except ServerError:
        pytest.skip("embedded model not installed")
    assert path.name == "SmolLM2-135M-Instruct.Q4_1.gguf" and path.is_file()
    assert isinstance(path, Path)
