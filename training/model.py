"""The base model (a GGUF, dequantised, or a Hugging Face directory) with a LoRA adapter on top."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from peft import LoraConfig, PeftModel, get_peft_model
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedModel

from training import TrainingError
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


@dataclass(frozen=True)
class Placement:
    """Where and in which precision the model trains."""

    device: str
    """`cuda` or `cpu`."""
    dtype: torch.dtype

    @property
    def dtype_name(self) -> str:
        """The dtype as text (`bfloat16`, `float32`)."""
        return str(self.dtype).removeprefix("torch.")


def place(requested: str = "auto") -> Placement:
    """Choose the device: CUDA in bfloat16 when torch sees a GPU (`auto`), else CPU in float32.

    Raises:
        TrainingError: `cuda` was asked for and torch sees no CUDA device.
    """
    cuda = torch.cuda.is_available()
    if requested == "cuda" and not cuda:
        raise TrainingError(
            f"--device cuda: torch {torch.__version__} sees no CUDA device "
            "(a CPU build, or no GPU); use --device auto or cpu"
        )
    if requested == "cpu" or not cuda:
        return Placement("cpu", torch.float32)
    dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float32
    return Placement("cuda", dtype)


def load_base(base: Path, placement: Placement | None = None) -> tuple[PreTrainedModel, Any]:
    """Load the base model and its tokenizer (with its own chat template) with transformers.

    `base` is a GGUF file (weights dequantised) or a Hugging Face model directory; the model is
    moved to `placement` (default: CPU, float32).
    """
    placement = placement or Placement("cpu", torch.float32)
    if base.is_dir():
        tokenizer = AutoTokenizer.from_pretrained(base)
        model = AutoModelForCausalLM.from_pretrained(base, dtype=placement.dtype)
    else:
        tokenizer = AutoTokenizer.from_pretrained(base.parent, gguf_file=base.name)
        model = AutoModelForCausalLM.from_pretrained(
            base.parent, gguf_file=base.name, dtype=torch.float32
        )
    return model.to(device=placement.device, dtype=placement.dtype), tokenizer


def describe_base(model: PreTrainedModel) -> dict[str, Any]:
    """Return what identifies the base's shape for the card (what an adapter must match)."""
    config = model.config
    return {
        "architecture": (config.architectures or [type(model).__name__])[0],
        "model_type": config.model_type,
        "hidden_size": config.hidden_size,
        "num_hidden_layers": config.num_hidden_layers,
        "vocab_size": config.vocab_size,
    }


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
    ids = torch.tensor([example.input_ids], device=next(model.parameters()).device)
    n = example.target_length
    logits = model(input_ids=ids, logits_to_keep=n + 1).logits[0, :-1]
    targets = ids[0, -n:]
    loss = torch.nn.functional.cross_entropy(logits.float(), targets, reduction="sum")
    return loss, n
