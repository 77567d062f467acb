"""The training path on a tiny model: loss falls, epochs checkpoint and resume, the adapter
converts to GGUF and llama.cpp applies it (needs the optional `train` extra)."""

import importlib.util

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")
pytest.importorskip("peft")

from transformers import LlamaConfig, LlamaForCausalLM  # noqa: E402

from training.encode import IGNORE, Example  # noqa: E402
from training.loop import LoopSettings, latest_checkpoint, train  # noqa: E402
from training.model import LoraSettings, with_lora  # noqa: E402

TINY = {
    "vocab_size": 64,
    "hidden_size": 32,
    "intermediate_size": 64,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "max_position_embeddings": 128,
    "initializer_range": 0.5,  # lm_head rows large enough to express a confident next token
}


def tiny_model():
    torch.manual_seed(0)
    return with_lora(LlamaForCausalLM(LlamaConfig(**TINY)), LoraSettings(rank=8, alpha=32))


def examples(n: int) -> list[Example]:
    """Prompts of varied tokens, each followed by the same short target: learnable in steps."""
    out = []
    for i in range(n):
        prompt = [(i * 7 + j) % 50 + 10 for j in range(12)]
        target = [3, 4, 5, 6]
        out.append(Example(prompt + target, [IGNORE] * len(prompt) + target))
    return out


def quiet(event, progress):
    pass


def test_loss_falls_and_a_killed_run_resumes_from_its_last_epoch(tmp_path):
    data, held = examples(16), examples(20)[16:]
    settings = LoopSettings(epochs=2, learning_rate=3e-2, accumulation=2, warmup_steps=1)
    first = train(tiny_model(), data, held, settings, tmp_path, "run-a", quiet)

    assert [h.epoch for h in first] == [0, 1, 2]
    assert first[-1].held_out_loss < first[0].held_out_loss * 0.5
    assert first[-1].steps == 16 and first[-1].tokens_per_s > 0
    directory, state = latest_checkpoint(tmp_path)
    assert directory.name == "epoch-2" and state["step"] == 16

    longer = LoopSettings(epochs=3, learning_rate=3e-2, accumulation=2, warmup_steps=1)
    events = []
    resumed = train(
        tiny_model(), data, held, longer, tmp_path, "run-a", lambda e, p: events.append(e)
    )
    assert events[0] == "resume"
    assert [h.epoch for h in resumed] == [0, 1, 2, 3]
    assert resumed[:3] == first  # epochs 0-2 come from the checkpoint, not from a new run
    assert resumed[-1].steps == 24

    other = train(
        tiny_model(), data, held, settings, tmp_path, "run-b", lambda e, p: events.append(e)
    )
    assert other[0].steps == 0 and events[-1] != "resume"  # another run's checkpoint is not resumed


class Killed(Exception):
    pass


def test_a_run_killed_inside_an_epoch_resumes_there_and_ends_as_an_unbroken_run(tmp_path):
    data, held = examples(16), examples(20)[16:]
    settings = LoopSettings(
        epochs=2, learning_rate=3e-2, accumulation=2, warmup_steps=1, checkpoint_steps=3
    )  # 8 steps an epoch: checkpoints inside epoch 1 at steps 3 and 6, inside epoch 2 at 9, 12
    unbroken_model = tiny_model()
    unbroken = train(unbroken_model, data, held, settings, tmp_path / "a", "r", quiet)

    def kill_at_step_5(event, progress):
        if event == "step" and progress.step == 5:
            raise Killed

    with pytest.raises(Killed):
        train(tiny_model(), data, held, settings, tmp_path / "b", "r", kill_at_step_5)
    directory, state = latest_checkpoint(tmp_path / "b")
    assert directory.name == "epoch-1.step-3" and state["within"]["next"] == 6
    events = []
    resumed_model = tiny_model()
    resumed = train(
        resumed_model, data, held, settings, tmp_path / "b", "r", lambda e, p: events.append(e)
    )

    assert events[0] == "resume" and events.count("step") == 13  # steps 4-16, not 1-16
    same = ("epoch", "steps", "held_out_loss", "train_loss", "tokens", "complete")
    assert [[getattr(h, k) for k in same] for h in resumed] == [
        [getattr(h, k) for k in same] for h in unbroken
    ]
    for (name, a), b in zip(
        unbroken_model.named_parameters(), resumed_model.parameters(), strict=True
    ):
        if a.requires_grad:
            assert torch.equal(a, b), name
    assert latest_checkpoint(tmp_path / "b")[0].name == "epoch-2"  # the older ones are gone
    assert [d.name for d in (tmp_path / "b").iterdir()] == ["epoch-2"]


def test_max_steps_cuts_the_run_without_an_epoch_checkpoint(tmp_path):
    settings = LoopSettings(epochs=2, learning_rate=3e-2, accumulation=4, max_steps=3)
    history = train(tiny_model(), examples(16), examples(18)[16:], settings, tmp_path, "r", quiet)
    assert history[-1].steps == 3 and not history[-1].complete
    assert latest_checkpoint(tmp_path) is None


@pytest.fixture(scope="module")
def bundled_gguf():
    if importlib.util.find_spec("llama_cpp") is None:
        pytest.skip("llama-cpp-python is not installed")
    from runtime.server import ServerError, default_gguf

    try:
        return default_gguf()
    except ServerError:
        pytest.skip("the bundled model is not installed")


def greedy(model_path, prompt, **kwargs) -> str:
    from llama_cpp import Llama

    llm = Llama(model_path=str(model_path), n_ctx=128, n_threads=1, verbose=False, **kwargs)
    try:
        return llm(prompt, max_tokens=8, temperature=0.0)["choices"][0]["text"]
    finally:
        llm.close()


def test_the_adapter_converts_and_llama_cpp_applies_it(tmp_path, bundled_gguf):
    """An adapter of the bundled model's shape (random, non-zero) changes llama.cpp's output.

    Its base has the bundled SmolLM2's dimensions but two layers (fast to build): llama.cpp
    matches an adapter's tensors by name, so one covering blocks 0-1 applies to the full model.
    """
    from training.pipeline import export

    config = LlamaConfig(
        vocab_size=49152,
        hidden_size=576,
        intermediate_size=1536,
        num_hidden_layers=2,
        num_attention_heads=9,
        num_key_value_heads=3,
        tie_word_embeddings=True,
    )
    model = with_lora(LlamaForCausalLM(config), LoraSettings(rank=2, alpha=64))
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if "lora_B" in name:
                parameter.normal_(0, 0.05)
    adapter = export(model, tmp_path)

    assert adapter.name == "adapter.gguf" and adapter.stat().st_size > 0
    prompt = "<|im_start|>user\nName a colour.<|im_end|>\n<|im_start|>assistant\n"
    assert greedy(bundled_gguf, prompt, lora_path=str(adapter)) != greedy(bundled_gguf, prompt)
