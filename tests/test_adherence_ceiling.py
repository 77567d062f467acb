"""The real-user adherence benchmark and the report line that prints its level."""

from __future__ import annotations

import json

import pytest

from benchmarks import adherence_ceiling as ceiling
from dialogues.formats import Message
from evaluation.evaluate import evaluate
from evaluation.inputs import dialogue_from_record
from evaluation.real_users import real_user_adherence
from evaluation.report import markdown
from induction.extract import Extraction
from induction.records import Pair
from stores.memory import HashingEmbedding

STRATEGIES = (
    "Ask for a concrete worked example",
    "Challenge the weakest assumption made",
    "Request shorter summary bullets",
)


def _data(followup_of):
    """Twelve one-pair dialogues over three strategies; the follow-up text is chosen per pair."""
    pairs, extractions = [], []
    for i in range(12):
        strategy = STRATEGIES[i % 3]
        history = (
            Message("user", f"question number {i}", f"q{i}"),
            Message("assistant", f"answer about topic {i % 3} number {i}"),
        )
        pairs.append(Pair("src.jsonl", f"r{i}", 1, history, followup_of(i, strategy)))
        extractions.append(
            Extraction(
                source="src.jsonl", record_id=f"r{i}", turn=1, analysis="", strategy=strategy
            )
        )
    return pairs, extractions


def test_candidates_are_the_top_k_plus_the_applied_strategy_when_it_ranked_lower():
    ranked = [f"s{i}" for i in range(12)]
    assert ceiling.candidate_ids(ranked, "s3") == ranked[:8]
    assert ceiling.candidate_ids(ranked, "s10") == [*ranked[:8], "s10"]


def test_follow_ups_that_say_their_strategy_are_top_1_and_others_are_not():
    embedding = HashingEmbedding()
    pairs, extractions = _data(lambda i, strategy: strategy)
    result = ceiling.run(pairs, extractions, embedding, folds=2)
    assert result["all"]["pairs"] == 12
    assert result["all"]["top1"] == 1.0
    assert result["all"]["chance"] == pytest.approx(1 / 3, abs=1e-4)  # 3 per library
    assert set(result["by_source"]) == {"src.jsonl"}
    swapped, extractions = _data(lambda i, strategy: STRATEGIES[(i + 1) % 3])
    assert ceiling.run(swapped, extractions, embedding, folds=2)["all"]["top1"] == 0.0


def test_cli_refuses_dialogues_without_extractions(tmp_path, capsys):
    assert ceiling.main(["--dialogues", str(tmp_path / "x.jsonl")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--extractions" in err


def test_report_prints_the_real_user_level_beside_generated_adherence(tmp_path):
    level = {
        "all": {"top1": 0.3, "lo": 0.25, "hi": 0.35, "chance": 0.12, "pairs": 900},
        "by_source": {"chats.jsonl": {"top1": 0.25}},
    }
    path = tmp_path / "level.json"
    path.write_text(json.dumps(level), encoding="utf-8")
    assert real_user_adherence(path) == level
    assert real_user_adherence(tmp_path / "missing.json") is None
    plain = [
        dialogue_from_record(
            {
                "messages": [
                    {"role": "user", "content": "hi"},
                    {"role": "assistant", "content": "yo"},
                ]
            }
        )
    ]
    result = evaluate({"plain": plain}, embedder=HashingEmbedding(), resamples=20)
    result.settings.real_user_adherence = level
    text = markdown(result)
    assert "real users' strategy adherence (top-1) 0.300 [0.250, 0.350], chance 0.120" in text
    assert "(chats 0.250)" in text
    result.settings.real_user_adherence = None
    assert "real users' strategy adherence" not in markdown(result)


def test_the_committed_level_is_readable():
    level = real_user_adherence()
    assert level is not None and 0 < level["all"]["top1"] < 1
