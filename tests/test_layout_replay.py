"""The prompt-layout replay's server simulations, on hand-made token lists."""

from __future__ import annotations

import numpy as np
import pytest

from benchmarks.prefix_layout_replay import (
    Request,
    common_prefix,
    evaluated,
    ideal_cache,
    interleave,
    no_cache,
    ram_cache,
)


def req(prompt: list[int], completion: tuple[int, ...] = (), role: str = "r", dialogue: str = "d",
        turn: int = 1) -> Request:  # fmt: skip
    return Request(role, dialogue, turn, np.array(prompt), np.array(completion, dtype=int))


# Two roles of one dialogue, each turn's request extending that role's previous context.
A1 = req([1, 2, 3, 4], [5, 6], role="a")
B1 = req([9, 8, 7], [6], role="b")
A2 = req([1, 2, 3, 4, 5, 6, 10, 11], [12], role="a", turn=2)


def test_common_prefix_and_at_least_one_token_evaluated():
    assert common_prefix([1, 2, 3], [1, 2, 4, 5]) == 2
    assert common_prefix([1, 2], [1, 2, 3]) == 2
    assert common_prefix([], [1]) == 0
    assert evaluated([1, 2, 3], 0) == 3
    assert evaluated([1, 2, 3], 2) == 1
    assert evaluated([1, 2, 3], 3) == 1, "a full hit still evaluates one token"


def test_without_cache_only_the_previous_requests_context_is_reused():
    assert no_cache([A1, A2]) == [4, 2], "A2 extends A1's prompt and completion"
    assert no_cache([A1, B1, A2]) == [4, 3, 8], "B1 in between: A2 starts from scratch"


def test_ram_cache_resumes_a_role_from_its_own_earlier_state():
    pytest.importorskip("llama_cpp")
    assert ram_cache([A1, B1, A2], capacity=1000, bytes_per_token=1) == [4, 3, 2]


def test_ram_cache_reuses_the_context_when_it_holds_nothing_better():
    pytest.importorskip("llama_cpp")
    # A1's state (6 tokens) does not fit in 5 bytes: A2 still extends the context A1 left.
    assert ram_cache([A1, A2], capacity=5, bytes_per_token=1) == [4, 2]
    c = req([1, 2, 3, 4, 5, 6, 10, 20, 21], role="a", turn=3)
    assert ram_cache([A1, A2, c], capacity=1000, bytes_per_token=1) == [4, 2, 2]


def test_ram_cache_forgets_states_beyond_its_capacity():
    pytest.importorskip("llama_cpp")
    # A1's state (6 tokens) is evicted to make room for B1's (4): no resume for A2.
    assert ram_cache([A1, B1, A2], capacity=6, bytes_per_token=1) == [4, 3, 8]


def test_ideal_cache_reuses_any_earlier_context():
    other = req([1, 2, 3, 7], role="c")
    assert ideal_cache([A1, B1, A2]) == [4, 3, 2]
    assert ideal_cache([A1, B1, other]) == [4, 3, 1], "the longest prefix, not the last"
    assert ideal_cache([A1, A1]) == [4, 1]


def test_interleave_takes_each_dialogues_requests_of_a_turn_in_step():
    rs = [
        req([i], role=role, dialogue=d, turn=t)
        for i, (d, t, role) in enumerate(
            (d, t, role) for d in "xyz" for t in (1, 2) for role in ("s", "a")
        )
    ]
    order = [(r.dialogue, r.turn, r.role) for r in interleave(rs, 2)]
    assert order == [
        ("x", 1, "s"), ("y", 1, "s"), ("x", 1, "a"), ("y", 1, "a"),
        ("x", 2, "s"), ("y", 2, "s"), ("x", 2, "a"), ("y", 2, "a"),
        ("z", 1, "s"), ("z", 1, "a"), ("z", 2, "s"), ("z", 2, "a"),
    ]  # fmt: skip
    assert sorted(map(id, interleave(rs, 2))) == sorted(map(id, rs))
