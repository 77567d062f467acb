"""Dialogue loaders: every real format in ../shared/data, plus hand-made bad inputs."""

from __future__ import annotations

import gzip
import json
from collections import Counter
from pathlib import Path

import pytest

from induction import (
    FORMATS,
    Dialogue,
    NotDialogueFile,
    Pair,
    Turn,
    detect_format,
    load,
    pairs_of,
)
from induction.real_dialogues import REAL_DIALOGUES, main
from tests.data_paths import DATA

REAL = {
    # path: (format, dialogues, pairs, skipped, repaired)
    "oasst1-en100/en_100_tree.jsonl": ("oasst-tree", 359, 380, {}, {}),
    "hh-rlhf-helpful-74/realistic_seed_data.json": (
        "oasst-flat",
        74,
        105,
        {},
        {"merged consecutive same-role turns": 2},
    ),
    "hh-rlhf-harmless-test/test.jsonl.gz": (
        "hh",
        2308,
        3443,
        {"empty text": 4},
        {"merged consecutive same-role turns": 8},
    ),
    "mtbench101/mtbench101.jsonl": ("mtbench101", 1388, 2820, {}, {}),
    "fastchat-sharegpt-fixture/dummy_conversation.json": ("sharegpt", 500, 500, {}, {}),
}

NOT_DIALOGUES = ["ultrachat-eval/ultra_eval.json", "oasst1-en100/prompt_lottery_en_250_text.jsonl"]

needs_data = pytest.mark.skipif(
    not DATA.is_dir(), reason=f"shared data folder {DATA} is absent (it is not part of the repo)"
)


@pytest.fixture(scope="module")
def loaded():
    return {name: load(DATA / name) for name in REAL}


@needs_data
def test_the_real_dialogues_of_the_build_scripts_are_listed_once_and_load(capsys):
    assert main(["DATA"]) == 0
    assert capsys.readouterr().out.splitlines() == [f"DATA/{p}" for p in REAL_DIALOGUES]
    for path in REAL_DIALOGUES:
        assert load(DATA / path).pairs, path


@needs_data
def test_the_ended_dialogues_are_real_dialogues_whose_users_ended_them():
    from induction.real_dialogues import ENDING_DIALOGUES

    assert set(ENDING_DIALOGUES) <= set(REAL_DIALOGUES)
    for path in REAL_DIALOGUES:
        ended = [d.ended_by_user for d in load(DATA / path).dialogues]
        assert all(ended) if path in ENDING_DIALOGUES else not any(ended), path


def write_jsonl(path: Path, rows: list) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def sharegpt(id_: str, *turns: tuple[str, str]) -> dict:
    return {"id": id_, "conversations": [{"from": f, "value": v} for f, v in turns]}


def assert_well_formed(pairs: list[Pair]) -> None:
    assert len({p.key for p in pairs}) == len(pairs)
    for pair in pairs:
        roles = [t.role for t in pair.history]
        assert roles == ["user", "assistant"] * (len(roles) // 2)
        assert pair.turn == len(roles) // 2 >= 1
        assert pair.answer == pair.history[-1].text and pair.followup


# --- real files ---------------------------------------------------------------------------------


@needs_data
@pytest.mark.parametrize("name", sorted(REAL))
def test_real_file_counts(loaded, name):
    fmt, n_dialogues, n_pairs, skipped, repaired = REAL[name]
    result = loaded[name]
    assert (result.format, len(result.dialogues), len(result.pairs)) == (fmt, n_dialogues, n_pairs)
    assert result.skipped == Counter(skipped)
    assert result.repaired == Counter(repaired)


@needs_data
@pytest.mark.parametrize("name", sorted(REAL))
def test_detect_format_sniffs_each_real_file(name):
    assert detect_format(DATA / name) == REAL[name][0]


@needs_data
def test_detect_format_reads_gzip_content_whatever_the_name(tmp_path):
    renamed = tmp_path / "transcripts.data"
    renamed.write_bytes((DATA / "hh-rlhf-harmless-test/test.jsonl.gz").read_bytes())
    assert detect_format(renamed) == "hh"


@needs_data
@pytest.mark.parametrize("name", sorted(REAL))
def test_real_pairs_are_unique_alternating_and_end_with_an_answer(loaded, name):
    result = loaded[name]
    assert all(p.source == Path(name).name for p in result.pairs)
    assert_well_formed(result.pairs)
    for dialogue in result.dialogues:
        roles = [t.role for t in dialogue.turns]
        assert roles == (["user", "assistant"] * len(roles))[: len(roles)]


@needs_data
@pytest.mark.parametrize("name", sorted(REAL))
def test_real_openers_give_no_pair(loaded, name):
    result = loaded[name]
    openers = {d.turns[0] for d in result.dialogues}
    assert not any(p.turn == 0 for p in result.pairs)
    users = sum(sum(t.role == "user" for t in d.turns) - 1 for d in result.dialogues)
    if result.format.startswith("oasst"):
        assert len(result.pairs) <= users  # paths share follow-ups, deduplicated by message id
    else:
        assert len(result.pairs) == users
    assert all(p.history[0] in openers for p in result.pairs)


@needs_data
def test_tree_pairs_are_keyed_by_the_follow_up_message_id(loaded):
    flat = loaded["hh-rlhf-helpful-74/realistic_seed_data.json"]
    first = next(p for p in flat.pairs if p.record_id == "4cw7vsnu")
    assert first.turn == 1
    assert first.followup == "Okay. What else is needed to play, and what are the rules?"
    assert first.history[0].text.startswith("Hi, I want to learn to play horseshoes")
    mtbench = loaded["mtbench101/mtbench101.jsonl"]
    assert mtbench.dialogues[0].record_id == "GR-1"
    assert {p.record_id for p in mtbench.pairs} <= {d.record_id for d in mtbench.dialogues}


@needs_data
@pytest.mark.parametrize("name", NOT_DIALOGUES)
def test_single_questions_are_not_a_dialogue_file(name):
    with pytest.raises(NotDialogueFile, match=r"not a dialogue file \(first record is"):
        load(DATA / name)


# --- hand-made inputs -------------------------------------------------------------------------


def test_sharegpt_bad_records_are_skipped_and_counted(tmp_path):
    rows = [
        sharegpt("ok", ("human", "Hi"), ("gpt", "Hello"), ("human", "Why?"), ("gpt", "Because.")),
        sharegpt("empty", ("human", "Hi"), ("gpt", "  ")),
        sharegpt("late", ("gpt", "I speak first"), ("human", "Hi")),
        sharegpt("odd", ("human", "Hi"), ("narrator", "Meanwhile")),
        {"id": "nothing"},
        sharegpt("merged", ("system", "Be nice"), ("user", "A"), ("human", "B"), ("chatgpt", "C")),
    ]
    path = write_jsonl(tmp_path / "chats.jsonl", rows)
    with path.open("a") as fh:
        fh.write("{not json\n")
    result = load(path)
    assert result.format == "sharegpt"
    assert [d.record_id for d in result.dialogues] == ["ok", "merged"]
    assert result.dialogues[1].turns == (Turn("user", "A\n\nB"), Turn("assistant", "C"))
    assert result.skipped == Counter(
        {
            "empty text": 1,
            "starts with assistant": 1,
            "unknown role": 1,
            "missing fields": 1,
            "invalid JSON": 1,
        }
    )
    assert result.repaired == Counter({"merged consecutive same-role turns": 1})
    assert [p.key for p in result.pairs] == [("chats.jsonl", "ok", 1)]


def test_repeated_ids_are_made_unique(tmp_path):
    convo = sharegpt("same", ("human", "Q"), ("gpt", "A"), ("human", "Q2"))
    path = tmp_path / "dup.json"
    path.write_text(json.dumps([convo, convo]))
    result = load(path)
    assert [d.record_id for d in result.dialogues] == ["same", "same#2"]
    assert [p.record_id for p in result.pairs] == ["same", "same#2"]


@pytest.mark.parametrize(
    "text",
    [
        json.dumps([[{"role": "user", "content": "Q"}, {"role": "assistant", "content": "A"}]]),
        json.dumps(
            {"messages": [{"role": "user", "content": "Q"}, {"role": "assistant", "content": "A"}]}
        )
        + "\n",
        json.dumps([{"role": "user", "content": "Q"}, {"role": "assistant", "content": "A"}])
        + "\n"
        + json.dumps([{"role": "user", "content": [{"type": "text", "text": "Q"}]}])
        + "\n",
    ],
    ids=["json-list-of-lists", "jsonl-messages", "jsonl-bare-lists"],
)
def test_openai_shapes(tmp_path, text):
    path = tmp_path / "openai.jsonl"
    path.write_text(text)
    result = load(path)
    assert result.format == "openai" and not result.skipped
    assert result.dialogues[0].turns == (Turn("user", "Q"), Turn("assistant", "A"))
    assert result.pairs == []


def test_openai_tool_messages_are_skipped(tmp_path):
    msgs = [{"role": "user", "content": "Q"}, {"role": "tool", "content": "42"}]
    path = write_jsonl(tmp_path / "tools.jsonl", [{"messages": msgs}])
    assert load(path).skipped == Counter({"unknown role": 1})


def oasst_msg(msg_id: str, role: str, text: str, rank=None, replies=()) -> dict:
    return {
        "message_id": msg_id,
        "role": role,
        "text": text,
        "rank": rank,
        "replies": list(replies),
    }


def test_oasst_tree_branches_into_followed_answers_else_the_best_ranked(tmp_path):
    tree = oasst_msg(
        "q",
        "prompter",
        "Question",
        replies=[
            oasst_msg(
                "a1", "assistant", "Answer 1", rank=1, replies=[oasst_msg("f1", "prompter", "F1")]
            ),
            oasst_msg("a0", "assistant", "Answer 0", rank=0),
            oasst_msg(
                "a2",
                "assistant",
                "Answer 2",
                rank=None,
                replies=[
                    oasst_msg("f2", "prompter", "F2", replies=[oasst_msg("x", "assistant", "")]),
                    oasst_msg(
                        "f3",
                        "prompter",
                        "F3",
                        replies=[
                            oasst_msg("b2", "assistant", "B2", rank=None),
                            oasst_msg("b1", "assistant", "B1", rank=None),
                        ],
                    ),
                ],
            ),
        ],
    )
    path = write_jsonl(tmp_path / "tree.jsonl", [{"message_tree_id": "t", "prompt": tree}])
    result = load(path)
    assert result.format == "oasst-tree"
    assert [d.record_id for d in result.dialogues] == ["t/f1", "t/f2", "t/b2"]
    assert result.dialogues[-1].turns[-1] == Turn("assistant", "B2", "b2")
    assert result.skipped == Counter({"empty text": 1})
    assert [(p.record_id, p.turn, p.answer) for p in result.pairs] == [
        ("f1", 1, "Answer 1"),
        ("f2", 1, "Answer 2"),
        ("f3", 1, "Answer 2"),
    ]


def test_oasst_tree_keeps_the_best_ranked_dead_end_answer(tmp_path):
    tree = oasst_msg(
        "q",
        "prompter",
        "Question",
        replies=[
            oasst_msg("u", "assistant", "Unranked", rank=None),
            oasst_msg("r1", "assistant", "Second", rank=1),
            oasst_msg("r0", "assistant", "Best", rank=0),
        ],
    )
    path = write_jsonl(tmp_path / "tree.jsonl", [{"message_tree_id": "t", "prompt": tree}])
    (dialogue,) = load(path).dialogues
    assert dialogue.turns[-1].text == "Best"


def test_oasst_flat_rebuilds_trees_from_parent_ids(tmp_path):
    def msg(own, parent, role, text):
        return {
            "task_message_id": f"task-{own}",
            "user_message_id": own,
            "parent_message_id": parent,
            "role": role,
            "text": text,
        }

    rows = [
        msg("q", None, "prompter", "Question"),
        msg("f", "a", "prompter", "Follow-up"),
        msg("a", "q", "assistant", "Answer"),
        msg("gone", "nowhere", "prompter", "Orphan"),
        msg("e", "a", "prompter", " "),
        msg("below-e", "e", "assistant", "Never seen"),
        {**msg("d", "a", "prompter", "Deleted"), "deleted": True},
    ]
    path = tmp_path / "flat.json"
    path.write_text(json.dumps(rows))
    result = load(path)
    assert result.format == "oasst-flat"
    assert [d.record_id for d in result.dialogues] == ["q/f"]
    assert result.skipped == Counter({"missing parent": 1, "empty text": 1, "deleted message": 1})
    assert [p.key for p in result.pairs] == [("flat.json", "f", 1)]


def test_hh_transcripts_gzip_and_plain(tmp_path):
    rows = [
        {"chosen": "\n\nHuman: Hi\n\nAssistant: Hello\n\nHuman: Bye", "rejected": "x"},
        {"chosen": "\n\nHuman: Hi\n\nAssistant:", "rejected": "x"},
        {"chosen": "no tags at all", "rejected": "x"},
        {"rejected": "x"},
    ]
    text = "".join(json.dumps(r) + "\n" for r in rows)
    plain = tmp_path / "hh.jsonl"
    plain.write_text(text)
    packed = tmp_path / "hh.jsonl.gz"
    packed.write_bytes(gzip.compress(text.encode()))
    for path in (plain, packed):
        result = load(path)
        assert result.format == "hh"
        assert [d.record_id for d in result.dialogues] == ["0"]
        assert result.skipped == Counter(
            {"empty text": 1, "not a Human/Assistant transcript": 1, "missing fields": 1}
        )
        assert [(p.key, p.followup) for p in result.pairs] == [((path.name, "0", 1), "Bye")]


def test_mtbench101_rows(tmp_path):
    rows = [
        {
            "task": "CM",
            "id": 7,
            "history": [{"user": "Q1", "bot": "A1"}, {"user": "Q2", "bot": "A2"}],
        },
        {"task": "CM", "history": [{"user": "Q1", "bot": "A1"}]},
    ]
    result = load(write_jsonl(tmp_path / "mt.jsonl", rows))
    assert result.format == "mtbench101"
    assert result.skipped == Counter({"missing fields": 1})
    assert [(p.key, p.answer, p.followup) for p in result.pairs] == [
        (("mt.jsonl", "CM-7", 1), "A1", "Q2")
    ]


@pytest.mark.parametrize(
    ("name", "text", "reason"),
    [
        ("table.csv", "id,question\n1,Why?\n", "not JSON or JSON Lines"),
        (
            "random.json",
            json.dumps({"a": 1, "b": [1, 2]}),
            "first record is a record with keys a, b",
        ),
        ("numbers.json", "[1, 2, 3]", "first record is a int"),
        ("empty.jsonl", "\n", "empty file"),
    ],
)
def test_not_a_dialogue_file(tmp_path, name, text, reason):
    path = tmp_path / name
    path.write_text(text)
    with pytest.raises(NotDialogueFile) as info:
        load(path)
    assert str(info.value) == f"{path}: not a dialogue file ({reason})"
    assert "\n" not in str(info.value)


def test_unknown_format_name_is_rejected(tmp_path):
    with pytest.raises(ValueError, match="unknown dialogue format 'csv'"):
        load(tmp_path / "x.json", format="csv")
    assert set(FORMATS) == {
        "sharegpt",
        "openai",
        "oasst-tree",
        "oasst-flat",
        "hh",
        "mtbench101",
        "simulatorarena",
        "mirrorbench",
    }


def test_pairs_of_skips_the_opener_and_unanswered_turns():
    turns = (
        Turn("user", "Open", "u0"),
        Turn("assistant", "A0"),
        Turn("user", "Next", "u1"),
        Turn("assistant", "A1"),
        Turn("user", "Dangling", "u2"),
    )
    pairs = pairs_of(Dialogue("d", turns), "src.json")
    assert [(p.key, p.followup, p.answer) for p in pairs] == [
        (("src.json", "u1", 1), "Next", "A0"),
        (("src.json", "u2", 2), "Dangling", "A1"),
    ]
    assert pairs_of(Dialogue("d", turns[:2]), "src.json") == []
    assert pairs_of(Dialogue("d", (Turn("user", "a"), Turn("user", "b"))), "src.json") == []
    assert [p.record_id for p in pairs_of(Dialogue("d", (turns[1], turns[0])), "s")] == []
