"""The typed output document: old documents round-trip, the graph's records validate."""

from __future__ import annotations

import copy
import json

import pytest
from pydantic import ValidationError

from agents.critic import CriticScores, CriticVerdict
from agents.strategist import Selection
from dialogues.models import DialogueDocument, TurnRecord, Usage, Verdict
from dialogues.record import dialogue_document
from graphs.deduction import respond
from tests.batch_docs import make_doc
from tests.test_graph import CANDIDATES, FakeAssistant, call, make_runtime, state


def _json(data: object) -> str:
    return json.dumps(data, ensure_ascii=False, indent=2)


def old_document() -> dict:
    """A batch document as written before the models existed: usage without `cached_tokens`,
    an opening answer, rejected drafts, a verdict without scores and the filters' record."""
    document = make_doc(
        "1.0", ["Why?", "How?"], opening="Hello.", rejected=1, note="drawn", scored=False
    ).dump()
    document["filters"] = {
        "generated_turns": 3,
        "truncated_at": 2,
        "by": "contamination",
        "cuts": [{"by": "contamination", "at": 2, "removed": 1}],
        "opening_removed": False,
        "contaminated_turns": [{"turn": 3, "match": "Q", "score": 0.93, "source": "b.jsonl"}],
    }
    document["library"] = {"name": "default", "version": "2", "counts": {"high": 177}}
    return document


def test_an_old_document_loads_and_dumps_back_to_the_same_json():
    document = old_document()
    loaded = DialogueDocument.of(document)
    assert _json(loaded.dump()) == _json(document)
    assert "cached_tokens" not in loaded.dump()["turns"][0]["usage"]["assistant"]
    assert loaded.turns[0].usage["assistant"].cached_tokens == 0
    assert loaded.job == "1.0" and loaded.library.size() == 177
    assert loaded.turns[0].critic.verdict_scores() is None


def test_unknown_keys_survive_a_round_trip():
    document = old_document()
    document["future"] = {"x": 1}
    document["turns"][0]["drafts"][0]["extra"] = [1, 2]
    document["turns"][0]["usage"]["critic"] = {"calls": 1, "reasoning_tokens": 7}
    assert DialogueDocument.of(copy.deepcopy(document)).dump() == document


def test_scores_beside_the_verdict_are_read_as_scores():
    verdict = Verdict.model_validate(
        {"text": "Q", "accepted": True, "reason": "ok", "depth": 4, "feedback": "Fine."}
    )
    scores = verdict.verdict_scores()
    assert scores is not None and scores.depth == 4 and scores.insight is None
    assert verdict.verdict_feedback() == "Fine."


def test_a_document_that_is_not_one_is_a_value_error():
    with pytest.raises(ValidationError):
        DialogueDocument.of({"turns": [{"drafts": "not a list"}]})
    assert issubclass(ValidationError, ValueError)


def test_usage_built_in_code_dumps_every_field():
    assert (
        Usage().dump()
        == Usage().as_dict()
        == {
            "calls": 0,
            "input_tokens": 0,
            "output_tokens": 0,
            "seconds": 0.0,
            "cached_tokens": 0,
        }
    )
    assert Usage(1, 2, 3, 0.123456).dump()["seconds"] == 0.1235
    assert Usage.from_dict({"calls": 2}).dump() == {"calls": 2}


def test_the_graphs_turn_record_validates_and_keeps_its_shape():
    runtime, _, _ = make_runtime(assistant=FakeAssistant("Plasma cells."))
    scores = CriticScores(correct=True, coherent=True, depth=4, insight=3, feedback="Good.")
    verdict = CriticVerdict(True, "accepted", 0.2, scores)
    drafts = [
        {"text": "Which?", **CriticVerdict(False, "too similar", 0.9).as_record()},
        {"text": "Which cells?", **verdict.as_record()},
    ]
    selection = Selection(CANDIDATES, CANDIDATES[1], "random", "drawn", draw={"p": 0.5})
    st = state(
        selection=selection.as_record(),
        draft="Which cells?",
        drafts=drafts,
        usage={"strategist": Usage(1, 30, 5, 0.1).as_dict()},
    )
    (record,) = call(respond, st, runtime)["turns"]

    assert list(record) == [
        "index",
        "candidates",
        "strategy",
        "selection",
        "drafts",
        "critic",
        "instruction",
        "answer",
        "usage",
    ]
    assert record["candidates"] == selection.as_record()["candidates"]
    assert record["selection"] == {"method": "random", "note": "drawn", "draw": {"p": 0.5}}
    assert record["drafts"] == drafts and record["critic"] == drafts[-1]
    assert list(record["usage"]) == ["strategist", "assistant"]
    assert record["usage"]["assistant"] == Usage(1, 100, 20, 0.5).as_dict()
    typed = TurnRecord.model_validate(record)
    assert typed.dump() == record
    assert typed.critic is not None and typed.critic.scores.depth == 4


def test_a_selection_without_a_draw_writes_no_draw_key():
    runtime, _, _ = make_runtime()
    st = state(
        selection=Selection(CANDIDATES, None, "none").as_record(),
        draft="Q?",
        drafts=[{"text": "Q?", "accepted": True, "reason": "ok", "similarity": 0.0}],
    )
    (record,) = call(respond, st, runtime)["turns"]
    assert record["selection"] == {"method": "none", "note": None}
    assert record["strategy"] is None


def test_a_new_document_round_trips():
    runtime, _, _ = make_runtime()
    st = state(
        selection=Selection(CANDIDATES, CANDIDATES[0], "llm").as_record(),
        draft="Q?",
        drafts=[{"text": "Q?", "accepted": True, "reason": "ok", "similarity": 0.0}],
    )
    update = call(respond, st, runtime)
    document = dialogue_document(
        {**st, **update, "messages": [*st["messages"], *update["messages"]]},
        status="complete",
        reason=None,
        wall_seconds=1.0,
        settings={"turns": 1},
        seed_source="seed.json",
        library={"name": "default", "version": "2"},
    ).dump()
    assert list(document) == [
        "format",
        "status",
        "reason",
        "created_at",
        "seed",
        "messages",
        "opening",
        "turns",
        "unfinished_turn",
        "summary",
        "library",
        "settings",
    ]
    assert document["library"]["version"] == "2"
    assert _json(DialogueDocument.of(document).dump()) == _json(document)
