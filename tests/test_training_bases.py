"""Training on any base: a Hugging Face model directory trains, writes a PEFT adapter that peft
loads (and that changes the base's output) and a GGUF adapter (needs the optional `train` extra).
"""

import json

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")
pytest.importorskip("peft")

from cli.main import main  # noqa: E402
from tests.tiny_models import training_inputs  # noqa: E402
from training.job import file_digest  # noqa: E402


def training_data(tmp_path, n=8):
    """Dialogues, team extractions and a library naming a strategy for every pair."""
    dialogues = tmp_path / "chats.jsonl"
    rows = [
        {"id": f"d{i}", "messages": [
            {"role": "user", "content": f"How do I sort {i} items?"},
            {"role": "assistant", "content": "Use sorted()."},
            {"role": "user", "content": "And in reverse?"},
        ]}
        for i in range(n)
    ]  # fmt: skip
    dialogues.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    return training_inputs(tmp_path, dialogues, "Ask for the reverse order")


@pytest.fixture(scope="module")
def trained(tmp_path_factory, tiny_base):
    """Train two steps from a Hugging Face directory; return (base dir, out dir, exit code)."""
    from training import TrainingError
    from training.convert import converter_tree

    try:
        converter_tree()
    except TrainingError as exc:
        pytest.skip(str(exc))
    tmp = tmp_path_factory.mktemp("hf")
    base = tiny_base
    out = tmp / "sim"
    argv = [
        "train-simulator", *training_data(tmp), "--base", base, "--out", out,
        "--held-out", "0.25", "--max-steps", "2", "--accumulation", "2", "--epochs", "1",
        "--learning-rate", "0.05", "--max-length", "8192", "--device", "cpu",
    ]  # fmt: skip
    return base, out, main([str(a) for a in argv])


def test_a_hugging_face_directory_trains_into_both_adapter_formats(trained):
    base, out, code = trained
    assert code == 0
    files = {p.name for p in out.iterdir()}
    assert {"adapter_config.json", "adapter_model.safetensors", "adapter.gguf"} <= files
    assert {"card.json", "CARD.md"} <= files and "README.md" not in files
    card = json.loads((out / "card.json").read_text())
    assert card["base_model"] | {"sha256": None} == {
        "name": "tiny-llama",
        "format": "hf",
        "weights": "model.safetensors",
        "sha256": None,
        "architecture": "LlamaForCausalLM",
        "model_type": "llama",
        "hidden_size": 32,
        "num_hidden_layers": 2,
        "vocab_size": card["base_model"]["vocab_size"],
    }
    assert card["base_model"]["sha256"] == file_digest(base / "model.safetensors")
    assert (card["device"], card["dtype"]) == ("cpu", "float32")
    assert card["adapter"]["file"] == "adapter.gguf" and card["adapter"]["no_gguf"] is None
    assert "vLLM" in (out / "CARD.md").read_text()


def test_the_peft_adapter_loads_with_peft_and_changes_the_output(trained):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    base, out, code = trained
    assert code == 0
    ids = torch.tensor([[1, 5, 9, 40, 80, 120]])
    plain = AutoModelForCausalLM.from_pretrained(base).eval()
    with torch.no_grad():
        before = plain(input_ids=ids).logits
        tuned = PeftModel.from_pretrained(plain, out).eval()
        after = tuned(input_ids=ids).logits
    assert (after - before).abs().max().item() > 1e-3


def test_its_gguf_adapter_is_refused_on_a_model_it_does_not_fit(trained, monkeypatch):
    """The tiny model's adapter on the bundled SmolLM2 (576 wide, not 32): one line, no server."""
    from runtime.server import ServerError, default_gguf
    from runtime.settings import SettingsError, load_settings

    try:
        bundled = default_gguf()
    except ServerError:
        pytest.skip("the bundled model is not installed")
    _, out, code = trained
    assert code == 0
    with pytest.raises(SettingsError, match=r"does not fit .* \(trained on tiny-llama\)") as error:
        load_settings(gguf=bundled, simulator={"adapter": str(out)})
    assert "\n" not in str(error.value)


def test_cuda_asked_for_without_a_gpu_is_one_line_and_leaves_no_out(trained, tmp_path, capsys):
    if torch.cuda.is_available():
        pytest.skip("torch sees a GPU here")
    base, _, _ = trained
    out = tmp_path / "sim"
    argv = ["train-simulator", *training_data(tmp_path), "--base", base, "--out", out,
            "--device", "cuda"]  # fmt: skip
    code = main([str(a) for a in argv])
    err = capsys.readouterr().err.strip()
    assert code == 1 and "--device cuda" in err and "no CUDA device" in err and "\n" not in err
    assert not out.exists()


@pytest.mark.embedded
def test_its_gguf_adapter_loads_in_the_embedded_server_and_changes_the_output(trained, tiny_gguf):
    """One embedded server on the tiny GGUF: the adapter's name answers otherwise than the base."""
    import httpx

    from runtime.adapters import check_fits
    from runtime.server import EmbeddedServer

    _, out, _ = trained
    adapter = out / "adapter.gguf"
    check_fits(adapter, tiny_gguf)  # the check made before a server starts lets it through
    messages = [{"role": "user", "content": "the user asks a question"}]

    def ask(model: str) -> str:
        body = {"model": model, "messages": messages, "temperature": 0, "seed": 0,
                "max_tokens": 24}  # fmt: skip
        reply = httpx.post(f"{server.base_url}/chat/completions", json=body, timeout=60)
        return reply.raise_for_status().json()["choices"][0]["message"]["content"]

    served = {"tiny+sim": adapter}
    with EmbeddedServer(
        gguf=tiny_gguf, alias="tiny", adapters=served, n_ctx=512, prompt_cache_bytes=None
    ) as server:
        plain, tuned, plain_again, tuned_again = (
            ask("tiny"),
            ask("tiny+sim"),
            ask("tiny"),
            ask("tiny+sim"),
        )
    assert plain and tuned != plain  # the adapter is loaded and applied
    assert (plain_again, tuned_again) == (plain, tuned)  # greedy: the same each time


def test_the_shipped_adapter_on_the_tiny_gguf_is_one_line_before_the_server(
    trained, tiny_gguf, tmp_path, capsys, monkeypatch
):
    """SmolLM2-135M's simulator (576 wide) on the 32-wide tiny model: refused, nothing started."""
    from runtime.adapters import SHIPPED
    from tests.cli_helpers import isolate_cli, run_cli, write_seed

    isolate_cli(monkeypatch, tmp_path / "store")  # starting the embedded server fails the test
    shipped = SHIPPED / "ideas"
    code, _, err = run_cli(
        capsys, "--seed", write_seed(tmp_path), "--gguf", tiny_gguf, "--simulator-adapter", shipped
    )
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert f"does not fit {tiny_gguf.name}" in err and "it adapts blk.0." in err
