"""The user-simulator trainer: real follow-ups -> LoRA fine-tune -> a llama.cpp adapter.

Only `training.pairs` and `training.encode` work without the optional `train` extra; the rest
imports torch, transformers and peft.
"""

from dialogues.errors import ServiceError

INSTALL_HINT = (
    "run `bash scripts/setup-train.sh` (the CPU torch wheel, the `train` extra and llama.cpp's "
    "LoRA converter)"
)
"""How to install the optional `train` extra, in one line."""


class TrainingError(ServiceError, RuntimeError):
    """Training cannot run or finish in this environment; the message is one line."""
