"""Training on any base: a Hugging Face model directory trains, writes a PEFT adapter that peft
loads (and that changes the base's output) and a GGUF adapter (needs the optional `train` extra).
"""

import json

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")
pytest.importorskip("peft")

from cli.main import main  # noqa: E402
from induction.library import extracted_record_id  # noqa: E402
from induction.loaders import load  # noqa: E402
from training.job import file_digest  # noqa: E402

CHATML = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
TINY_LLAMA = {
    "hidden_size": 32,
    "intermediate_size": 64,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "max_position_embeddings": 8192,
}


def tiny_hf_model(directory):
    """Save a random tiny Llama and a byte-level BPE tokenizer with a ChatML template."""
    from tokenizers import ByteLevelBPETokenizer
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    bpe = ByteLevelBPETokenizer()
    corpus = ["the user asks a question and the assistant answers it in detail"] * 10
    specials = ["<|im_start|>", "<|im_end|>"]
    bpe.train_from_iterator(corpus, vocab_size=300, special_tokens=specials, show_progress=False)
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=bpe._tokenizer,
        bos_token=specials[0],
        eos_token=specials[1],
        chat_template=CHATML,
    )
    torch.manual_seed(0)
    model = LlamaForCausalLM(LlamaConfig(vocab_size=len(tokenizer), **TINY_LLAMA))
    model.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return directory


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
    keys = [p.key for p in load(dialogues).pairs]
    extractions = tmp_path / "extractions.jsonl"
    extractions.write_text(
        "\n".join(
            json.dumps({"source": s, "record_id": r, "turn": t, "analysis": "",
                        "strategy": "Ask for the reverse order"})
            for s, r, t in keys
        )
    )  # fmt: skip
    library = tmp_path / "library"
    library.mkdir()
    (library / "records.jsonl").write_text(
        "\n".join(
            json.dumps({"id": extracted_record_id(*k), "text": "Ask for a variant",
                        "level": "extracted"})
            for k in keys
        )
    )  # fmt: skip
    return ["--dialogues", dialogues, "--extractions", extractions, "--library", library]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """Train two steps from a Hugging Face directory; return (base dir, out dir, exit code)."""
    from training import TrainingError
    from training.convert import converter_tree

    try:
        converter_tree()
    except TrainingError as exc:
        pytest.skip(str(exc))
    tmp = tmp_path_factory.mktemp("hf")
    base = tiny_hf_model(tmp / "tiny-llama")
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
