import threading

import numpy as np
import pytest

from stores import embeddings
from stores.embeddings import EmbeddingUnavailable, MiniLMEmbedding
from stores.memory import HashingEmbedding


@pytest.fixture(scope="module")
def minilm() -> MiniLMEmbedding:
    try:
        embeddings.model_files()
    except EmbeddingUnavailable as error:
        pytest.skip(str(error))
    return MiniLMEmbedding()


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    return float(a @ b)


def test_shape_dtype_and_unit_norm(minilm):
    texts = ["short", "a somewhat longer sentence about baking bread at home", "x " * 600]
    vectors = minilm.embed(texts)
    assert vectors.shape == (3, 384)
    assert vectors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)


def test_empty_input(minilm):
    assert minilm.embed([]).shape == (0, 384)


def test_similar_sentences_are_closer(minilm):
    bake, recipe, quantum = minilm.embed(
        ["How do I bake bread?", "Give me a bread recipe", "Explain quantum tunnelling"]
    )
    assert cosine(bake, recipe) > cosine(bake, quantum) + 0.2


def test_batching_and_order_do_not_change_vectors(minilm):
    texts = [f"sentence number {i} " + "word " * (i % 7) for i in range(23)]
    together = MiniLMEmbedding(batch_size=4).embed(texts)
    alone = np.stack([minilm.embed([t])[0] for t in texts])
    np.testing.assert_allclose(together, alone, atol=1e-4)


def test_chroma_protocol(minilm):
    result = minilm(["hello world"])
    assert len(result) == 1 and len(result[0]) == 384
    assert MiniLMEmbedding.name() == "ideas-minilm-int8"
    assert minilm.default_space() == "cosine"
    rebuilt = MiniLMEmbedding.build_from_config(minilm.get_config())
    assert rebuilt.get_config() == minilm.get_config()
    assert not minilm.is_legacy()


def test_thread_safe_shared_model(minilm):
    results: list[np.ndarray] = []

    def work() -> None:
        results.append(MiniLMEmbedding().embed(["the same text"]))

    threads = [threading.Thread(target=work) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(results) == 4
    for vectors in results[1:]:
        np.testing.assert_allclose(vectors, results[0], atol=1e-6)


def test_missing_model_raises_clear_error(monkeypatch):
    monkeypatch.setattr(embeddings, "_package_dir", lambda package: None)
    with pytest.raises(EmbeddingUnavailable, match="scripts/setup.sh"):
        embeddings.model_files()


def test_hashing_embedding_is_deterministic_and_normalised():
    first = HashingEmbedding(dim=64).embed(["Bread recipe, please", "", "bread"])
    second = HashingEmbedding(dim=64).embed(["Bread recipe, please", "", "bread"])
    np.testing.assert_array_equal(first, second)
    assert first.shape == (3, 64) and first.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(first[[0, 2]], axis=1), 1.0, atol=1e-6)
    assert not first[1].any()
    assert first[0] @ first[2] > 0.5
