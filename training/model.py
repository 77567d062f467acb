"""The base model as served (the bundled GGUF, dequantised) with a LoRA adapter on top."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from peft import LoraConfig, PeftModel, get_peft_model
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedModel

from training.encode import Example

TARGET_MODULES = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
"""Every linear layer of a Llama block: at 135M parameters, adapting only attention learns
too little of a new voice, and the MLP adapters cost little more time on CPU."""


@dataclass(frozen=True)
class LoraSettings:
    """The adapter's shape."""

    rank: int = 8
    alpha: int = 16
    dropout: float = 0.0
    """No dropout: peft then skips a copy of every adapted layer's input (time and memory)."""

    def config(self) -> LoraConfig:
        """Return the peft configuration (plain LoRA: llama.cpp's converter takes nothing else)."""
        return LoraConfig(
            r=self.rank,
            lora_alpha=self.alpha,
            lora_dropout=self.dropout,
            target_modules=list(TARGET_MODULES),
            task_type="CAUSAL_LM",
        )

    def as_dict(self) -> dict[str, Any]:
        """Return plain data for the card."""
        return {**asdict(self), "target_modules": list(TARGET_MODULES)}


def load_base(gguf: Path) -> tuple[PreTrainedModel, Any]:
    """Load a GGUF model and its tokenizer with transformers (weights dequantised to float32)."""
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(
        gguf.parent, gguf_file=gguf.name, dtype=torch.float32
    )
    return model, tokenizer


def with_lora(model: PreTrainedModel, lora: LoraSettings) -> PeftModel:
    """Freeze `model` and wrap it with a fresh LoRA adapter."""
    return get_peft_model(model, lora.config())


def save_base_config(model: PreTrainedModel, directory: Path) -> Path:
    """Write the base model's config.json for llama.cpp's LoRA converter.

    A config built from a GGUF lacks `architectures`, which the converter dispatches on, and
    names the GGUF as its quantisation, which the converter refuses (the weights it would
    describe are not converted: only the adapter's are).
    """
    config = model.config.to_dict()
    config.pop("quantization_config", None)
    config["architectures"] = config.get("architectures") or [type(model).__name__]
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "config.json").write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")
    return directory


def target_loss(model: torch.nn.Module, example: Example) -> tuple[torch.Tensor, int]:
    """Return the summed cross-entropy of the target tokens and their number.

    Only the logits that predict target tokens are computed (`logits_to_keep`): the target
    is the end of the sequence, and a full vocabulary row per prompt token would cost ~200 KB
    each for nothing.
    """
    ids = torch.tensor([example.input_ids])
    n = example.target_length
    logits = model(input_ids=ids, logits_to_keep=n + 1).logits[0, :-1]
    targets = ids[0, -n:]
    loss = torch.nn.functional.cross_entropy(logits.float(), targets, reduction="sum")
    return loss, n
