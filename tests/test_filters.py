"""The export filters on hand-built dialogue documents, with hand-computed expectations."""

from __future__ import annotations

import copy
import json

import numpy as np
import pytest

from batch.filters import (
    FilterConfig,
    FilterError,
    apply_filters,
    dedup_keep_counts,
    is_refusal,
    load_benchmark,
    repeats_itself,
)
from dialogues.models import ChatMessage, DialogueDocument
from stores.memory import HashingEmbedding
from tests.batch_docs import SEED, make_doc
from tests.data_paths import DATA

MTBENCH101 = DATA / "mtbench101" / "mtbench101.jsonl"

ONLY = {
    "truncate_refusals": False,
    "self_repeat": False,
    "dedup": False,
    "min_turns": 0,
}


def only(**on) -> FilterConfig:
    """A config with every filter off except those given."""
    return FilterConfig(**(ONLY | on))


def texts(messages):
    """The contents of messages, typed (`ChatMessage`) or as the seed's JSON data."""
    return [m.content if isinstance(m, ChatMessage) else m["content"] for m in messages]


@pytest.mark.parametrize(
    "answer",
    [
        "I'm sorry, but I can't help with that.",
        "I’m sorry, but I cannot provide that information.",
        "As an AI language model, I cannot browse the internet.",
        "As an AI, I am unable to feel emotions.",
        "I cannot assist with this request.",
        "I am unable to answer that.",
        "I won't be able to do that for you.",
        "Sorry, I can't do that.",
        "**I apologize, but I cannot** help.",
        "Great question. I'm unable to verify it, though.",
        "",
        "   \n",
    ],
)
def test_refusals_and_empty_answers_are_recognised(answer):
    assert is_refusal(answer)


@pytest.mark.parametrize(
    "answer",
    [
        "Sure! Here is how it works.",
        "I'm sorry for the confusion; here is the corrected list.",
        "I cannot stress enough how important sleep is.",
        "Vaccines work well. " * 15 + "I am unable to say more.",  # past the opening window
    ],
)
def test_helpful_answers_are_not_refusals(answer):
    assert not is_refusal(answer)


def test_refusal_at_turn_three_cuts_the_dialogue_to_two_turns():
    doc = make_doc(
        "0.0",
        ["q1", "q2", "q3", "q4"],
        ["a1", "a2", "I'm sorry, but I can't help with that.", "a4"],
    )
    before = copy.deepcopy(doc)
    kept, report = apply_filters([doc], only(truncate_refusals=True))
    assert doc == before  # the input is never modified
    (out,) = kept
    assert [t.instruction for t in out.turns] == ["q1", "q2"]
    assert texts(out.messages) == [*texts(SEED), "q1", "a1", "q2", "a2"]
    assert out.summary.turns == 2
    assert DialogueDocument.model_validate(out.dump()).dump() == out.dump()  # a valid document
    assert out.filters.dump() == {
        "generated_turns": 4,
        "truncated_at": 2,
        "by": "refusal",
        "cuts": [{"by": "refusal", "at": 2, "removed": 2}],
        "opening_removed": False,
        "contaminated_turns": [],
    }
    stats = report.stats("truncate_refusals")
    assert (stats.dialogues_affected, stats.turns_removed, stats.dialogues_dropped) == (1, 2, 0)
    assert stats.details == {"refused_answers": 1, "empty_answers": 0, "refused_openings": 0}
    assert (report.turns_in, report.turns_out) == (4, 2)


def test_empty_answer_at_turn_one_leaves_no_turn_and_min_turns_drops_it():
    doc = make_doc("0.0", ["q1", "q2"], ["  ", "a2"])
    kept, _ = apply_filters([doc], only(truncate_refusals=True))
    assert kept[0].turns == [] and texts(kept[0].messages) == texts(SEED)
    kept, report = apply_filters([doc], only(truncate_refusals=True, min_turns=1))
    assert kept == []
    assert report.stats("truncate_refusals").details["empty_answers"] == 1
    minimum = report.stats("min_turns")
    assert (minimum.dialogues_affected, minimum.dialogues_dropped, minimum.turns_removed) == (
        1,
        1,
        0,
    )


def test_refused_opening_keeps_no_generated_turn_and_removes_the_opening_answer():
    doc = make_doc("0.0", ["q1", "q2"], opening="As an AI language model, I cannot do that.")
    assert texts(doc.messages)[2] == "As an AI language model, I cannot do that."
    kept, report = apply_filters([doc], only(truncate_refusals=True))
    (out,) = kept
    assert out.turns == [] and out.opening is None
    assert DialogueDocument.model_validate(out.dump()).messages == out.messages
    assert texts(out.messages) == texts(SEED[:2])  # ends with the seed's user message
    assert out.filters.opening_removed is True and out.filters.truncated_at == 0
    assert report.stats("truncate_refusals").details["refused_openings"] == 1
    assert report.stats("truncate_refusals").turns_removed == 2


def test_a_good_opening_is_kept_when_a_later_answer_is_refused():
    doc = make_doc("0.0", ["q1", "q2"], ["I cannot help with that.", "a2"], opening="Fine.")
    (out,), _ = apply_filters([doc], only(truncate_refusals=True))
    assert texts(out.messages) == [*texts(SEED[:2]), "Fine."]
    assert out.opening.answer == "Fine."


def test_self_repeat_threshold_is_inclusive():
    # normalized_similarity("abcde", "abcdx") = 1 - 1/5 = 0.8; ("abcde", "abcxy") = 0.6
    assert repeats_itself(["abcde", "zzz", "abcdx"], 0.8)
    assert not repeats_itself(["abcde", "abcxy"], 0.8)
    assert repeats_itself(["What IS  this?", "what is this?"], 1.0)  # case and spaces folded
    assert not repeats_itself(["only one"], 0.8)


def test_self_repeat_drops_the_repeating_dialogue_and_keeps_the_distinct_one():
    repeating = make_doc(
        "0.0", ["Describe photosynthesis", "Why is it green", "describe photosynthesis!"]
    )
    distinct = make_doc(
        "1.0", ["Describe photosynthesis", "Why is it green", "Where does it happen"]
    )
    kept, report = apply_filters([repeating, distinct], only(self_repeat=True))
    assert [d.job for d in kept] == ["1.0"]
    stats = report.stats("self_repeat")
    assert (stats.dialogues_affected, stats.dialogues_dropped, stats.turns_removed) == (1, 1, 3)
    assert stats.settings == {"threshold": 0.8}


def test_dedup_truncates_the_later_dialogue_at_its_first_near_duplicate():
    first = make_doc("0.0", ["Explain the causes of inflation", "What about deflation then"])
    later = make_doc(
        "1.0", ["How does rain form", "explain THE causes of inflation!", "Which clouds bring snow"]
    )
    kept, report = apply_filters([first, later], only(dedup=True), embedder=HashingEmbedding())
    assert [len(d.turns) for d in kept] == [2, 1]
    assert texts(kept[1].messages) == [
        *texts(SEED),
        "How does rain form",
        kept[1].turns[0].answer,
    ]
    assert kept[1].filters.by == "dedup" and kept[1].filters.truncated_at == 1
    assert kept[0] == first  # untouched dialogues are passed through
    stats = report.stats("dedup")
    assert (stats.dialogues_affected, stats.turns_removed) == (1, 2)
    assert stats.details == {"turns_embedded": 5}
    assert stats.settings == {"threshold": 0.95, "embedding": "ideas-hashing-256"}


def test_dedup_catches_a_duplicate_earlier_in_the_same_dialogue():
    doc = make_doc("0.0", ["Tell me about cats", "And dogs", "tell me about CATS", "Birds"])
    (out,), _ = apply_filters([doc], only(dedup=True), embedder=HashingEmbedding())
    assert [t.instruction for t in out.turns] == ["Tell me about cats", "And dogs"]


def test_a_dialogue_min_turns_drops_does_not_block_later_copies():
    short = make_doc("0.0", ["Explain the causes of inflation"])
    later = make_doc("1.0", ["Explain the causes of inflation", "What about deflation then"])
    kept, report = apply_filters(
        [short, later], only(dedup=True, min_turns=2), embedder=HashingEmbedding()
    )
    assert [(d.job, len(d.turns)) for d in kept] == [("1.0", 2)]
    assert report.stats("dedup").dialogues_affected == 0


def test_dedup_without_an_embedder_is_a_clear_error():
    with pytest.raises(FilterError, match="needs an embedder"):
        apply_filters([make_doc("0.0", ["q1", "q2"])], FilterConfig())


def reference_keep_counts(vectors, lengths, threshold, min_keep):
    """The dedup rule as a plain loop."""
    kept, keeps, offset = [], [], 0
    for n in lengths:
        local, keep = [], n
        for j in range(n):
            v = vectors[offset + j]
            if any(float(v @ k) >= threshold for k in kept + local):
                keep = j
                break
            local.append(v)
        if keep >= min_keep:
            kept += local
        keeps.append(keep)
        offset += n
    return keeps


@pytest.mark.parametrize("block,tile,min_keep", [(1, 1, 0), (3, 2, 0), (7, 5, 2), (1024, 8192, 2)])
def test_blockwise_dedup_equals_the_plain_loop(block, tile, min_keep):
    rng = np.random.default_rng(7)
    base = rng.normal(size=(12, 16))
    lengths = [int(n) for n in rng.integers(0, 5, size=40)]
    picks = rng.integers(0, 12, size=sum(lengths))
    vectors = base[picks] + rng.normal(scale=0.05, size=(len(picks), 16)) * rng.integers(
        0, 2, size=(len(picks), 1)
    )
    vectors = (vectors / np.linalg.norm(vectors, axis=1, keepdims=True)).astype(np.float32)
    expected = reference_keep_counts(vectors, lengths, 0.95, min_keep)
    assert expected != lengths  # duplicates were planted
    assert dedup_keep_counts(vectors, lengths, 0.95, min_keep=min_keep, block=block, tile=tile) == (
        expected
    )


def write_jsonl(path, records):
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    return path


@pytest.fixture
def benchmark(tmp_path):
    return write_jsonl(
        tmp_path / "bench.jsonl",
        [{"question": "What is the capital of France?"}, {"prompt": "Name three primary colours."}],
    )


def contaminated_doc():
    return make_doc(
        "0.0",
        ["Tell me about Paris", "what is the capital of   FRANCE", "Name its rivers"],
    )


def test_contamination_flag_marks_the_turn_and_keeps_it(benchmark):
    doc = contaminated_doc()
    (out,), report = apply_filters([doc], only(contamination_files=[benchmark]))
    assert len(out.turns) == 3
    # "what is the capital of france" (29 chars) vs the same with "?" (30): ratio 2*29/59
    assert [m.dump() for m in out.filters.contaminated_turns] == [
        {
            "turn": 2,
            "match": "What is the capital of France?",
            "source": "bench.jsonl",
            "score": round(58 / 59, 4),
        }
    ]
    stats = report.stats("contamination")
    assert (stats.dialogues_affected, stats.turns_flagged, stats.turns_removed) == (1, 1, 0)
    assert stats.details == {"benchmark_questions": 2}
    assert stats.settings["action"] == "flag" and stats.settings["threshold"] == 0.8


def test_contamination_drop_cuts_before_the_first_contaminated_turn(benchmark):
    config = only(contamination_files=[benchmark], contamination_action="drop")
    (out,), report = apply_filters([contaminated_doc()], config)
    assert [t.instruction for t in out.turns] == ["Tell me about Paris"]
    assert len(out.messages) == len(SEED) + 2
    assert out.filters.by == "contamination"
    stats = report.stats("contamination")
    assert (stats.dialogues_affected, stats.turns_flagged, stats.turns_removed) == (1, 1, 2)


def test_contamination_threshold_is_respected(benchmark):
    config = only(contamination_files=[benchmark], contamination_threshold=0.99)
    (out,), report = apply_filters([contaminated_doc()], config)
    assert out.filters is None and report.stats("contamination").dialogues_affected == 0


@pytest.mark.skipif(not MTBENCH101.exists(), reason="MT-Bench-101 data not available")
def test_contamination_against_an_mtbench101_dialogue_file():
    first = json.loads(MTBENCH101.open(encoding="utf-8").readline())
    question = first["history"][0]["user"]
    doc = make_doc("0.0", ["Tell me about heights", question])
    (out,), report = apply_filters([doc], only(contamination_files=[MTBENCH101]))
    (flag,) = out.filters.contaminated_turns
    assert flag.dump() == {"turn": 2, "match": question, "source": "mtbench101.jsonl", "score": 1.0}
    assert report.stats("contamination").details["benchmark_questions"] == len(
        load_benchmark(MTBENCH101)
    )


def test_benchmark_files_of_questions(tmp_path):
    listed = tmp_path / "list.json"
    listed.write_text(json.dumps(["q one", "q two"]), encoding="utf-8")
    lines = tmp_path / "lines.txt"
    lines.write_text("first question\n\nsecond question\n", encoding="utf-8")
    mtbench = write_jsonl(tmp_path / "question.jsonl", [{"question_id": 1, "turns": ["t1", "t2"]}])
    records = write_jsonl(tmp_path / "r.jsonl", [{"instruction": "do x"}, {"text": "do y"}])
    assert load_benchmark(listed) == ["q one", "q two"]
    assert load_benchmark(lines) == ["first question", "second question"]
    assert load_benchmark(mtbench) == ["t1", "t2"]
    assert load_benchmark(records) == ["do x", "do y"]
    dialogues = write_jsonl(
        tmp_path / "chat.jsonl",
        [{"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}]}],
    )
    assert load_benchmark(dialogues) == ["hi"]


def test_unusable_benchmark_files_are_one_line_errors(tmp_path):
    with pytest.raises(FilterError, match="not found"):
        load_benchmark(tmp_path / "missing.jsonl")
    empty = write_jsonl(tmp_path / "empty.jsonl", [{"id": 1}])
    with pytest.raises(FilterError, match="no questions found") as err:
        load_benchmark(empty)
    assert "\n" not in str(err.value)
    csv = tmp_path / "data.csv"
    csv.write_text("a,b\n1,2\n", encoding="utf-8")
    with pytest.raises(FilterError, match="not a benchmark file"):
        load_benchmark(csv)


def test_min_turns_drops_short_dialogues():
    docs = [make_doc("0.0", ["q1"]), make_doc("1.0", ["q1", "q2"]), make_doc("2.0", [])]
    kept, report = apply_filters(docs, only(min_turns=2))
    assert [d.job for d in kept] == ["1.0"]
    stats = report.stats("min_turns")
    assert (stats.dialogues_affected, stats.dialogues_dropped, stats.turns_removed) == (2, 2, 1)


def scenario(benchmark):
    return [
        make_doc(
            "0.0",
            ["Explain the causes of inflation", "What about deflation then", "How do banks react"],
        ),
        make_doc(
            "1.0", ["Describe photosynthesis in plants", "describe  PHOTOSYNTHESIS in plants?"]
        ),
        make_doc(
            "2.0",
            ["Tell me about volcano eruptions", "Why do tides happen", "Are tsunamis related"],
            ["Magma rises.", "I cannot help with that.", "Yes."],
        ),
        make_doc(
            "3.0",
            ["How does rain form", "Explain the causes of inflation!", "Which clouds bring snow"],
        ),
        make_doc(
            "4.0",
            ["What is the capital of France", "Name famous French painters", "Who built the tower"],
        ),
    ]


def test_every_filter_is_counted_exactly(benchmark):
    docs = scenario(benchmark)
    before = copy.deepcopy(docs)
    config = FilterConfig(contamination_files=[benchmark])
    kept, report = apply_filters(docs, config, embedder=HashingEmbedding())
    assert docs == before
    assert [d.job for d in kept] == ["0.0", "4.0"]
    summary = report.as_dict()
    assert {k: summary[k] for k in ("dialogues_in", "turns_in", "dialogues_out", "turns_out")} == {
        "dialogues_in": 5,
        "turns_in": 14,
        "dialogues_out": 2,
        "turns_out": 6,
    }
    effects = {
        name: (f["enabled"], f["dialogues_affected"], f["turns_removed"], f["dialogues_dropped"])
        for name, f in summary["filters"].items()
    }
    assert effects == {
        "truncate_refusals": (True, 1, 2, 0),  # 2.0 cut before its refused turn 2
        "self_repeat": (True, 1, 2, 1),  # 1.0 repeats itself
        "dedup": (True, 1, 2, 0),  # 3.0 cut at its copy of 0.0's first turn
        "contamination": (True, 1, 0, 0),  # 4.0 turn 1 flagged
        "min_turns": (True, 2, 2, 2),  # 2.0 and 3.0 keep one turn each
    }
    assert summary["filters"]["contamination"]["turns_flagged"] == 1
    assert kept[1].filters.contaminated_turns[0].turn == 1
    json.dumps(summary)  # plain data
    assert [row[0] for row in report.rows()] == list(effects)
    assert report.table().row_count == 5


def test_all_switches_off_change_nothing(benchmark):
    docs = scenario(benchmark)
    kept, report = apply_filters(docs, FilterConfig(**ONLY))
    assert kept == docs
    assert all(not s.enabled for s in report)
    assert (report.dialogues_in, report.dialogues_out, report.turns_in, report.turns_out) == (
        5,
        5,
        14,
        14,
    )
    assert {row[1] for row in report.rows()} == {"off"}
