"""Export formats, the data card and `run.py export` on hand-built batches."""

from __future__ import annotations

import io
import json
import math

import pytest
from rich.console import Console

from batch.card import build_card, card_paths, role_models, strategy_distribution, write_card
from batch.export import export
from batch.filters import FilterConfig, apply_filters
from cli.errors import UsageError, classify
from cli.export import export_command
from dialogues.models import (
    ContaminationMatch,
    FilterInfo,
    SelectionSummary,
    StrategyRef,
    UnfinishedTurn,
    Verdict,
)
from stores.memory import HashingEmbedding
from tests.batch_docs import MANIFEST, SEED, SETTINGS, make_doc, make_run_dir

USAGE = {"calls": 1, "input_tokens": 10, "cached_tokens": 0, "output_tokens": 10, "seconds": 0.5}
NO_CONTAMINATION = {"match": "", "score": 0.0, "source": ""}
REJECTED = {
    "accepted": False,
    "reason": "too similar to an earlier user message",
    "similarity": 0.9,
    "scored": False,
    "correct": False,
    "coherent": False,
    "depth": 0,
    "insight": 0,
    "feedback": "",
}


def accepted(text):
    return {
        "text": text,
        "accepted": True,
        "reason": "accepted",
        "similarity": 0.2,
        "scored": True,
        "correct": True,
        "coherent": True,
        "depth": 4,
        "insight": 3,
        "feedback": "Good.",
    }


def small_doc():
    """Two turns: the first applies s7 after one rejected draft, the second has no strategy."""
    return make_doc(
        "3.1",
        ["Why does it work?", "Give an example"],
        ["Because of memory cells.", "The measles vaccine."],
        strategies=["s7", None],
        candidates=1,
        rejected=1,
    )


INFO = {
    "job": "3.1",
    "seed": "seeds.jsonl#3",
    "seed_index": 3,
    "repeat": 1,
    "status": "complete",
    "reason": "",
    "library": "default",
    "library_version": 2,
    "generated_turns": 2,
    "truncated_by": "",
}
TURNS = [
    {
        "index": 1,
        "strategy_id": "s7",
        "strategy": "text of s7",
        "candidates": [{"id": "s1", "score": 0.5, "rank": 0}],
        "selection": {"method": "llm", "note": ""},
        "drafts": [{"text": "draft 0 of turn 1", **REJECTED}, accepted("Why does it work?")],
        "rejections": 1,
        "usage": [
            {"agent": "assistant", **USAGE},
            {"agent": "simulator", **USAGE, "calls": 2},
            {"agent": "strategist", **USAGE},
        ],
        "contamination": NO_CONTAMINATION,
    },
    {
        "index": 2,
        "strategy_id": "",
        "strategy": "",
        "candidates": [{"id": "s1", "score": 0.5, "rank": 0}],
        "selection": {"method": "none", "note": ""},
        "drafts": [{"text": "draft 0 of turn 2", **REJECTED}, accepted("Give an example")],
        "rejections": 1,
        "usage": [{"agent": "assistant", **USAGE}, {"agent": "simulator", **USAGE, "calls": 2}],
        "contamination": NO_CONTAMINATION,
    },
]
MESSAGES = [
    *SEED,
    {"role": "user", "content": "Why does it work?"},
    {"role": "assistant", "content": "Because of memory cells."},
    {"role": "user", "content": "Give an example"},
    {"role": "assistant", "content": "The measles vaccine."},
]


def read_jsonl(path):
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def test_openai_format_is_exact(tmp_path):
    out = tmp_path / "data.jsonl"
    result = export([small_doc()], "openai", out)
    assert read_jsonl(out) == [{"messages": MESSAGES, "ideas": {**INFO, "turns": TURNS}}]
    assert (result.dialogues, result.turns, result.records, result.turns_without_strategy) == (
        1,
        2,
        1,
        1,
    )
    export([small_doc()], "openai", out, plain=True)
    assert read_jsonl(out) == [{"messages": MESSAGES}]


def test_sharegpt_format_is_exact(tmp_path):
    out = tmp_path / "data.json"
    result = export([small_doc(), make_doc("0.0", ["q1"])], "sharegpt", out)
    records = json.loads(out.read_text(encoding="utf-8"))
    roles = {"system": "system", "user": "human", "assistant": "gpt"}
    assert records[0] == {
        "id": "3.1",
        "conversations": [{"from": roles[m["role"]], "value": m["content"]} for m in MESSAGES],
        "ideas": {**INFO, "turns": TURNS},
    }
    assert records[1]["id"] == "0.0" and records[1]["conversations"][-2]["value"] == "q1"
    assert len(out.read_text(encoding="utf-8").splitlines()) == 4  # "[", a line each, "]"
    assert result.records == 2
    export([small_doc()], "sharegpt", out, plain=True)
    assert "ideas" not in json.loads(out.read_text(encoding="utf-8"))[0]


def test_simulator_sft_format_is_exact(tmp_path):
    out = tmp_path / "sim.jsonl"
    result = export([small_doc()], "simulator-sft", out)
    assert read_jsonl(out) == [
        {
            "id": "3.1#1",
            "history": SEED,
            "strategy": "text of s7",
            "instruction": "Why does it work?",
            "ideas": {**INFO, "turn": TURNS[0]},
        },
        {
            "id": "3.1#2",
            "history": MESSAGES[:5],
            "strategy": None,
            "instruction": "Give an example",
            "ideas": {**INFO, "turn": TURNS[1]},
        },
    ]
    assert (result.records, result.turns_without_strategy) == (2, 1)
    export([small_doc()], "simulator-sft", out, plain=True)
    assert [set(r) for r in read_jsonl(out)] == [{"id", "history", "strategy", "instruction"}] * 2


def test_simulator_history_includes_the_opening_answer(tmp_path):
    out = tmp_path / "sim.jsonl"
    export([make_doc("0.0", ["q1"], ["a1"], opening="Opening answer.")], "simulator-sft", out)
    (record,) = read_jsonl(out)
    assert record["history"] == [*SEED[:2], {"role": "assistant", "content": "Opening answer."}]
    assert record["instruction"] == "q1"


def test_filter_marks_reach_the_decision_record(tmp_path):
    bench = tmp_path / "bench.jsonl"
    bench.write_text(json.dumps({"question": "Give an example"}) + "\n", encoding="utf-8")
    docs = [make_doc("0.0", ["q1", "q2", "I cannot help with that."]), small_doc()]
    docs[0].turns[1].answer = docs[0].messages[-3].content = "I cannot assist here."
    config = FilterConfig(dedup=False, min_turns=0, contamination_files=[bench])
    kept, _ = apply_filters(docs, config)
    out = tmp_path / "data.jsonl"
    export(kept, "openai", out)
    first, second = read_jsonl(out)
    assert first["ideas"]["truncated_by"] == "refusal" and first["ideas"]["generated_turns"] == 3
    assert len(first["ideas"]["turns"]) == 1 and len(first["messages"]) == len(SEED) + 2
    flagged = second["ideas"]["turns"][1]["contamination"]
    assert flagged == {"match": "Give an example", "score": 1.0, "source": "bench.jsonl"}


def heterogeneous_docs():
    """Turns with and without strategy, critic, notes and scores; int and float scores."""
    docs = []
    for i in range(30):
        docs.append(
            make_doc(
                f"{i}.0",
                ["q1", "q2"],
                strategies=["s1", None] if i % 3 == 0 else ["s1", "s2"],
                candidates=i % 4 + 1,
                scored=bool(i % 2),
                critic=bool(i % 5),
            )
        )
    for i in range(30, 60):
        doc = make_doc(
            f"{i}.0",
            ["q1", "q2", "q3"],
            note="fallback: invalid pick" if i % 2 else None,
            candidates=i % 3,
            rejected=i % 3,
            score=1,
            status="ended_early",
            reason="6 drafts rejected in a row at turn 4",
        )
        doc.filters = FilterInfo(
            generated_turns=4,
            by="dedup",
            contaminated_turns=[ContaminationMatch(turn=2, match="x", source="b.jsonl", score=0.9)],
        )
        docs.append(doc)
    return docs


@pytest.mark.parametrize("fmt", ["openai", "simulator-sft"])
@pytest.mark.parametrize("plain", [False, True])
def test_datasets_loads_the_export(tmp_path, fmt, plain):
    import datasets  # the dev group installs it: a missing one must fail, not skip

    datasets.disable_progress_bars()
    out = tmp_path / "data.jsonl"
    result = export(heterogeneous_docs(), fmt, out, plain=plain)
    loaded = datasets.load_dataset(
        "json", data_files=str(out), split="train", cache_dir=str(tmp_path / "hf")
    )
    assert len(loaded) == result.records == (60 if fmt == "openai" else 150)
    assert ("ideas" in loaded.column_names) is not plain
    if fmt == "openai":
        assert loaded[0]["messages"][-1] == {"role": "assistant", "content": "Answer to: q2"}
    else:
        assert loaded[1]["strategy"] is None and loaded[0]["strategy"] == "text of s1"
    if not plain:
        # A small chunk size makes Arrow fix the schema on the first records, which lack notes,
        # reasons, contamination marks and scores that later records have.
        chunked = datasets.load_dataset(
            "json",
            data_files=str(out),
            split="train",
            cache_dir=str(tmp_path / "hf-chunked"),
            chunksize=4096,
        )
        assert chunked.to_list() == loaded.to_list()


def test_unknown_format_is_refused(tmp_path):
    with pytest.raises(ValueError, match="unknown export format"):
        export([], "alpaca", tmp_path / "x.json")


def test_strategy_distribution_is_hand_computed():
    docs = [
        make_doc("0.0", ["a", "b", "c"], strategies=["s1", "s1", "s2"]),
        make_doc("1.0", ["a", "b"], strategies=["s1", None]),
    ]
    dist = strategy_distribution(docs, top=1)
    assert dist == {
        "turns": 5,
        "with_strategy": 4,
        "without_strategy": 1,
        "distinct": 2,
        "entropy": round(-(0.75 * math.log(0.75) + 0.25 * math.log(0.25)) / math.log(2), 4),
        "max_share": 0.75,
        "top": [{"strategy": "text of s1", "ids": ["s1"], "count": 3, "share": 0.75}],
        "others": {"strategies": 1, "count": 1, "share": 0.25},
    }
    assert strategy_distribution([])["entropy"] == 0.0


def test_role_models_merge_shared_role_defaults_and_overrides():
    assert role_models(SETTINGS, MANIFEST["agents"]) == {
        "strategist": {
            "agent": "llm",
            "model": "smollm2",
            "endpoint": "embedded server",
            "temperature": 0.0,
            "max_tokens": 48,
        },
        "simulator": {
            "agent": "strategy",
            "model": "smollm2",
            "endpoint": "embedded server",
            "temperature": 0.9,
            "max_tokens": 96,
        },
        "critic": {
            "agent": "novelty",
            "model": "smollm2",
            "endpoint": "embedded server",
            "temperature": 0.0,
            "max_tokens": 128,
        },
        "assistant": {
            "agent": "llm",
            "model": "big-model",
            "endpoint": "http://gpu:8000/v1",
            "temperature": 0.7,
            "max_tokens": 512,
        },
    }


def test_card_files_hold_the_counts(tmp_path):
    docs = [small_doc(), make_doc("0.0", ["q1"]), make_doc("1.0", ["q1", "q2", "q3"])]
    kept, report = apply_filters(docs, FilterConfig(dedup=False))
    out = tmp_path / "data.jsonl"
    result = export(kept, "openai", out)
    card = build_card(
        MANIFEST, run_dir="runs/x", stored=3, failed=2, report=report, result=result, documents=kept
    )
    md_path, json_path = write_card(out, card)
    assert (md_path, json_path) == card_paths(out)
    assert md_path.name == "data.jsonl.card.md" and json_path.name == "data.jsonl.card.json"
    data = json.loads(json_path.read_text(encoding="utf-8"))
    assert data["counts"] == {
        "dialogues_stored": 3,
        "jobs_failed": 2,
        "dialogues_exported": 2,
        "turns_exported": 5,
        "records_exported": 2,
        "turns_without_strategy": 1,
    }
    assert data["filters"]["filters"]["min_turns"]["dialogues_dropped"] == 1
    assert data["filters"]["filters"]["dedup"]["enabled"] is False
    assert data["seeds"] == MANIFEST["seeds"]
    assert data["library"] == {"name": "default", "version": 2}
    assert data["export"]["format"] == "openai" and data["strategies"]["with_strategy"] == 4
    assert data["settings"] == {"top_k": 8}
    md = md_path.read_text(encoding="utf-8")
    assert md.startswith("# Data card: data.jsonl")
    assert "| dialogues exported | 2 |" in md and "| failed jobs | 2 |" in md
    assert "| min_turns | yes | min=2 | 1 | 1 | 1 |" in md
    assert "| dedup | no |" in md
    assert "| assistant | llm | big-model | http://gpu:8000/v1 | 0.7 | 512 |" in md
    assert "| seeds sha256 | " + "ab" * 32 + " |" in md


def batch_dir(tmp_path):
    docs = [
        make_doc("0.0", ["Explain the causes of inflation", "What about deflation", "And banks"]),
        make_doc("0.1", ["How does rain form", "explain the CAUSES of inflation", "Snow?"]),
        make_doc("1.0", ["What is the capital of France", "Name French painters"]),
        make_doc("2.0", ["Tell me about tides", "Why?"], ["Gravity.", "I'm sorry, but I can't."]),
    ]
    return make_run_dir(tmp_path / "runs" / "b1", docs, failures={"2.1": "model error"})


def run_cli(*argv, embedder=None):
    console = Console(file=io.StringIO(), width=200)
    code = export_command([*map(str, argv)], console, embedder=embedder)
    return code, console.file.getvalue()


def test_cli_exports_with_every_filter_and_writes_the_card(tmp_path):
    run = batch_dir(tmp_path)
    bench = tmp_path / "bench.txt"
    bench.write_text("What is the capital of France?\n", encoding="utf-8")
    out = tmp_path / "out" / "sim.jsonl"
    code, printed = run_cli(
        run,
        "--format",
        "simulator-sft",
        "--out",
        out,
        "--contamination",
        bench,
        "--contamination-action",
        "drop",
        embedder=HashingEmbedding(),
    )
    assert code == 0
    records = read_jsonl(out)
    # 0.0 kept whole; 0.1 cut at its duplicate (1 turn, dropped); 1.0 cut at turn 1 (dropped);
    # 2.0 cut before its refusal (1 turn, dropped).
    assert [r["id"] for r in records] == ["0.0#1", "0.0#2", "0.0#3"]
    card = json.loads(card_paths(out)[1].read_text(encoding="utf-8"))
    assert card["counts"]["dialogues_stored"] == 4 and card["counts"]["jobs_failed"] == 1
    assert card["counts"]["dialogues_exported"] == 1 and card["counts"]["records_exported"] == 3
    effects = {n: f["dialogues_affected"] for n, f in card["filters"]["filters"].items()}
    assert effects == {
        "truncate_refusals": 1,
        "self_repeat": 0,
        "dedup": 1,
        "contamination": 1,
        "min_turns": 3,
    }
    assert card["run_dir"] == str(run)
    assert "filters: 4 -> 1 dialogues, 10 -> 3 turns" in printed
    assert f"wrote {out}" in printed and "data card:" in printed
    assert "text of s1" in printed  # the strategy table


def test_cli_switches_turn_filters_off(tmp_path):
    run = batch_dir(tmp_path)
    out = tmp_path / "all.json"
    argv = [run, "--format", "sharegpt", "--out", out, "--plain"]
    code, _ = run_cli(*argv, "--no-dedup", "--no-truncate-refusals", "--min-turns", "0")
    assert code == 0
    records = json.loads(out.read_text(encoding="utf-8"))
    assert [r["id"] for r in records] == ["0.0", "0.1", "1.0", "2.0"]
    assert all(set(r) == {"id", "conversations"} for r in records)
    card = json.loads(card_paths(out)[1].read_text(encoding="utf-8"))
    assert card["filters"]["filters"]["truncate_refusals"]["enabled"] is False
    assert card["filters"]["filters"]["self_repeat"]["enabled"] is True


def test_cli_missing_run_dir_is_a_one_line_usage_error(tmp_path):
    out = tmp_path / "x.jsonl"
    with pytest.raises(UsageError) as err:
        run_cli(tmp_path / "nope", "--format", "openai", "--out", out, "--no-dedup")
    assert str(err.value) == f"{tmp_path / 'nope'}: no such batch directory"
    assert classify(err.value) == 2
    assert not out.exists()


def test_cli_directory_without_a_batch_is_a_usage_error(tmp_path):
    with pytest.raises(UsageError, match="not a batch directory"):
        run_cli(tmp_path, "--format", "openai", "--out", tmp_path / "x.jsonl", "--no-dedup")


def test_cli_refuses_to_overwrite_the_batch_store(tmp_path):
    run = batch_dir(tmp_path)
    before = (run / "dialogues.jsonl").read_bytes()
    with pytest.raises(UsageError, match="is a file of the batch itself"):
        run_cli(run, "--format", "openai", "--out", run / "dialogues.jsonl", "--no-dedup")
    assert (run / "dialogues.jsonl").read_bytes() == before


def test_cli_missing_benchmark_file_is_a_usage_error(tmp_path):
    run = batch_dir(tmp_path)
    with pytest.raises(UsageError, match="benchmark file not found"):
        run_cli(
            run, "--format", "openai", "--out", tmp_path / "x", "--contamination", tmp_path / "b"
        )


def test_cli_unusable_benchmark_file_is_a_usage_error(tmp_path):
    run = batch_dir(tmp_path)
    bench = tmp_path / "b.csv"
    bench.write_text("a,b\n", encoding="utf-8")
    argv = [run, "--format", "openai", "--out", tmp_path / "x", "--no-dedup"]
    with pytest.raises(UsageError, match="not a benchmark file"):
        run_cli(*argv, "--contamination", bench)


@pytest.mark.parametrize(
    "bad",
    [
        ["--dedup-threshold", "1.5"],
        ["--self-repeat-threshold", "0"],
        ["--min-turns", "-1"],
        ["--format", "alpaca"],
        ["--contamination-action", "delete"],
    ],
)
def test_cli_bad_flags_exit_2(tmp_path, bad, capsys):
    argv = [tmp_path, "--format", "openai", "--out", tmp_path / "x", *bad]
    with pytest.raises(SystemExit) as exit_:
        run_cli(*argv)
    assert exit_.value.code == 2


def test_main_dispatches_export(tmp_path, capsys):
    from cli import main as cli_main

    run = batch_dir(tmp_path)
    out = tmp_path / "x.jsonl"
    assert (
        cli_main.main(["export", str(run), "--format", "openai", "--out", str(out), "--no-dedup"])
        == 0
    )
    assert out.exists()
    capsys.readouterr()
    code = cli_main.main(
        ["export", str(tmp_path / "nope"), "--format", "openai", "--out", str(out)]
    )
    assert code == 2
    assert capsys.readouterr().err.strip().splitlines() == [
        f"error: {tmp_path / 'nope'}: no such batch directory"
    ]


def test_role_models_name_the_model_each_role_ran_with():
    """A manifest written with per-role resolution (`roles`) names e.g. the simulator's adapter."""
    ran = {"simulator": {"model": "smollm2+ideas-1a2b3c4d", "temperature": 0.8}}
    models = role_models({**SETTINGS, "roles": ran}, MANIFEST["agents"])
    assert models["simulator"]["model"] == "smollm2+ideas-1a2b3c4d"
    assert models["simulator"]["temperature"] == 0.8
    assert models["critic"] == role_models(SETTINGS, MANIFEST["agents"])["critic"]


# --- endings (issue 21) --------------------------------------------------------------------------

ENDING_DRAFT = {
    "text": "<|endconversation|>",
    "accepted": True,
    "reason": "the user ended the conversation",
    "similarity": 0.0,
    "ending": True,
}


def ended_doc(job="4.0", turns=("Why?", "How?")):
    doc = make_doc(job, list(turns), status="ended_by_user", reason="the user ended the convo")
    doc.unfinished_turn = UnfinishedTurn(
        index=len(turns) + 1,
        candidates=[],
        strategy=StrategyRef(id="s9", text="text of s9"),
        selection=SelectionSummary(method="llm", note=None),
        drafts=[Verdict.model_validate(ENDING_DRAFT)],
        usage={},
    )
    return doc


def test_simulator_sft_teaches_the_ending_of_a_dialogue_the_user_ended(tmp_path):
    out = tmp_path / "sim.jsonl"
    doc = ended_doc()
    result = export([doc, make_doc("5.0", ["q1"])], "simulator-sft", out)
    records = read_jsonl(out)
    assert [r["id"] for r in records] == ["4.0#1", "4.0#2", "4.0#3", "5.0#1"]
    end = records[2]
    assert (end["instruction"], end["strategy"]) == ("<|endconversation|>", "text of s9")
    assert end["history"] == [m.dump() for m in doc.messages]
    assert end["ideas"]["turn"]["drafts"][-1]["text"] == "<|endconversation|>"
    assert result.records == 4
    # a filter that cut the dialogue drops its unfinished turn, and with it the ending
    cut = ended_doc()
    cut.unfinished_turn = None
    export([cut], "simulator-sft", out)
    assert [r["instruction"] for r in read_jsonl(out)] == ["Why?", "How?"]


def test_card_has_a_histogram_of_user_turns_per_dialogue(tmp_path):
    from batch.card import length_histogram

    docs = [ended_doc("4.0"), ended_doc("4.1", ("a",)), make_doc("5.0", ["q1", "q2"])]
    assert [row.model_dump() for row in length_histogram(docs)] == [
        {"turns": 1, "dialogues": 1, "ended_by_user": 1},
        {"turns": 2, "dialogues": 2, "ended_by_user": 1},
    ]
    kept, report = apply_filters(docs, FilterConfig(dedup=False, min_turns=1))
    out = tmp_path / "data.jsonl"
    result = export(kept, "openai", out)
    card = build_card(
        MANIFEST, run_dir="runs/x", stored=3, failed=0, report=report, result=result, documents=kept
    )
    md = write_card(out, card)[0].read_text(encoding="utf-8")
    assert "## Dialogue lengths" in md
    assert "| 2 | 2 | 1 | #################### |" in md
