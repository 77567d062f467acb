"""What one training run is: its inputs and settings, and the id that ties checkpoints to it."""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

from dialogues.errors import InputError
from training.pairs import StrategyLevel

GGUF_MAGIC = b"GGUF"
BaseFormat = Literal["gguf", "hf"]
WEIGHTS_INDEX = "model.safetensors.index.json"
WEIGHTS = "model.safetensors"
TOKENIZER_FILES = ("tokenizer.json", "tokenizer.model")


class TrainingInputError(InputError, ValueError):
    """The run's inputs or output folder cannot be used; the message is one line."""


def base_format(base: Path) -> BaseFormat:
    """Return what `base` is: a GGUF file, or a Hugging Face model directory.

    A Hugging Face directory holds `config.json`, safetensors weights (`model.safetensors` or
    the index of its shards), a tokenizer, and a chat template (the base's own is used).

    Raises:
        TrainingInputError: `base` is neither, or a directory lacks one of those parts.
    """
    if base.is_dir():
        missing = [
            what
            for what, present in (
                ("config.json", (base / "config.json").is_file()),
                (f"{WEIGHTS} or {WEIGHTS_INDEX}", weights_file(base) is not None),
                (" or ".join(TOKENIZER_FILES), any((base / f).is_file() for f in TOKENIZER_FILES)),
                ("a chat template", has_chat_template(base)),
            )
            if not present
        ]
        if missing:
            raise TrainingInputError(
                f"--base {base}: not a Hugging Face model directory (no {', no '.join(missing)})"
            )
        return "hf"
    try:
        with base.open("rb") as handle:
            magic = handle.read(len(GGUF_MAGIC))
    except OSError as exc:
        raise TrainingInputError(f"--base {base}: cannot read: {exc.strerror}") from None
    if magic != GGUF_MAGIC:
        raise TrainingInputError(
            f"--base {base}: not a GGUF file nor a Hugging Face model directory"
        )
    return "gguf"


def weights_file(directory: Path) -> Path | None:
    """Return the file naming a Hugging Face directory's weights: the shard index, or the file."""
    for name in (WEIGHTS_INDEX, WEIGHTS):
        if (directory / name).is_file():
            return directory / name
    return None


def has_chat_template(directory: Path) -> bool:
    """Whether a Hugging Face directory's tokenizer comes with a chat template."""
    if any((directory / f).is_file() for f in ("chat_template.jinja", "chat_template.json")):
        return True
    config = directory / "tokenizer_config.json"
    try:
        return bool(json.loads(config.read_text(encoding="utf-8")).get("chat_template"))
    except (OSError, ValueError, AttributeError):
        return False


def file_digest(path: Path) -> str:
    """Return the sha256 of a file."""
    with path.open("rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()


@dataclass(frozen=True)
class TrainJob:
    """The inputs and settings of one `train-simulator` run (plain data, no torch)."""

    dialogues: list[Path]
    extractions: Path
    library: Path
    out: Path
    base: Path
    """A GGUF file or a Hugging Face model directory (`base_format`)."""
    with_strategy: bool = True
    level: StrategyLevel = "high"
    history_tokens: int = 2400
    max_length: int = 1024
    """Examples longer than this many tokens are left out (counted in the card): activation
    memory grows with length (~4.7 GB peak RSS at 1024 tokens)."""
    held_out: float = 0.1
    eval_limit: int | None = None
    """Evaluate on at most this many held-out pairs (None: all)."""
    threads: int = 1
    """Torch threads."""
    device: str = "auto"
    """`auto` (CUDA in bfloat16 when torch sees a GPU, else CPU), `cuda` or `cpu`."""
    lora: dict[str, Any] = field(default_factory=dict)
    loop: dict[str, Any] = field(default_factory=dict)
    endings: bool = False
    """Also train the end marker after each real dialogue the user ended (`build_end_pairs`)."""
    ending_weight: int = 1
    """Each ending pair of the training split is seen this many times an epoch: an ending is one
    target among a dialogue's several follow-ups (about 1 in 7 in SimulatorArena, 2% of all
    pairs), too rare for one epoch of LoRA to learn at its natural rate."""
    strategy_dropout: float = 0.0
    """Share of the training pairs trained on the contrast request instead of their strategy
    (`training.pairs.drop_strategies`); the `ideas` variant only."""
    length_cues: bool = False
    """Each request carries its real follow-up's length cue (`dialogues.lengths.length_cue`); at
    run time the cue is drawn at the real users' shares, stored in the card."""

    @property
    def variant(self) -> str:
        """`ideas` (strategy in the prompt) or `plain`."""
        return "ideas" if self.with_strategy else "plain"

    @property
    def base_weights(self) -> Path:
        """The file whose sha256 names the base: the GGUF, or a directory's weights (index)."""
        return self.base if self.base.is_file() else weights_file(self.base) or self.base

    @property
    def base_key(self) -> str:
        """The base's name among `sources`: the GGUF's, or `<directory>/<weights file>`."""
        weights = self.base_weights
        return self.base.name if weights == self.base else f"{self.base.name}/{weights.name}"

    def sources(self) -> dict[str, str]:
        """Return the sha256 of every input file, by name (a directory's base: its weights)."""
        files = [*self.dialogues, self.extractions, self.library / "records.jsonl"]
        digests = {path.name: file_digest(path) for path in files}
        return digests | {self.base_key: file_digest(self.base_weights)}

    def settings(self) -> dict[str, Any]:
        """Return the settings for the card."""
        return {
            "variant": self.variant,
            "strategy_level": self.level if self.with_strategy else None,
            "history_tokens": self.history_tokens,
            "max_length": self.max_length,
            "held_out_share": self.held_out,
            "eval_limit": self.eval_limit,
            "threads": self.threads,
            "device": self.device,
            "lora": self.lora,
            "loop": self.loop,
        } | (  # absent when off: old run ids hold
            ({"endings": True} if self.endings else {})
            | ({"ending_weight": self.ending_weight} if self.ending_weight != 1 else {})
            | ({"strategy_dropout": self.strategy_dropout} if self.strategy_dropout else {})
            | ({"length_cues": True} if self.length_cues else {})
        )

    def run_id(self, sources: dict[str, str]) -> str:
        """Hash what makes checkpoints reusable: data and settings, except how long to train."""
        settings = self.settings()
        settings["loop"] = {
            k: v for k, v in settings["loop"].items() if k not in ("epochs", "max_steps")
        }
        del settings["threads"], settings["device"]
        text = json.dumps({"sources": sources, "settings": settings}, sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    def as_dict(self) -> dict[str, Any]:
        """Return plain data (paths as text)."""
        data = asdict(self)
        return {k: str(v) if isinstance(v, Path) else v for k, v in data.items()}
