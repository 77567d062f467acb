"""benchmarks/mmd_floor.py: a batch's MMD beside its seed users' and real users' own."""

from __future__ import annotations

import json

import numpy as np
import pytest

from benchmarks.mmd_floor import main, real_against_rest, sampled, user_turns
from evaluation.realism import MMD


def chat(*texts: str) -> dict:
    roles = ["user", "assistant"] * len(texts)
    return {"messages": [{"role": r, "content": t} for r, t in zip(roles, texts, strict=False)]}


def test_the_seed_files_user_turns_are_those_after_the_first(tmp_path):
    path = tmp_path / "seeds.jsonl"
    lines = [chat("Open", "a", "Why?", "b", "How?"), chat("Solo", "c")]
    path.write_text("\n".join(json.dumps(line) for line in lines) + "\n")
    assert user_turns(path) == ["Why?", "How?"]


def test_samples_are_drawn_at_the_given_size_without_replacement():
    rng = np.random.default_rng(1)
    rows, real = rng.normal(size=(30, 4)), rng.normal(size=(50, 4))
    whole = MMD(rows, real, 1.0)()[0]
    values = sampled(rows, real, 30, 1.0, draws=5)
    assert values.shape == (5,) and np.allclose(values, whole)  # every draw is all 30 rows
    smaller = sampled(rows, real, 10, 1.0, draws=20)
    assert len(set(np.round(smaller, 12))) > 1  # different samples
    assert np.array_equal(smaller, sampled(rows, real, 10, 1.0, draws=20))  # seeded


def test_real_against_rest_is_the_chance_level_under_a_shifted_sample():
    rng = np.random.default_rng(2)
    real, shifted = rng.normal(size=(400, 3)), rng.normal(loc=1.0, size=(400, 3))
    chance = real_against_rest(real, 100, 2.0, draws=10)
    assert chance.shape == (10,) and chance.mean() < 0.1
    assert sampled(shifted, real, 100, 2.0, draws=10).min() > chance.max()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["{missing}", "--seeds", "{seeds}"], "no such file"),
        (["{batch}", "--seeds", "{missing}"], "no such file"),
        (["{batch}", "--seeds", "{seeds}", "--reference", "{missing}"], "file not found"),
        (["{batch}", "--seeds", "{seeds}", "--draws", "0"], "--draws must be at least 1"),
        (["{batch}", "--seeds", "{short}"], "seed users: 1 user turns, need at least 2"),
        (["{batch}", "--seeds", "{seeds}", "--reference", "{seeds}"], "reference: 3 user turns"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(tmp_path, capsys, args, message):
    batch, seeds, short = (tmp_path / f"{name}.jsonl" for name in ("batch", "seeds", "short"))
    batch.write_text(json.dumps(chat("Open", "a", "Why?", "b", "How?", "c")) + "\n")
    seeds.write_text(json.dumps(chat("Open", "a", "So?", "b", "And?", "c", "Then?")) + "\n")
    short.write_text(json.dumps(chat("Open", "a", "So?")) + "\n")
    paths = {"missing": tmp_path / "nope.jsonl", "batch": batch, "seeds": seeds, "short": short}
    assert main([a.format(**paths) for a in args]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err
