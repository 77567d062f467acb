"""The guidance benchmark's pure parts: which recorded turns it redrafts, and bad input."""

from __future__ import annotations

import json

import numpy as np
import pytest

from benchmarks.guidance import main, top1, turns_of


def turn(i: int, strategy: str | None, candidates: list[str]) -> dict:
    return {
        "index": i + 1,
        "candidates": [{"id": f"s{k}", "text": t} for k, t in enumerate(candidates)],
        "strategy": {"id": "s", "text": strategy} if strategy else None,
        "instruction": f"user {i + 1}",
    }


def batch(tmp_path, dialogues: list[dict]):
    path = tmp_path / "dialogues.jsonl"
    path.write_text("".join(json.dumps(d) + "\n" for d in dialogues))
    return path


def test_each_turn_is_redrafted_from_the_messages_before_it(tmp_path):
    opening = [{"role": "user", "content": "seed"}, {"role": "assistant", "content": "answer 0"}]
    messages = list(opening)
    for i in range(3):
        messages += [{"role": "user", "content": f"user {i + 1}"}]
        messages += [{"role": "assistant", "content": f"answer {i + 1}"}]
    turns = [
        turn(0, "A", ["A", "B"]),
        turn(1, None, ["A", "B"]),  # no strategy: nothing to follow
        turn(2, "C", ["A", "B"]),  # its strategy is no candidate: adherence cannot rank it
    ]
    path = batch(tmp_path, [{"messages": messages, "turns": turns}])
    [(history, found)] = turns_of(path, 10)
    assert found == turns[0]
    assert history == opening  # the turn's instruction, "user 1", is not in its history
    assert found["instruction"] == messages[len(history)]["content"]


def test_the_sample_is_shuffled_the_same_way_every_time(tmp_path):
    turns = [turn(i, "A", ["A", "B"]) for i in range(6)]
    messages = [{"role": "user", "content": "seed"}, {"role": "assistant", "content": "a"}]
    for t in turns:
        messages += [
            {"role": "user", "content": t["instruction"]},
            {"role": "assistant", "content": "a"},
        ]
    path = batch(tmp_path, [{"messages": messages, "turns": turns}])
    first = [t["instruction"] for _, t in turns_of(path, 4)]
    assert first == [t["instruction"] for _, t in turns_of(path, 4)]
    assert len(first) == 4 and len(set(first)) == 4


def test_top1_is_the_evals_adherence():
    vectors = {"A": [1.0, 0.0], "B": [0.0, 1.0], "near A": [0.9, 0.1], "near B": [0.1, 0.9]}

    def embed(texts):
        rows = np.array([vectors[t] for t in texts])
        return rows / np.linalg.norm(rows, axis=1, keepdims=True)

    record = turn(0, "A", ["A", "B"])
    assert top1(embed, "near A", record)
    assert not top1(embed, "near B", record)


def test_bad_input_is_one_line_and_exit_2(tmp_path, capsys):
    assert main(["--batch", str(tmp_path / "missing.jsonl")]) == 2
    assert capsys.readouterr().err.count("\n") == 1
    empty = batch(tmp_path, [{"messages": [], "turns": [turn(0, None, ["A", "B"])]}])
    assert main(["--batch", str(empty)]) == 2
    assert "no turn with a strategy" in capsys.readouterr().err
    assert main(["--batch", str(empty), "--gammas", "1,x"]) == 2


def test_a_sampling_value_the_endpoint_refuses_is_one_line_and_exit_2(tmp_path, capsys):
    messages = [{"role": "user", "content": "seed"}, {"role": "assistant", "content": "a"}]
    messages += [{"role": "user", "content": "user 1"}, {"role": "assistant", "content": "a"}]
    path = batch(tmp_path, [{"messages": messages, "turns": [turn(0, "A", ["A", "B"])]}])
    assert main(["--batch", str(path), "--top-p", "0"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: --top-p:")


def test_a_missing_adapter_is_one_line_and_exit_2(tmp_path, capsys):
    messages = [{"role": "user", "content": "seed"}, {"role": "assistant", "content": "a"}]
    messages += [{"role": "user", "content": "user 1"}, {"role": "assistant", "content": "a"}]
    path = batch(tmp_path, [{"messages": messages, "turns": [turn(0, "A", ["A", "B"])]}])
    assert main(["--batch", str(path), "--adapter", str(tmp_path / "none.gguf")]) == 2
    assert capsys.readouterr().err == f"error: {tmp_path / 'none.gguf'}: file not found\n"


def test_held_out_turns_are_real_follow_ups_the_simulator_never_trained_on(tmp_path):
    from benchmarks.guidance import ROOT, held_out_turns
    from induction.loaders import load
    from stores.packaged import read_records
    from tests.data_paths import DATA
    from training.pairs import dialogue_of

    if not DATA.is_dir():
        pytest.skip("needs ../shared/data")
    library = ROOT / "stores" / "libraries" / "default"
    high = {r.text for r in read_records(library) if r.level == "high"}
    pairs = load(DATA / "oasst1-en100" / "en_100_tree.jsonl").pairs
    held = sorted({dialogue_of(p) for p in pairs})[:5]
    card = tmp_path / "card.json"
    card.write_text(json.dumps({"counts": {"held_out_names": held}}))
    found = held_out_turns(card, DATA, library, 1000)
    followups = {p.followup: p for p in pairs if dialogue_of(p) in held}
    assert found and all(t["instruction"] in followups for _, t in found)
    for history, record in found:
        pair = followups[record["instruction"]]
        assert [m["content"] for m in history] == [t.text for t in pair.history]
        assert history[-1]["role"] == "assistant"
        assert record["strategy"]["text"] in high  # the top tier, as the build trained it
    assert held_out_turns(card, DATA, library, 2) == found[:2]  # the same shuffle, cut


def test_a_card_without_held_out_names_is_one_line_and_exit_2(tmp_path, capsys):
    (tmp_path / "adapter.gguf").write_bytes(b"")
    (tmp_path / "card.json").write_text(json.dumps({"counts": {}}))
    assert main(["--held-out", "--adapter", str(tmp_path / "adapter.gguf")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "lists no held-out dialogues" in err


def test_a_card_that_is_not_json_names_the_card_in_one_line(tmp_path, capsys):
    (tmp_path / "adapter.gguf").write_bytes(b"")
    (tmp_path / "card.json").write_text("{")
    assert main(["--held-out", "--adapter", str(tmp_path / "adapter.gguf")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith(
        f"error: {tmp_path / 'card.json'}: not a simulator"
    )
