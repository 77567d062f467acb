"""LoRA adapters per role on the embedded model: which adapter a role runs with, how the server
is told, how its prefix cache keeps adapters apart and what a cached state holds (the real
server: test_embedded.py)."""

from __future__ import annotations

import importlib.util
import struct
import sys
import tracemalloc
from pathlib import Path

import pytest

from runtime import adapters
from runtime.server import EmbeddedServer
from runtime.settings import EMBEDDED_ALIAS, SettingsError, load_settings


@pytest.fixture(autouse=True)
def clean_env(monkeypatch):
    for name in list(__import__("os").environ):
        if name.startswith("IDEAS_"):
            monkeypatch.delenv(name)


def gguf(*metadata: tuple[str, str], version: int = 3) -> bytes:
    """A GGUF header holding string `metadata` (key, value) and no tensors."""

    def string(text: str) -> bytes:
        return struct.pack("<Q", len(text.encode())) + text.encode()

    header = b"GGUF" + struct.pack("<IQQ", version, 0, len(metadata))
    return header + b"".join(string(k) + struct.pack("<I", 8) + string(v) for k, v in metadata)


def lora(name: str) -> bytes:
    """The header of a LoRA adapter GGUF as llama.cpp's converter writes it, named `name`."""
    return gguf(
        ("general.architecture", "llama"),
        ("general.type", "adapter"),
        ("adapter.type", "lora"),
        ("general.name", name),
    )


@pytest.fixture
def shipped(tmp_path, monkeypatch):
    """Two shipped simulators with distinct contents, in a folder of the test's own."""
    for name, data in (("ideas", lora("ideas-adapter")), ("plain", lora("plain-adapter"))):
        (tmp_path / "sims" / name).mkdir(parents=True)
        (tmp_path / "sims" / name / "adapter.gguf").write_bytes(data)
    monkeypatch.setattr(adapters, "SHIPPED", tmp_path / "sims")
    return tmp_path / "sims"


def test_the_simulator_runs_with_the_shipped_simulator_trained_for_its_agent(shipped):
    settings = load_settings()
    ideas = settings.model_for("simulator")
    assert ideas.adapter == str((shipped / "ideas" / "adapter.gguf").resolve())
    assert ideas.model.startswith(f"{EMBEDDED_ALIAS}+ideas-") and len(ideas.model) == len(
        f"{EMBEDDED_ALIAS}+ideas-12345678"
    )
    plain = load_settings(agents={"simulator": "plain"}).model_for("simulator")
    assert plain.adapter.endswith("plain/adapter.gguf") and "+plain-" in plain.model
    for role in ("strategist", "critic", "assistant"):  # the other roles keep the base model
        assert settings.model_for(role).model == EMBEDDED_ALIAS
        assert settings.model_for(role).adapter is None


def test_none_is_the_prompted_simulator_on_the_bundled_model(shipped, monkeypatch):
    monkeypatch.setenv("IDEAS_SIMULATOR__ADAPTER", "none")
    simulator = load_settings().model_for("simulator")
    assert (simulator.model, simulator.adapter) == (EMBEDDED_ALIAS, None)


def test_a_trained_folder_is_used_and_named_by_its_content(shipped, tmp_path):
    mine = tmp_path / "models" / "mine"
    mine.mkdir(parents=True)
    (mine / "adapter.gguf").write_bytes(lora("one"))
    first = load_settings(simulator={"adapter": str(mine)}).model_for("simulator").model
    (mine / "adapter.gguf").write_bytes(lora("another"))  # retrained: another model name
    second = load_settings(simulator={"adapter": str(mine)}).model_for("simulator").model
    assert first.startswith(f"{EMBEDDED_ALIAS}+mine-") and first != second


def test_an_agent_without_a_trained_simulator_keeps_the_base_model(shipped):
    (shipped / "plain" / "adapter.gguf").unlink()
    settings = load_settings(agents={"simulator": "plain"})
    assert settings.adapter_for("simulator") is None
    assert settings.model_for("simulator").model == EMBEDDED_ALIAS


def test_with_a_server_url_nothing_changes(shipped):
    settings = load_settings(model={"base_url": "http://localhost:9/v1", "model": "big"})
    assert settings.model_for("simulator").model == "big"
    assert settings.adapter_for("simulator") is None


@pytest.mark.parametrize(
    "overrides, match",
    [
        ({"simulator": {"adapter": "no/such/folder"}}, "no LoRA adapter there"),
        (
            {"simulator": {"adapter": "SHIPPED", "base_url": "http://localhost:9/v1"}},
            "is a path, but the simulator runs on a server at a URL",
        ),
    ],
)
def test_bad_adapter_settings_are_one_line_errors(shipped, overrides, match):
    if overrides["simulator"]["adapter"] == "SHIPPED":
        overrides["simulator"]["adapter"] = str(shipped / "ideas")
    with pytest.raises(SettingsError, match=match) as error:
        load_settings(**overrides)
    assert "\n" not in str(error.value)


def test_the_fingerprint_names_the_simulator_model(shipped, monkeypatch):
    trained = load_settings().fingerprint()["models"]["simulator"]["model"]
    monkeypatch.setenv("IDEAS_SIMULATOR__ADAPTER", "none")
    assert "+ideas-" in trained
    assert load_settings().fingerprint()["models"]["simulator"]["model"] == EMBEDDED_ALIAS


def test_ablation_variants_pick_their_simulators(shipped):
    from cli.evaluate import variant_settings

    settings = load_settings()
    model = {
        name: variant_settings(settings, name).model_for("simulator").model
        for name in ("ideas", "plain", "prompted", "prompted-plain")
    }
    assert "+ideas-" in model["ideas"] and "+plain-" in model["plain"]
    assert model["prompted"] == model["prompted-plain"] == EMBEDDED_ALIAS
    assert variant_settings(settings, "prompted-plain").agents.simulator == "plain"


def test_a_variant_session_view_builds_clients_with_its_own_model(shipped):
    from wiring.session import Session

    built = []

    class Recording(Session):
        def embedded_url(self, model):
            built.append(model)
            return "http://127.0.0.1:9/v1"

    settings = load_settings()
    with Recording(settings) as session:
        from cli.evaluate import variant_settings

        trained = session.chat("simulator").model
        prompted = session.with_settings(variant_settings(settings, "prompted")).chat("simulator")
    assert "+ideas-" in trained.model_name and prompted.model.model_name == EMBEDDED_ALIAS
    assert built == [trained.model_name, EMBEDDED_ALIAS]


def test_the_server_is_told_every_adapter_by_name(tmp_path):
    adapter = tmp_path / "a.gguf"
    adapter.write_bytes(b"x")
    server = EmbeddedServer(gguf=tmp_path / "m.gguf", port=1234, adapters={"m+a": adapter})
    command = server.command()
    assert command[command.index("--adapter") + 1] == f"m+a={adapter}"
    assert "--lora_path" not in command  # never the whole server


# --- G12: a file that is not a LoRA adapter GGUF is refused before anything starts -------------

NOT_LORA = {
    "text": (b"this is not an adapter\n", "not a GGUF file"),
    "empty": (b"", "not a GGUF file"),
    "model": (
        gguf(("general.architecture", "llama"), ("general.type", "model")),
        "a GGUF model, not an adapter",
    ),
    "no type": (gguf(("general.architecture", "llama")), "a GGUF without adapter.type"),
    "control vector": (
        gguf(("general.type", "adapter"), ("adapter.type", "control_vector")),
        "a control_vector adapter",
    ),
    "truncated": (lora("x")[:40], "damaged GGUF header (cut short)"),
    "huge string": (
        b"GGUF" + struct.pack("<IQQQ", 3, 0, 1, 1 << 40),
        "damaged GGUF header (string too long)",
    ),
    "version 1": (gguf(("adapter.type", "lora"), version=1), "unsupported GGUF version 1"),
}


@pytest.mark.parametrize(("data", "what"), NOT_LORA.values(), ids=list(NOT_LORA))
def test_a_file_that_is_not_a_lora_adapter_is_a_one_line_settings_error(tmp_path, data, what):
    path = tmp_path / "adapter.gguf"
    path.write_bytes(data)
    for value in (path, tmp_path):  # the file, or a train-simulator folder holding it
        with pytest.raises(SettingsError) as error:
            load_settings(simulator={"adapter": str(value)})
        prefix = f"invalid settings: simulator.adapter: {path}: not a LoRA adapter GGUF ({what}"
        assert str(error.value).startswith(prefix)
        assert "\n" not in str(error.value)


def test_the_shipped_adapters_pass_the_lora_check():
    for agent in adapters.TRAINED_FOR_AGENT:
        path = adapters.shipped(agent)
        assert path is not None
        adapters.check_lora(path)
        assert adapters.adapter_file(str(path.parent)) == path


def test_a_missing_adapter_fails_before_starting(tmp_path):
    gguf = tmp_path / "m.gguf"
    gguf.write_bytes(b"x")
    server = EmbeddedServer(gguf=gguf, adapters={"m+a": tmp_path / "gone.gguf"})
    with pytest.raises(Exception, match="LoRA adapter not found"):
        server.start()
    assert server.process is None


needs_llama = pytest.mark.skipif(
    importlib.util.find_spec("llama_cpp") is None, reason="needs llama-cpp-python"
)


@pytest.fixture
def llama_server():
    sys.path.insert(0, str(Path(__file__).parents[1] / "runtime"))
    try:
        import llama_server

        yield llama_server
    finally:
        sys.path.pop(0)


@needs_llama
def test_adapter_arguments_are_taken_out_of_the_servers_own(llama_server):
    argv = [
        "prog",
        "--model",
        "m.gguf",
        "--adapter",
        "a=/x/a.gguf",
        "--port",
        "1",
        "--adapter",
        "b=/y/b.gguf",
    ]
    assert llama_server.take_adapters(argv) == {"a": "/x/a.gguf", "b": "/y/b.gguf"}
    assert argv == ["prog", "--model", "m.gguf", "--port", "1"]
    argv = ["prog", "--adapter=a=/x/a.gguf", "-h", "--model", "m.gguf"]
    assert llama_server.take_adapters(argv) == {"a": "/x/a.gguf"}
    assert argv == ["prog", "-h", "--model", "m.gguf"]


@pytest.mark.parametrize("value", ["nopath", "=/x/a.gguf", "a="])
def test_a_bad_adapter_argument_ends_the_process_with_its_form(llama_server, value, capsys):
    with pytest.raises(SystemExit) as caught:
        llama_server.take_adapters(["prog", "--model", "m.gguf", "--adapter", value])
    assert caught.value.code == 2
    assert "--adapter takes NAME=PATH" in capsys.readouterr().err


@needs_llama
def test_each_adapter_has_its_own_share_of_one_prefix_cache(llama_server):
    class State:
        def __init__(self, tokens):
            self.input_ids, self.llama_state_size = tokens, len(tokens)

    cache = llama_server.PrefixCache(capacity_bytes=1000)
    ideas, plain = (llama_server.AdapterCache(cache, mark) for mark in (-1, -2))
    cache[(1, 2, 3)] = State([1, 2, 3])
    ideas[(1, 2, 3, 4)] = State([1, 2, 3, 4])

    assert (1, 2, 3, 9) in ideas and ideas[(1, 2, 3, 9)].input_ids == [1, 2, 3, 4]
    assert (1, 2, 3, 9) not in plain
    assert cache[(1, 2, 3, 9)].input_ids == [1, 2, 3]  # the base model's own state
    plain[(1, 2)] = State([1, 2])  # another adapter's state supersedes nothing of the others
    assert len(cache.cache_state) == 3


@needs_llama
@pytest.mark.embedded
def test_a_cached_state_is_one_exact_buffer_and_restores_the_context(llama_server):
    from llama_cpp import Llama

    from runtime.server import default_gguf

    class Model(Llama):
        pass

    llama_server.instrument(Model)
    model = Model(str(default_gguf()), n_ctx=512, logits_all=False, verbose=False)
    prompt = "A note on paint. " * 60 + "The three primary colours are"  # a state of ~10 MB
    fresh = model.create_completion(prompt, max_tokens=6, temperature=0.0)["choices"][0]["text"]
    model.reset()
    model.eval(model.tokenize(prompt.encode()))
    tracemalloc.start()
    try:
        state = model.save_state()
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert memoryview(state.llama_state).nbytes == state.llama_state_size
    assert peak < 1.5 * state.llama_state_size  # copied once (llama-cpp-python: three times)
    assert state.scores.shape == (1, model.n_vocab())  # not the n_batch x vocabulary logits

    model.reset()
    model.eval(model.tokenize(b"Something else entirely, to overwrite the context"))
    model.load_state(state)
    assert model.n_tokens == len(model.tokenize(prompt.encode()))
    restored = model.create_completion(prompt, max_tokens=6, temperature=0.0)["choices"][0]
    assert restored["text"] == fresh


def test_the_simulator_adapter_flag_beats_the_environment(shipped, monkeypatch, tmp_path):
    import argparse

    from cli.options import add_agent_arguments, add_settings_arguments, settings_from_args

    parser = argparse.ArgumentParser()
    add_settings_arguments(parser)
    add_agent_arguments(parser)
    monkeypatch.setenv("IDEAS_SIMULATOR__TEMPERATURE", "0.3")
    monkeypatch.setenv("IDEAS_SIMULATOR__ADAPTER", "trained")
    settings = settings_from_args(parser.parse_args(["--simulator-adapter", "none"]))
    simulator = settings.model_for("simulator")
    assert (simulator.model, simulator.temperature) == (EMBEDDED_ALIAS, 0.3)
    with pytest.raises(SettingsError, match="no LoRA adapter there"):
        settings_from_args(parser.parse_args(["--simulator-adapter", str(tmp_path / "x")]))


@needs_llama
def test_the_server_refuses_an_adapter_that_is_not_a_lora_before_starting(tmp_path):
    gguf_path, junk = tmp_path / "m.gguf", tmp_path / "junk.gguf"
    gguf_path.write_bytes(b"x")
    junk.write_text("not an adapter")
    server = EmbeddedServer(gguf=gguf_path, adapters={"m+junk": junk})
    with pytest.raises(Exception, match=f"^{junk}: not a LoRA adapter GGUF"):
        server.start()
    assert server.process is None
