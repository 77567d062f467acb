"""Greedy leader clustering: the vectorised version equals the plain loop, and the rule's edges."""

from __future__ import annotations

import numpy as np
import pytest

from induction.cluster import Clustering, greedy_cluster, greedy_cluster_reference


def blobs(rng: np.random.Generator, n: int, dim: int, k: int, spread: float) -> np.ndarray:
    """n points scattered around k random directions: clusters that are not all singletons."""
    centres = rng.standard_normal((k, dim))
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    return centres[rng.integers(0, k, n)] + spread * rng.standard_normal((n, dim)) / np.sqrt(dim)


def assert_same(a: Clustering, b: Clustering) -> None:
    np.testing.assert_array_equal(a.labels, b.labels)
    np.testing.assert_array_equal(a.centres, b.centres)


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("threshold", [0.0, 0.3, 0.5, 0.8])
def test_equals_reference_on_clustered_and_random_data(seed, threshold):
    rng = np.random.default_rng(seed)
    n, dim = int(rng.integers(2, 260)), int(rng.choice([8, 16, 64]))
    data = [
        blobs(rng, n, dim, k=int(rng.integers(1, 12)), spread=float(rng.choice([0.5, 1.0, 1.5]))),
        rng.standard_normal((n, dim)),
    ]
    for x in data:
        expected = greedy_cluster_reference(x, threshold)
        for block in (1, 3, 7, 64, 1024):  # blocks and column tiles (8 blocks) of every size
            assert_same(greedy_cluster(x, threshold, block), expected)


def test_clustered_data_gives_nontrivial_clusters():
    x = blobs(np.random.default_rng(7), 400, 32, k=5, spread=0.6)
    result = greedy_cluster(x, 0.5, block=16)
    assert 5 <= result.count < 40
    assert max(len(m) for m in result.members()) > 20
    assert_same(result, greedy_cluster_reference(x, 0.5))


def test_every_item_is_in_one_cluster_whose_centre_is_above_threshold():
    x = blobs(np.random.default_rng(3), 300, 16, k=8, spread=1.0)
    labels, centres = greedy_cluster(x, 0.5, block=32)
    unit = x / np.linalg.norm(x, axis=1, keepdims=True)
    assert sorted(np.unique(labels)) == list(range(len(centres)))
    assert list(labels[centres]) == list(range(len(centres)))
    sims = np.einsum("ij,ij->i", unit, unit[centres[labels]])
    assert (sims > 0.5).all()
    assert np.all(np.diff(centres) > 0)


def test_members_partition_the_items_in_cluster_order():
    x = blobs(np.random.default_rng(1), 120, 16, k=4, spread=0.8)
    result = greedy_cluster(x)
    members = result.members()
    assert len(members) == result.count
    assert sorted(np.concatenate(members)) == list(range(120))
    for label, items in enumerate(members):
        assert result.centres[label] in items and (np.diff(items) > 0).all()
        assert (result.labels[items] == label).all()


def test_deterministic_and_independent_of_block_size():
    x = np.random.default_rng(5).standard_normal((500, 24))
    first = greedy_cluster(x, 0.2)
    assert_same(greedy_cluster(x, 0.2), first)
    assert_same(greedy_cluster(x.astype(np.float64), 0.2, block=13), first)


def test_similarity_equal_to_the_threshold_does_not_join():
    basis = np.eye(4, dtype=np.float32)  # every pair has cosine exactly 0
    assert greedy_cluster(basis, 0.0).count == 4
    assert greedy_cluster_reference(basis, 0.0).count == 4
    single = greedy_cluster(basis, -1e-6)
    assert single.count == 1 and list(single.labels) == [0, 0, 0, 0]


def test_extreme_thresholds():
    x = np.random.default_rng(2).standard_normal((50, 8))
    assert greedy_cluster(x, 1.0).count == 50
    assert greedy_cluster(np.abs(x), -1.0).count == 1


def test_tie_keeps_the_earlier_centre():
    x = np.array([[1, 0], [0, 1], [1, 1]], dtype=np.float32)
    assert list(greedy_cluster(x, 0.5).labels) == [0, 1, 0]
    assert list(greedy_cluster_reference(x, 0.5).labels) == [0, 1, 0]


@pytest.mark.parametrize(
    "rows, expected",
    [
        ([[1, 0], [0, 1], [0.6, 0.8]], [0, 1, 1]),  # a later item joins, then the nearer centre
        ([[1, 0], [0.6, 0.8], [0, 1]], [0, 1, 1]),  # an earlier member moves to a nearer centre
        ([[1, 0], [0.8, 0.6], [0, 1]], [0, 0, 1]),  # ... but not to a farther one
    ],
)
def test_members_move_only_to_a_strictly_closer_centre(rows, expected):
    x = np.array(rows, dtype=np.float32)
    assert list(greedy_cluster(x, 0.5).labels) == expected
    assert list(greedy_cluster_reference(x, 0.5).labels) == expected


def test_duplicates_join_their_first_copy_and_centres_never_move():
    x = np.array([[1, 0], [1, 0], [0.9, 0.1], [1, 0]], dtype=np.float32)
    result = greedy_cluster(x, 0.5)
    assert list(result.labels) == [0, 0, 0, 0] and list(result.centres) == [0]


def test_empty_single_and_zero_rows():
    empty = greedy_cluster(np.zeros((0, 8)))
    assert empty.count == 0 and empty.labels.shape == (0,) and empty.members() == []
    assert list(greedy_cluster(np.ones((1, 3))).labels) == [0]
    zeros = greedy_cluster(np.array([[0, 0], [1, 0], [0, 0]]), 0.5)
    assert zeros.count == 3


def test_rejects_non_matrix_input():
    with pytest.raises(ValueError, match="2-D"):
        greedy_cluster(np.ones(5))
