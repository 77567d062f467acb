"""A trained simulator on any server: a train-simulator folder on `--gguf`'s model (it must fit,
checked from the GGUF headers before anything starts), or a LoRA a server at a URL serves under
its own name (checked against its `/v1/models`)."""

from __future__ import annotations

import json
import struct

import pytest

from runtime import adapters
from runtime.settings import EMBEDDED_ALIAS, SettingsError, load_settings
from tests.cli_helpers import isolate_cli, run_cli, write_seed
from tests.fake_openai import FakeOpenAI

SIMULATOR_PROMPT = "You are a human user chatting with an AI assistant."


def _string(text: str) -> bytes:
    data = text.encode()
    return struct.pack("<Q", len(data)) + data


def write_gguf(path, metadata: dict[str, str], tensors: dict[str, tuple[int, ...]]):
    """Write a GGUF header (string metadata, tensor infos; no weights): all the check reads."""
    out = b"GGUF" + struct.pack("<IQQ", 3, len(tensors), len(metadata))
    for key, value in metadata.items():
        out += _string(key) + struct.pack("<I", 8) + _string(value)
    for name, shape in tensors.items():
        out += _string(name) + struct.pack(f"<I{len(shape)}Q", len(shape), *shape)
        out += struct.pack("<IQ", 0, 0)
    path.write_bytes(out)
    return path


MODEL = {"blk.0.attn_q.weight": (8, 8), "blk.0.ffn_down.weight": (16, 8)}
LORA = {"general.architecture": "llama", "general.type": "adapter", "adapter.type": "lora"}


def adapter_folder(tmp_path, name, metadata=LORA, hidden=8, rank=2):
    folder = tmp_path / name
    folder.mkdir()
    tensors = {
        "blk.0.attn_q.weight.lora_a": (hidden, rank),
        "blk.0.attn_q.weight.lora_b": (rank, hidden),
        "blk.0.ffn_down.weight.lora_a": (16, rank),
        "blk.0.ffn_down.weight.lora_b": (rank, hidden),
    }
    write_gguf(folder / "adapter.gguf", metadata, tensors)
    (folder / "card.json").write_text(json.dumps({"base": f"{name}-base"}))
    return folder


@pytest.fixture
def model(tmp_path, monkeypatch):
    for name in list(__import__("os").environ):
        if name.startswith("IDEAS_"):
            monkeypatch.delenv(name)
    return write_gguf(tmp_path / "mine.gguf", {"general.architecture": "llama"}, MODEL)


def test_a_fitting_folder_is_served_on_the_gguf_model(tmp_path, model):
    folder = adapter_folder(tmp_path, "fits")
    settings = load_settings(gguf=model, simulator={"adapter": str(folder)})
    adapter = settings.adapter_for("simulator")
    assert adapter.path == folder / "adapter.gguf"
    assert settings.model_for("simulator").model == adapter.alias
    assert adapter.alias.startswith(f"{EMBEDDED_ALIAS}+fits-")
    assert settings.adapter_for("assistant") is None  # `trained` means the bundled model's


@pytest.mark.parametrize(
    "kind, match",
    [
        ("wide", r"does not fit mine.gguf \(trained on wide-base\): it adapts blk.0.attn_q"),
        ("qwen2", r"is a LoRA adapter for a qwen2 model \(trained on qwen2-base\); mine.gguf is "),
        ("model", "not a LoRA adapter GGUF"),
        ("text", "not a GGUF file"),
        ("cut", "damaged GGUF header"),
    ],
)
def test_an_adapter_that_does_not_fit_is_one_line(tmp_path, model, kind, match):
    if kind == "wide":
        folder = adapter_folder(tmp_path, kind, hidden=16)
    elif kind == "qwen2":
        folder = adapter_folder(tmp_path, kind, LORA | {"general.architecture": "qwen2"})
    elif kind == "model":
        folder = adapter_folder(tmp_path, kind, {"general.architecture": "llama"})
    else:
        folder = adapter_folder(tmp_path, kind)
        data = (folder / "adapter.gguf").read_bytes()
        (folder / "adapter.gguf").write_bytes(b"some text" if kind == "text" else data[:40])
    with pytest.raises(SettingsError, match=match) as error:
        load_settings(gguf=model, simulator={"adapter": str(folder)})
    assert "\n" not in str(error.value)


def test_a_mismatch_stops_generate_before_anything_starts(tmp_path, model, capsys, monkeypatch):
    isolate_cli(monkeypatch, tmp_path / "store")  # starting the embedded server fails the test
    folder = adapter_folder(tmp_path, "wide", hidden=16)
    code, _, err = run_cli(
        capsys, "--seed", write_seed(tmp_path), "--gguf", model, "--simulator-adapter", folder
    )
    assert code == 2 and "does not fit mine.gguf" in err and len(err.strip().splitlines()) == 1


def test_the_shipped_simulator_fits_the_bundled_gguf():
    from runtime.server import ServerError, default_gguf

    try:
        bundled = default_gguf()
    except ServerError:
        pytest.skip("the bundled model is not installed")
    adapters.check_fits(adapters.SHIPPED / "ideas" / "adapter.gguf", bundled)


def generate_argv(tmp_path, fake, *extra):
    return [
        "--seed", write_seed(tmp_path), "--turns", "2", "--out", tmp_path / "out.json",
        "--base-url", fake.base_url, "--model", "base", "--library", "starter",
        "--store", tmp_path / "store", *extra,
    ]  # fmt: skip


def test_a_url_server_gets_the_adapters_name_for_the_simulator_only(tmp_path, capsys, monkeypatch):
    isolate_cli(monkeypatch, tmp_path / "store")
    with FakeOpenAI(models=("base", "user-sim")) as fake:
        argv = generate_argv(tmp_path, fake, "--simulator-adapter", "user-sim")
        code, _, err = run_cli(capsys, *argv)
    assert code == 0, err
    simulator = [r for r in fake.requests if SIMULATOR_PROMPT in json.dumps(r["messages"])]
    others = [r for r in fake.requests if r not in simulator]
    assert simulator and others
    assert {r["model"] for r in simulator} == {"user-sim"}
    assert {r["model"] for r in others} == {"base"}
    document = json.loads((tmp_path / "out.json").read_text())
    assert document["settings"]["roles"]["simulator"]["model"] == "user-sim"


def test_an_adapter_the_server_does_not_list_is_one_line(tmp_path, capsys, monkeypatch):
    isolate_cli(monkeypatch, tmp_path / "store")
    with FakeOpenAI(models=("base", "other-sim")) as fake:
        argv = generate_argv(tmp_path, fake, "--simulator-adapter", "user-sim")
        code, _, err = run_cli(capsys, *argv)
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert "'user-sim' is not served by" in err and "lists: base, other-sim" in err
    assert fake.requests == []  # nothing was generated
    assert not (tmp_path / "out.json").exists()


def test_sglangs_base_colon_adapter_passes_when_its_base_is_listed(model):
    from cli.options import check_served_adapters

    with FakeOpenAI(models=("org/base",)) as fake:
        url = {"base_url": fake.base_url}
        check_served_adapters(load_settings(simulator=url | {"adapter": "org/base:user-sim"}))
        with pytest.raises(Exception, match="'other:user-sim' is not served"):
            check_served_adapters(load_settings(simulator=url | {"adapter": "other:user-sim"}))


def test_a_server_that_does_not_answer_is_a_service_error(tmp_path, capsys, monkeypatch):
    isolate_cli(monkeypatch, tmp_path / "store")
    with FakeOpenAI() as fake:
        url = fake.base_url
    code, _, err = run_cli(
        capsys, "--seed", write_seed(tmp_path), "--base-url", url, "--simulator-adapter", "sim"
    )
    assert code == 1 and "did not list its models" in err and len(err.strip().splitlines()) == 1
