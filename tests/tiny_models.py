"""A tiny random-weights Llama in Hugging Face format, for training and serving tests.

Its fixtures (`tiny_base`, `tiny_gguf`) live in `tests/conftest.py`; this module only builds
the model, so importing it needs neither torch nor transformers.
"""

from __future__ import annotations

import json
from pathlib import Path

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
    "initializer_range": 0.2,
}
"""The tiny Llama's shape. `initializer_range` is 10x the default: with 0.02, the frozen output
layer times the normalised 32-wide state caps every logit near 0.6, so no LoRA adapter can make
a token much likelier than the rest and the ending round trip could not overfit."""


def tiny_hf_model(directory: Path) -> Path:
    """Save a random tiny Llama and a ChatML-templated BPE tokenizer shaped like Llama 2's.

    Byte fallback (`<0x00>`..`<0xFF>`) and the `▁` space make llama.cpp's converter read it as
    a Llama vocabulary; a GPT-2 style byte-level BPE would need a pre-tokenizer it recognises.
    """
    import torch
    from tokenizers import Tokenizer, decoders, models, normalizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    specials = ["<unk>", "<|im_start|>", "<|im_end|>"]
    byte_tokens = [f"<0x{i:02X}>" for i in range(256)]
    bpe = Tokenizer(models.BPE(byte_fallback=True, unk_token="<unk>"))
    bpe.normalizer = normalizers.Sequence([normalizers.Prepend("▁"), normalizers.Replace(" ", "▁")])
    bpe.decoder = decoders.Sequence(
        [decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse(),
         decoders.Strip(" ", 1, 0)]
    )  # fmt: skip
    corpus = ["the user asks a question and the assistant answers it in detail"] * 10
    trainer = trainers.BpeTrainer(
        vocab_size=320, special_tokens=specials + byte_tokens, show_progress=False
    )
    bpe.train_from_iterator(corpus, trainer)
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=bpe,
        bos_token=specials[1],
        eos_token=specials[2],
        unk_token=specials[0],
        chat_template=CHATML,
    )
    torch.manual_seed(0)
    model = LlamaForCausalLM(LlamaConfig(vocab_size=len(tokenizer), **TINY_LLAMA))
    model.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return directory


def training_inputs(tmp_path: Path, dialogues: Path, strategy: str) -> list:
    """Team extractions and a library naming `strategy` for every pair of `dialogues`.

    Returns the `train-simulator` arguments for them: `--dialogues`, `--extractions`,
    `--library`.
    """
    from induction.library import extracted_record_id
    from induction.loaders import load

    keys = [p.key for p in load(dialogues).pairs]
    extractions = tmp_path / "extractions.jsonl"
    extractions.write_text(
        "\n".join(
            json.dumps({"source": s, "record_id": r, "turn": t, "analysis": "",
                        "strategy": strategy})
            for s, r, t in keys
        )
    )  # fmt: skip
    library = tmp_path / "library"
    library.mkdir()
    (library / "records.jsonl").write_text(
        "\n".join(
            json.dumps({"id": extracted_record_id(*k), "text": strategy, "level": "extracted"})
            for k in keys
        )
    )
    return ["--dialogues", dialogues, "--extractions", extractions, "--library", library]
