"""`run.py ablate` and `run.py eval` as a user runs them, on a fake model server."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from batch.store import iter_dialogues
from cli.main import main
from tests.data_paths import DATA
from tests.fake_openai import FakeOpenAI

ROOT = Path(__file__).resolve().parents[1]


def seeds(tmp_path: Path) -> Path:
    path = tmp_path / "seeds.txt"
    path.write_text("How do tides work?\nWhat is inflation?\nWhy is the sky blue?\n")
    return path


def ablate_argv(tmp_path: Path, base_url: str, *extra: str) -> list[str]:
    return [
        "ablate",
        "--seeds", str(seeds(tmp_path)),
        "--n", "3",
        "--turns", "2",
        "--out", str(tmp_path / "report"),
        "--base-url", base_url,
        "--library", "starter",
        "--store", str(tmp_path / "store"),
        "--quiet",
        *extra,
    ]  # fmt: skip


def test_ablate_grows_each_variant_from_the_same_seeds_and_reports(tmp_path, capsys):
    with FakeOpenAI() as fake:
        argv = ablate_argv(tmp_path, fake.base_url, "--variants", "ideas,plain,no-critic")
        code = main(argv)
        assert code == 0
        requests = len(fake.requests)
        assert main(argv) == 0  # resumed: everything is stored, nothing is generated again
        assert len(fake.requests) == requests
    out = capsys.readouterr().out
    report = tmp_path / "report"
    runs = {v: list(iter_dialogues(report / "runs" / v)) for v in ("ideas", "plain", "no-critic")}
    for docs in runs.values():
        assert sorted(d.job for d in docs) == ["000000.0", "000001.0", "000002.0"]
    assert all(t.strategy for d in runs["ideas"] for t in d.turns)
    assert all(t.strategy is None for d in runs["plain"] for t in d.turns)
    assert all(d.settings["agents"]["critic"] == "none" for d in runs["no-critic"])
    assert all(t.drafts[-1].accepted for d in runs["no-critic"] for t in d.turns)
    data = json.loads((report / "report.json").read_text())
    assert set(data["variants"]) == {"ideas", "plain", "no-critic"}
    assert data["baseline"] == "ideas"
    generation = data["settings"]["generation"]
    assert generation["plain"]["agents"]["simulator"] == "plain"
    assert generation["ideas"]["roles"]["simulator"]["temperature"] == 0.8
    assert generation["ideas"]["seeds"]["sha256"] == generation["plain"]["seeds"]["sha256"]
    for name in ["report.md", "metrics.png", "strategies.png", "depth_by_turn.png"]:
        assert (report / name).stat().st_size > 0
    assert (report / "metrics.png").read_bytes().startswith(b"\x89PNG\r\n\x1a\n")
    assert "| metric | better | ideas | plain | no-critic |" in (report / "report.md").read_text()
    assert "evaluation (mean" in out


def test_unknown_variant_is_a_one_line_error(tmp_path, capsys):
    code = main(ablate_argv(tmp_path, "http://127.0.0.1:9/v1", "--variants", "ideas,best"))
    err = capsys.readouterr().err
    assert code == 2
    assert err.strip() == (
        "error: unknown variant 'best'; choose from ideas, plain, random-strategy, "
        "learned-strategy, no-critic, prompted, prompted-plain"
    )


def test_eval_compares_our_batch_with_another_tools_sharegpt_file(tmp_path, capsys):
    with FakeOpenAI() as fake:
        argv = ablate_argv(tmp_path, fake.base_url, "--variants", "ideas")
        assert main(argv) == 0
        sharegpt = DATA / "fastchat-sharegpt-fixture" / "dummy_conversation.json"
        code = main(
            [
                "eval",
                f"ideas={tmp_path / 'report' / 'runs' / 'ideas'}",
                f"fastchat={sharegpt}",
                "--reference", str(DATA / "oasst1-en100" / "en_100_tree.jsonl"),
                "--judge-model", "fake-judge",
                "--judge-base-url", fake.base_url,
                "--out", str(tmp_path / "eval"),
            ]
        )  # fmt: skip
        judged = [r for r in fake.requests if r.get("model") == "fake-judge"]
    assert code == 0
    data = json.loads((tmp_path / "eval" / "report.json").read_text())
    assert set(data["variants"]) == {"ideas", "fastchat"}
    assert data["reference"] is not None
    ideas, fastchat = data["variants"]["ideas"], data["variants"]["fastchat"]
    assert ideas["metrics"]["judge_depth"]["mean"] is not None
    assert fastchat["metrics"]["rejection_rate"]["mean"] is None  # no critic data: n/a, not 0
    instructions = ideas["turns"] + fastchat["turns"]
    assert len(judged) == instructions  # one judge call per generated instruction
    out = " ".join(capsys.readouterr().out.split())
    assert "fastchat:" in out
    # the real users' adherence level beside the generated one, and the domain misfit row
    assert "real users' strategy adherence (top-1)" in out
    assert "Against real users" in (tmp_path / "eval" / "report.md").read_text()
    assert ideas["metrics"]["strategy_misfit"]["mean"] is not None
    assert fastchat["metrics"]["strategy_misfit"]["mean"] is None


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["eval", "missing.jsonl", "--out", "x"], "missing.jsonl"),
        (["eval", "a=x.json", "a=y.json", "--out", "x"], "two dialogue sets are named 'a'"),
        (["eval", "x.json", "--judge-model", "m", "--out", "x"], "--judge-model needs"),
    ],
)
def test_eval_input_errors_are_one_line(tmp_path, capsys, monkeypatch, argv, message):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "x.json").write_text("[]")
    code = main(argv)
    err = capsys.readouterr().err
    assert code == 2
    assert message in err
    assert err.count("\n") == 1


@pytest.mark.embedded
def test_tiny_real_ablation_on_the_embedded_model(tmp_path, capsys):
    """Two variants, one seed, one turn each, on the bundled SmolLM2 and MiniLM."""
    code = main(
        [
            "ablate",
            "--seeds", str(ROOT / "examples" / "question.txt"),
            "--variants", "ideas,plain",
            "--n", "1",
            "--turns", "1",
            "--out", str(tmp_path / "report"),
            "--store", str(tmp_path / "store"),
            "--quiet",
        ]
    )  # fmt: skip
    assert code == 0
    data = json.loads((tmp_path / "report" / "report.json").read_text())
    assert data["variants"]["ideas"]["dialogues"] == 1
    assert data["variants"]["plain"]["dialogues"] == 1
    [ideas] = iter_dialogues(tmp_path / "report" / "runs" / "ideas")
    assert ideas.settings["agents"]["critic"] == "novelty"  # auto on the bundled model
    assert ideas.summary.llm_calls >= 2


def test_eval_of_a_broken_json_file_names_the_problem(tmp_path, capsys):
    broken = tmp_path / "broken.json"
    broken.write_text('{"messages": [oops')
    assert main(["eval", str(broken), "--out", str(tmp_path / "x")]) == 2
    assert "line 1: invalid JSON" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()


def plain_simulator_on_sky(body: dict) -> bool:
    """Fail the plain variant's simulator on the sky seed: that job fails in one variant only."""
    texts = [str(m.get("content")) for m in body.get("messages", [])]
    system = texts[0] if texts else ""
    plain = system.startswith("You are a human user") and "told the strategy" not in system
    return plain and any("sky blue" in t for t in texts)


def test_ablate_compares_only_the_jobs_every_variant_stored(tmp_path, capsys):
    with FakeOpenAI(fail=plain_simulator_on_sky) as fake:
        code = main(ablate_argv(tmp_path, fake.base_url, "--variants", "ideas,plain"))
    out = capsys.readouterr().out
    assert code == 0
    report = tmp_path / "report"
    assert len(list(iter_dialogues(report / "runs" / "ideas"))) == 3
    assert len(list(iter_dialogues(report / "runs" / "plain"))) == 2
    data = json.loads((report / "report.json").read_text())
    assert {v["dialogues"] for v in data["variants"].values()} == {2}
    differences = data["variants"]["plain"]["differences"]
    assert all(d["paired"] for d in differences.values())
    assert "compared on the 2 jobs every variant stored; dropped ideas 1" in " ".join(out.split())


def test_several_reference_files_are_pooled(tmp_path):
    from cli.evaluate import load_reference

    oasst = DATA / "oasst1-en100" / "en_100_tree.jsonl"
    code = DATA / "realhumaneval-chat" / "chats.jsonl"
    one, other = load_reference([oasst]), load_reference([code])
    both = load_reference([oasst, code])
    assert len(both) == len(one) + len(other) and len(one) > 0 and len(other) > 0
