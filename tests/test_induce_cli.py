"""`run.py induce`: builds from the real data and the team's extractions, errors, LLM extraction.

Offline: the real-file builds use the team-written extractions (no model), and the LLM path runs on
scripted fakes injected into the command's Session; nothing starts the embedded llama.cpp server.
The three real-file builds (MiniLM embeddings into Chroma) are the slow part, so they run once per
module and the tests read what they left.
"""

from __future__ import annotations

import ast
import hashlib
import io
import json
from contextlib import redirect_stderr, redirect_stdout
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

import cli.induce as induce_module
from cli.main import main
from induction.extract import ExtractionOutput
from stores.chroma import open_store
from tests.cli_helpers import isolate_cli, lines, run_cli
from tests.data_paths import DATA
from tests.fakes import ScriptedChatModel, tool_reply
from wiring.session import Session

OASST = DATA / "oasst1-en100" / "en_100_tree.jsonl"
HH = DATA / "hh-rlhf-helpful-74" / "realistic_seed_data.json"
RHE = DATA / "realhumaneval-chat" / "chats.jsonl"
SA = DATA / "simulatorarena-doc" / "document_creation_annotations_for_benchmarking.json"
ULTRACHAT = DATA / "ultrachat-eval" / "ultra_eval.json"
TEAM = Path(__file__).resolve().parents[1] / "induction" / "data" / "team_extractions.jsonl"

pytestmark = pytest.mark.skipif(
    not (OASST.is_file() and HH.is_file() and RHE.is_file()),
    reason=f"the shared data is not in {DATA}",
)


# --- helpers -------------------------------------------------------------------------------------


@pytest.fixture(autouse=True)
def cli_env(monkeypatch, tmp_path):
    isolate_cli(monkeypatch, tmp_path / "store")


def captured_main(*argv: Any) -> tuple[int, str, str]:
    """Run the CLI in-process, capturing what its consoles print (usable in any fixture scope)."""
    out, err = io.StringIO(), io.StringIO()
    with redirect_stdout(out), redirect_stderr(err):
        code = main([str(a) for a in argv])
    return code, out.getvalue(), err.getvalue()


def summary_value(stdout: str, key: str) -> Any:
    """Return the value of a `key: value` summary line (a Python literal where it is one)."""
    (line,) = [line for line in lines(stdout) if line.startswith(f"{key}: ")]
    value = line.removeprefix(f"{key}: ")
    try:
        return ast.literal_eval(value)
    except (ValueError, SyntaxError):
        return value


def stats(library: str) -> dict[str, Any]:
    code, out, err = captured_main("strategies", "stats", "--library", library, "--json")
    assert code == 0, err
    return json.loads(out)


def assert_one_line_error(err: str, *fragments: str) -> None:
    assert "Traceback" not in err
    (line,) = lines(err)
    assert line.startswith("error: ")
    for fragment in fragments:
        assert fragment in line, line


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# --- the real data with the team's extractions (built once per module) ---------------------------


@dataclass
class Build:
    code: int
    out: str
    err: str
    stats: dict[str, Any]
    ids: list[str]  # the ids of every record in the store after this build
    sources: set[str]  # the sources named by the records' provenance
    contexts: int  # answer contexts in the store after this build


@pytest.fixture(scope="module")
def real(tmp_path_factory) -> list[Build]:
    """Build `real` from the four files, again from the same files, then from HH-RLHF alone."""
    store = tmp_path_factory.mktemp("real") / "store"
    builds = []
    with pytest.MonkeyPatch.context() as mp:
        isolate_cli(mp, store)
        for files in ([OASST, HH, RHE, SA], [OASST, HH, RHE, SA], [HH]):
            argv = ["induce", "--dialogues", *files, "--extractions", TEAM, "--library", "real"]
            code, out, err = captured_main(*argv)
            library = open_store("real", path=store)
            records = library.records()
            builds.append(
                Build(
                    code,
                    out,
                    err,
                    stats("real") if code == 0 else {},
                    [r.id for r in records],
                    {p.source for r in records for p in r.provenance},
                    library.contexts().count(),
                )
            )
    return builds


def test_real_build_exits_0_and_summarises_1226_pairs(real):
    build = real[0]
    assert build.code == 0, build.err
    assert build.err == ""
    assert summary_value(build.out, "pairs") == 1226
    assert summary_value(build.out, "library").startswith("real (version 1) in ")
    assert summary_value(build.out, "extraction") == {
        "method": "team-written annotations (team_extractions.jsonl)",
        "given": 1226,
        "kept": 1226,
        "invalid": 0,
        "without_pair": 0,
        "llm_calls": 0,
    }
    assert summary_value(build.out, "abstraction") == "centroid"  # auto on the bundled model
    assert summary_value(build.out, "answer contexts") == 1226
    assert summary_value(build.out, "llm calls") == 0
    table = build.out.split("library: ")[0]
    assert "oasst-tree" in table and "380" in table  # pairs per source
    assert "oasst-flat" in table and "105" in table
    assert "openai" in table and "443" in table


def test_stats_agree_with_the_summary(real):
    summary = real[0].out
    data = real[0].stats
    size = summary_value(summary, "library size")
    clusters = summary_value(summary, "clusters per tier")
    assert data["library"] == "real"
    assert data["counts"] == {
        "extracted": 1226,
        "high": size["high"],
        "intermediate": size["intermediate"],
    }
    assert size["extracted"] == 1226
    assert [clusters[1], clusters[2]] == [size["intermediate"], size["high"]]
    assert 0 < size["high"] <= size["intermediate"] < 1226
    meta = data["metadata"]
    assert meta["counts"]["extracted"] == 1226 and meta["counts"]["answers"] == 1226
    assert meta["counts"]["clusters"] == [clusters[1], clusters[2]]
    assert data["support"]["max"] >= data["support"]["median"] >= 1


def test_metadata_is_induced_version_1_with_source_digests(real):
    meta = real[0].stats["metadata"]
    assert meta["induced"] is True
    assert meta["version"] == "1"
    assert meta["name"] == "real"
    assert meta["extraction"] == "team-written annotations (team_extractions.jsonl)"
    assert meta["abstraction"] == "centroid"
    assert meta["embedding"] == "ideas-minilm-int8"
    assert meta["sources"] == {
        OASST.name: sha256(OASST),
        HH.name: sha256(HH),
        RHE.name: sha256(RHE),
        SA.name: sha256(SA),
    }


def test_rebuild_from_the_same_files_bumps_the_version_and_duplicates_nothing(real):
    first, again = real[0], real[1]
    assert again.code == 0, again.err
    assert summary_value(again.out, "library").startswith("real (version 2) in ")
    assert again.stats["metadata"]["version"] == "2"
    assert again.stats["counts"] == first.stats["counts"]
    assert len(again.ids) == len(set(again.ids)) == sum(first.stats["counts"].values())
    assert sorted(again.ids) == sorted(first.ids)  # ids are stable across rebuilds
    assert again.contexts == first.contexts == 1226


def test_rebuild_from_fewer_files_leaves_nothing_of_the_old_version(real):
    build = real[2]
    assert build.code == 0, build.err
    assert summary_value(build.out, "library").startswith("real (version 3) in ")
    assert summary_value(build.out, "pairs") == 105
    extraction = summary_value(build.out, "extraction")
    assert (extraction["given"], extraction["kept"], extraction["without_pair"]) == (
        1226,
        105,
        1121,
    )
    meta = build.stats["metadata"]
    assert meta["version"] == "3"
    assert meta["sources"] == {HH.name: sha256(HH)}
    counts = build.stats["counts"]
    assert counts["extracted"] == 105
    assert len(build.ids) == len(set(build.ids)) == sum(counts.values())
    assert build.sources == {HH.name}
    assert build.contexts == 105


# --- bad input: exit 2, one line on stderr, nothing written --------------------------------------


def test_missing_dialogue_file(capsys, tmp_path):
    missing = tmp_path / "nope.jsonl"
    code, _, err = run_cli(
        capsys, "induce", "--dialogues", HH, missing, "--extractions", TEAM, "--library", "x"
    )
    assert code == 2
    assert_one_line_error(err, f"{missing}: file not found")
    assert not (tmp_path / "store").exists()


def test_file_that_is_not_dialogues(capsys, tmp_path):
    code, _, err = run_cli(
        capsys, "induce", "--dialogues", ULTRACHAT, "--extractions", TEAM, "--library", "x"
    )
    assert code == 2
    assert_one_line_error(err, str(ULTRACHAT), "not a dialogue file")
    assert not (tmp_path / "store").exists()


def test_malformed_extractions_name_the_line(capsys, tmp_path):
    bad = tmp_path / "team.jsonl"
    first = TEAM.read_text(encoding="utf-8").splitlines()[0]
    bad.write_text(f'{first}\n\n{{"source": "x", oops\n', encoding="utf-8")
    code, _, err = run_cli(
        capsys, "induce", "--dialogues", HH, "--extractions", bad, "--library", "x"
    )
    assert code == 2
    assert_one_line_error(err, f"{bad}:3: not JSON")
    assert not (tmp_path / "store").exists()


def test_missing_extractions_file(capsys, tmp_path):
    missing = tmp_path / "team.jsonl"
    code, _, err = run_cli(
        capsys, "induce", "--dialogues", HH, "--extractions", missing, "--library", "x"
    )
    assert code == 2
    assert_one_line_error(err, f"{missing}: file not found")


def test_missing_library(capsys, tmp_path):
    code, _, err = run_cli(capsys, "induce", "--dialogues", HH, "--extractions", TEAM)
    assert code == 2
    assert_one_line_error(err, "induce needs --library NAME")
    assert not (tmp_path / "store").exists()


def test_no_usable_extraction_is_one_line_and_keeps_the_library(capsys, tmp_path):
    chats = write_chats(tmp_path)
    unknown = tmp_path / "team.jsonl"
    line = {"source": "other.json", "record_id": "1", "turn": 1, "analysis": "",
            "strategy": "Ask for an example"}  # fmt: skip
    unknown.write_text(json.dumps(line) + "\n", encoding="utf-8")
    code, _, err = run_cli(
        capsys, "induce", "--dialogues", chats, "--extractions", unknown, "--library", "x"
    )
    assert code == 2
    assert_one_line_error(err, "no strategy passed validation")
    assert not (tmp_path / "store").exists()


# --- LLM extraction with scripted models ---------------------------------------------------------

CHATS = [
    {
        "id": "photo",
        "conversations": [
            {"from": "human", "value": "How can I take sharper photos with my phone?"},
            {"from": "gpt", "value": "Hold it with both hands, tap to focus and find good light."},
            {"from": "human", "value": "Why does tapping the screen make the photo sharper?"},
            {"from": "gpt", "value": "Tapping tells the camera where to focus."},
            {"from": "human", "value": "Could you turn all of this into a checklist I can keep?"},
            {"from": "gpt", "value": "1. Use both hands. 2. Tap to focus. 3. Find good light."},
        ],
    },
    {
        "id": "bread",
        "conversations": [
            {"from": "human", "value": "Why did my bread come out dense?"},
            {"from": "gpt", "value": "Usually the dough was under-proofed or the flour too weak."},
            {"from": "human", "value": "I used bread flour and proofed it for hours. What else?"},
            {"from": "gpt", "value": "Then the yeast may have been old, or the kitchen too cold."},
        ],
    },
    {
        "id": "rome",
        "conversations": [
            {"from": "human", "value": "What should I see in Rome in one day?"},
            {"from": "gpt", "value": "Start at the Colosseum, then the Forum and Trevi Fountain."},
            {"from": "human", "value": "Is that better than a guided bus tour?"},
            {"from": "gpt", "value": "Walking is slower but you see more up close."},
        ],
    },
]
"""Three ShareGPT dialogues, four pairs: photo turns 1 and 2, bread turn 1, rome turn 1."""

KEPT = {
    ("photo", 1): "Ask why one step of the advice works",
    ("photo", 2): "Request the answer reshaped into a checklist",
    ("rome", 1): "Ask how the plan compares with a common alternative",
}
NOT_IMPERATIVE = "the strategy must start with an imperative verb such as 'Ask', not 'The'"


def write_chats(tmp_path: Path) -> Path:
    path = tmp_path / "chats.json"
    path.write_text(json.dumps(CHATS), encoding="utf-8")
    return path


def extraction(strategy: str):
    return tool_reply(
        "ExtractionOutput", analysis="The user reacted to the answer.", strategy=strategy
    )


def extractor_script() -> list:
    """Replies in pair order; the extractor retries a refused phrase with the reason."""
    return [
        extraction(KEPT[("photo", 1)]),
        extraction(f"{KEPT[('photo', 2)]}."),  # tidied: the full stop goes
        *[extraction("The user rules out the usual causes") for _ in range(3)],  # bread: rejected
        extraction("Ask whether the Colosseum is worth the queue"),  # names the dialogue's place
        extraction(KEPT[("rome", 1)]),
    ]


def inject(monkeypatch, **models: ScriptedChatModel) -> None:
    """Make the induce command's Session use these chat models (one per role)."""
    monkeypatch.setattr(
        induce_module, "Session", lambda settings: Session(settings, chat_models=models)
    )


def run_llm_induce(capsys, chats: Path) -> tuple[int, str, str]:
    return run_cli(
        capsys,
        "induce", "--dialogues", chats, "--library", "chat", "--abstraction", "centroid",
        "--base-url", "http://unused",
    )  # fmt: skip


def test_llm_extraction_builds_the_library_and_a_rerun_hits_the_cache(
    capsys, monkeypatch, tmp_path
):
    assert ExtractionOutput.__name__ == "ExtractionOutput"  # the tool name the model answers with
    chats = write_chats(tmp_path)
    extractor = ScriptedChatModel(script=extractor_script())
    abstractor = ScriptedChatModel(script=[])
    inject(monkeypatch, extractor=extractor, abstractor=abstractor)
    code, out, err = run_llm_induce(capsys, chats)

    assert code == 0, err
    assert extractor.unused == 0 and len(extractor.prompts) == 7
    assert abstractor.prompts == []
    retry = extractor.prompts[6][-1].content
    assert "Ask whether the Colosseum is worth the queue" in retry
    assert "was rejected: the strategy names 'Colosseum'" in retry
    assert summary_value(out, "pairs") == 4
    first = summary_value(out, "extraction")
    assert first["method"] == "llm:ScriptedChatModel"
    assert (first["given"], first["kept"], first["rejected"]) == (4, 3, 1)
    assert first["rejection_reasons"] == {NOT_IMPERATIVE: 1}
    assert (first["cached"], first["llm_calls"]) == (0, 7)
    assert summary_value(out, "llm calls") == 7

    data = stats("chat")
    assert data["counts"]["extracted"] == 3
    assert data["metadata"]["version"] == "1" and data["metadata"]["induced"] is True
    assert data["metadata"]["extraction"] == "llm:ScriptedChatModel"
    assert data["metadata"]["sources"] == {"chats.json": sha256(chats)}
    library = open_store("chat", path=tmp_path / "store")
    extracted = {
        (r.provenance[0].record_id, r.provenance[0].turn): r.text
        for r in library.records("extracted")
    }
    assert extracted == KEPT

    cache = tmp_path / "store" / "cache" / "extractions-chat.jsonl"
    cached = [json.loads(line) for line in cache.read_text(encoding="utf-8").splitlines()]
    assert sorted(c["outcome"] for c in cached) == ["extraction"] * 3 + ["rejection"]
    (rejection,) = [c["result"] for c in cached if c["outcome"] == "rejection"]
    assert rejection["key"] == ["chats.json", "bread", 1]
    assert rejection["reason"] == NOT_IMPERATIVE and rejection["attempts"] == 3
    assert rejection["last_strategy"] == "The user rules out the usual causes"

    # The second run finds every pair in the cache: its (empty) script must not be called.
    again = ScriptedChatModel(script=[])
    inject(monkeypatch, extractor=again, abstractor=ScriptedChatModel(script=[]))
    code, out, err = run_llm_induce(capsys, chats)

    assert code == 0, err
    assert again.prompts == []
    second = summary_value(out, "extraction")
    assert (second["kept"], second["rejected"], second["cached"]) == (3, 1, 4)
    assert second["llm_calls"] == 0 and second["rejection_reasons"] == {NOT_IMPERATIVE: 1}
    assert summary_value(out, "llm calls") == 0
    rebuilt = stats("chat")
    assert rebuilt["metadata"]["version"] == "2"
    assert rebuilt["counts"] == data["counts"]
    assert len(cache.read_text(encoding="utf-8").splitlines()) == 4  # nothing appended


@pytest.mark.parametrize("ending", [".", ",", ";", ":", ". "])
def test_extracted_phrases_lose_trailing_punctuation(ending):
    # Measured on SmolLM2: "Ask for a concrete example that applies the idea to a new case," was
    # kept with its trailing comma, a different text from the same phrase without it.
    output = ExtractionOutput(analysis="x", strategy=f'"Ask for a concrete example{ending}"')
    assert output.strategy == "Ask for a concrete example"


def test_every_pair_rejected_is_one_line_and_writes_no_library(capsys, monkeypatch, tmp_path):
    chats = write_chats(tmp_path)
    refused = [extraction("The user rules out the usual causes") for _ in range(12)]
    inject(monkeypatch, extractor=ScriptedChatModel(script=refused))
    code, _, err = run_llm_induce(capsys, chats)

    assert code == 2
    assert_one_line_error(err, "no strategy passed validation", "0 of 4")
    assert main(["strategies", "stats", "--library", "chat"]) == 2  # no library was made
    capsys.readouterr()


def test_unreachable_model_server_is_one_line_exit_1(capsys, monkeypatch, tmp_path):
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    monkeypatch.setenv("IDEAS_MODEL__MAX_RETRIES", "0")
    code, _, err = run_cli(
        capsys, "induce", "--dialogues", write_chats(tmp_path), "--library", "chat",
        "--base-url", f"http://127.0.0.1:{port}/v1",
    )  # fmt: skip
    assert code == 1
    assert_one_line_error(err, "did not answer")
