"""The report writer: files, the markdown table and its markers, plots, escaped HTML, JSON."""

from __future__ import annotations

import dataclasses
import json
import struct
from pathlib import Path

import pytest

from dialogues.output import OutputError
from evaluation.evaluate import evaluate
from evaluation.inputs import dialogue_from_record, reference_dialogues
from evaluation.plots import depth_by_turn_png
from evaluation.report import markdown, write_report
from evaluation.results import EvaluationResult
from evaluation.samples import pick_samples
from evaluation.specs import METRICS
from induction.records import Pair, Turn
from stores.memory import HashingEmbedding

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
EVIL = "<script>alert('x')</script>"


def ideas_document(job: int, depth: int) -> dict:
    seed = [
        {"role": "user", "content": "How do vaccines work?"},
        {"role": "assistant", "content": "They train memory cells."},
    ]
    messages, turns = list(seed), []
    for index in range(1, 4):
        instruction = f"{EVIL} Why does turn {index} of seed {job} matter?"
        answer = f"<b>Answer</b> {index}"
        scores = {"correct": True, "coherent": True, "depth": depth, "insight": 3, "feedback": "-"}
        accepted = {"text": instruction, "accepted": True, "reason": "<i>ok</i>", "scores": scores}
        rejected = {"text": "<svg onload=1>", "accepted": False, "reason": "too similar"}
        strategy = {"id": f"s{(job + index) % 4}", "text": "<img src=x> ask why it matters"}
        other = {"id": "other", "text": "Summarise the answer in one line"}
        turns.append(
            {
                "index": index,
                "candidates": [strategy, other],
                "strategy": strategy,
                "selection": {"method": "llm", "note": None},
                "drafts": [rejected, accepted],
                "critic": accepted,
                "instruction": instruction,
                "answer": answer,
                "usage": {"assistant": {"calls": 1, "input_tokens": 10, "output_tokens": 5}},
            }
        )
        messages += [
            {"role": "user", "content": instruction},
            {"role": "assistant", "content": answer},
        ]
    return {
        "format": "ideas-dialogue/1",
        "status": "complete",
        "messages": messages,
        "turns": turns,
        "batch": {"job": f"job-{job}"},
        "library": {"count": 8},
    }


def variant(depth: int) -> list:
    return [dialogue_from_record(ideas_document(job, depth), f"d{job}") for job in range(5)]


@pytest.fixture(scope="module")
def samples():
    chat = [("human", "Hi"), ("gpt", "Hello"), ("human", "Why is the sky blue?")]
    foreign = [dialogue_from_record({"conversations": [{"from": f, "value": v} for f, v in chat]})]
    return {"random": variant(2), "ideas": variant(4), "sharegpt": foreign}


@pytest.fixture(scope="module")
def result(samples):
    history = (Turn("user", "Hi"), Turn("assistant", "Hello there"))
    reference = reference_dialogues(
        [Pair("real.json", f"r{i}", 1, history, f"What about case {i}?") for i in range(4)]
    )
    return evaluate(samples, embedder=HashingEmbedding(), reference=reference, resamples=300)


@pytest.fixture(scope="module")
def report(tmp_path_factory, result, samples):
    out = tmp_path_factory.mktemp("report") / "nested" / "dir"
    written = write_report(result, out, samples=samples, samples_per_variant=2)
    return out, written


def table(text: str) -> tuple[list[str], list[list[str]]]:
    rows = [
        [cell.strip() for cell in line.strip().strip("|").split("|")]
        for line in text.splitlines()
        if line.startswith("|")
    ]
    header, separator, *body = rows
    assert all(set(cell) <= {"-"} for cell in separator)
    return header, body


def test_every_file_is_written_and_no_temporary_file_is_left(report):
    out, written = report
    names = {"report.md", "report.json", "metrics.png", "strategies.png", "depth_by_turn.png"}
    assert set(written) == names | {"samples.html"}
    assert sorted(p.name for p in out.iterdir()) == sorted(written)
    assert all(path.stat().st_size > 0 for path in written.values())


def test_markdown_table_has_a_row_per_metric_and_a_column_per_variant(report):
    out, _ = report
    header, body = table((out / "report.md").read_text(encoding="utf-8"))
    assert header == ["metric", "better", "ideas", "random", "sharegpt", "real users"]
    assert len(body) == len(METRICS)
    assert all(len(row) == len(header) for row in body)
    labels = [row[0] for row in body]
    assert labels[0] == "distinct-1 (dataset)" and "critic depth (1-5)" in labels


def test_markers_only_where_the_difference_to_ideas_excludes_zero(report):
    out, _ = report
    _, body = table((out / "report.md").read_text(encoding="utf-8"))
    names = ["better", "ideas", "random", "sharegpt", "real"]
    rows = {row[0]: dict(zip(names, row[1:], strict=True)) for row in body}
    depth = rows["critic depth (1-5)"]
    assert depth["better"] == "↑"
    assert depth["ideas"] == "4.000 [4.000, 4.000]"  # the baseline never gets a marker
    assert depth["random"] == "2.000 [2.000, 2.000] ▼"
    assert depth["sharegpt"] == depth["real"] == "n/a"
    assert rows["critic insight (1-5)"]["random"] == "3.000 [3.000, 3.000]"  # same: no marker
    assert rows["input tokens per turn"]["random"] == "10.0 [10.0, 10.0]"
    assert rows["repetition (mean)"]["better"] == "↓"
    assert rows["judge depth (1-10)"]["ideas"] == "n/a"
    assert not any(cell.endswith(("▲", "▼")) for row in body for cell in [row[2]])


def test_how_to_read_note_explains_cells_markers_and_pairing(report):
    out, _ = report
    text = (out / "report.md").read_text(encoding="utf-8")
    assert "## How to read this" in text
    assert "95% confidence interval" in text and "300 resamples" in text
    assert "paired by seed where both variants share seeds, else unpaired" in text
    assert "- `ideas`: 5 dialogues, 15 instructions (complete 5)" in text


def test_strategy_and_assistant_like_rows(report):
    out, _ = report
    _, body = table((out / "report.md").read_text(encoding="utf-8"))
    names = ["better", "ideas", "random", "sharegpt", "real"]
    rows = {row[0]: dict(zip(names, row[1:], strict=True)) for row in body}
    adherence = rows["strategy adherence (top-1)"]
    assert adherence["better"] == "↑" and adherence["sharegpt"] == adherence["real"] == "n/a"
    # the applied strategy shares 'why' with every instruction, the other candidate no word
    assert adherence["ideas"] == adherence["random"] == "1.000 [1.000, 1.000]"
    chance = rows["strategy adherence, chance (1/k)"]  # every turn has 2 candidates
    assert chance["ideas"] == chance["random"] == "0.500 [0.500, 0.500]"
    assert chance["better"] == "·" and chance["real"] == "n/a"
    # strategy 'ask why it matters' -> {matter}; every instruction ends '... matter?'
    restatement = rows["strategy restatement"]
    assert restatement["better"] == "↓" and restatement["ideas"] == "1.000 [1.000, 1.000]"
    assert restatement["sharegpt"] == restatement["real"] == "n/a"
    assistant = rows["assistant-like user turns"]
    assert assistant["better"] == "↓" and assistant["real"] == "0.000 [0.000, 0.000]"
    data = json.loads((out / "report.json").read_text(encoding="utf-8"))
    assert data["reference"]["metrics"]["assistant_like_rate"]["n"] == 4
    assert data["variants"]["ideas"]["metrics"]["strategy_adherence"]["n"] == 5


@pytest.mark.parametrize("name", ["metrics.png", "strategies.png", "depth_by_turn.png"])
def test_plots_are_real_pngs(report, name):
    out, _ = report
    data = (out / name).read_bytes()
    assert data[:8] == PNG_SIGNATURE and data[12:16] == b"IHDR"
    width, height = struct.unpack(">II", data[16:24])
    assert width >= 300 and height >= 200
    assert len(data) > 10_000  # axes, bars and labels, not an empty canvas


def test_depth_by_turn_falls_back_to_coherence_without_scores(samples):
    only_foreign = evaluate({"sharegpt": samples["sharegpt"]}, embedder=HashingEmbedding())
    assert "critic_depth" not in only_foreign.variants["sharegpt"].per_turn
    assert depth_by_turn_png(only_foreign)[:8] == PNG_SIGNATURE


def test_html_escapes_model_text_and_shows_decisions(report):
    out, _ = report
    page = (out / "samples.html").read_text(encoding="utf-8")
    for raw in [EVIL, "<b>Answer</b>", "<img src=x>", "<i>ok</i>", "<svg onload=1>"]:
        assert raw not in page
    assert "&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt;" in page
    assert "&lt;img src=x&gt; ask why it matters (llm)" in page
    assert "&lt;i&gt;ok&lt;/i&gt; · depth 4/5, insight 3/5" in page
    assert "1 rejected draft" in page and "&lt;svg onload=1&gt;" in page
    assert page.count("<article>") == 2 + 2 + 1  # 2 per variant, sharegpt has only 1


def test_samples_show_the_same_seeds_across_variants(samples):
    chosen = pick_samples(samples, "ideas", 2)
    assert list(chosen) == ["ideas", "random", "sharegpt"]
    assert [d.key for d in chosen["ideas"]] == [d.key for d in chosen["random"]]


def test_json_round_trips(report, result):
    out, _ = report
    data = json.loads((out / "report.json").read_text(encoding="utf-8"))
    assert data == json.loads(json.dumps(result.to_dict()))
    again = EvaluationResult.from_dict(data)
    assert again.to_dict() == data
    assert markdown(again) == (out / "report.md").read_text(encoding="utf-8")
    depth = data["variants"]["random"]["differences"]["critic_depth"]
    assert depth == {"diff": -2.0, "lo": -2.0, "hi": -2.0, "paired": True, "significant": True}
    assert data["variants"]["ideas"]["metrics"]["critic_depth"]["n"] == 5
    assert [m["name"] for m in data["metrics"]] == [spec.name for spec in METRICS]


def test_a_file_in_the_way_is_an_output_error(tmp_path, result):
    blocker = tmp_path / "report"
    blocker.write_text("not a directory")
    with pytest.raises(OutputError, match="report"):
        write_report(result, blocker)


def test_a_sample_page_shows_why_a_dialogue_ended_and_the_judges_reason():
    from evaluation.inputs import from_document
    from evaluation.judge import JudgeScores
    from evaluation.samples import samples_html
    from tests.batch_docs import make_doc

    ended = from_document(make_doc("0.0", ["q1"], status="ended_early", reason="6 <rejected>"))
    scores = JudgeScores(depth=7, insight=6, coherence=9, reason="Builds on <it>.")
    judged = dataclasses.replace(ended, turns=(dataclasses.replace(ended.turns[0], judge=scores),))
    result = EvaluationResult({}, baseline=None)
    page = samples_html(result, {"ideas": [judged]})
    assert '<p class="meta">ended: 6 &lt;rejected&gt;</p>' in page
    assert "<b>judge</b> · depth 7/10, insight 6/10, coherence 9/10 Builds on &lt;it&gt;." in page
    assert "ended:" not in samples_html(result, {"ideas": [from_document(make_doc("1.0", ["q"]))]})


SNAPSHOT = Path(__file__).parent / "snapshots" / "report-v1"
"""A `report.json` and its `report.md` as the writer produced them before the settings were
typed (settings a plain dict): the file format must not change."""


def test_a_report_written_before_the_settings_were_typed_reads_and_renders_the_same():
    data = json.loads((SNAPSHOT / "report.json").read_text(encoding="utf-8"))
    result = EvaluationResult.from_dict(data)
    assert result.settings.resamples == 50 and result.settings.judge.model == "judge-model"
    assert result.to_dict() == data
    assert markdown(result) == (SNAPSHOT / "report.md").read_text(encoding="utf-8")


def test_settings_missing_from_an_older_report_stay_missing():
    data = json.loads((SNAPSHOT / "report.json").read_text(encoding="utf-8"))
    data["settings"] = {"embedder": "ideas-hashing-256", "note": "written by another version"}
    result = EvaluationResult.from_dict(data)
    assert result.to_dict()["settings"] == data["settings"]
    text = markdown(result)
    assert "a 95% confidence interval" in text
    assert "(? resamples of whole dialogues, seed ?)" in text
    assert "Against real users" not in text
