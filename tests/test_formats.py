"""The one chat reader: seeds, induction loaders and evaluation inputs read a record alike."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest

from batch.jobs import load_seed_set
from dialogues.formats import (
    ROLE_ALIASES,
    BadRecord,
    ChatFileError,
    join_content,
    parse_record,
    read_chats,
)
from dialogues.seeds import parse_seed
from evaluation.inputs import EvalInputError, dialogue_from_record, load_dialogues
from induction.loaders import load

TURNS = [("user", "Q"), ("assistant", "A"), ("user", "F")]


def openai(*messages: tuple[str, object]) -> list[dict]:
    return [{"role": r, "content": c} for r, c in messages]


def sharegpt(*messages: tuple[str, object]) -> dict:
    return {"conversations": [{"from": r, "value": v} for r, v in messages]}


RECORDS = {
    "openai-list": openai(("user", "Q"), ("assistant", "A"), ("user", "F")),
    "openai-messages": {"messages": openai(("user", "Q"), ("assistant", "A"), ("user", "F"))},
    "sharegpt": sharegpt(("human", "Q"), ("gpt", "A"), ("human", "F")),
    "sharegpt-model": sharegpt(("human", "Q"), ("model", "A"), ("human", "F")),
    "sharegpt-prompter-bot": sharegpt(("prompter", "Q"), ("bot", "A"), ("prompter", "F")),
    "aliases-any-case": openai(("Human", "Q"), ("ChatGPT", "A"), ("USER", "F")),
    "openai-keys-in-sharegpt": {
        "conversations": openai(("user", "Q"), ("assistant", "A"), ("user", "F"))
    },
    "text-parts": openai(
        ("user", [{"type": "text", "text": "Q"}]),
        ("assistant", [{"type": "text", "text": "A"}, {"type": "image_url", "image_url": {}}]),
        ("user", ["F"]),
    ),
    "sharegpt-parts": sharegpt(
        ("human", [{"type": "text", "text": "Q"}]), ("gpt", "A"), ("human", "F")
    ),
    "padded-text": openai(("user", "  Q\n"), ("assistant", "\tA "), ("user", "F\n\n")),
    "leading-system": openai(("system", "S"), ("user", "Q"), ("assistant", "A"), ("user", "F")),
    "developer": openai(("developer", "S"), ("user", "Q"), ("assistant", "A"), ("user", "F")),
    "system-field": {"system": "S"} | sharegpt(("human", "Q"), ("gpt", "A"), ("human", "F")),
}
SYSTEM = {"leading-system", "developer", "system-field"}


def pairs(messages: list[dict]) -> list[tuple[str, str]]:
    return [(m["role"], m["content"]) for m in messages]


@pytest.mark.parametrize("name", sorted(RECORDS))
def test_seeds_loaders_and_eval_read_a_record_alike(tmp_path, name):
    record = RECORDS[name]
    path = tmp_path / "chat.jsonl"
    path.write_text(json.dumps(record) + "\n")
    seed = parse_seed(record, "chat.jsonl#0")
    assert pairs(seed.to_openai_messages(include_system=False)) == TURNS
    assert seed.system == ("S" if name in SYSTEM else None)
    (dialogue,) = load(path).dialogues  # induction drops system messages
    assert [(t.role, t.text) for t in dialogue.turns] == TURNS
    for evaluated in (dialogue_from_record(record), *load_dialogues(path)):
        system = [("system", "S")] if name in SYSTEM else []
        assert [(m.role, m.content) for m in evaluated.messages] == system + TURNS
        assert evaluated.instructions == ["F"]
    (from_batch,) = load_seed_set(path).seeds
    assert from_batch.to_openai_messages() == seed.to_openai_messages()


def test_one_alias_table_and_one_joiner():
    assert {ROLE_ALIASES[k] for k in ("model", "bot", "gpt", "prompter", "human")} == {
        "assistant",
        "user",
    }
    assert join_content([{"type": "text", "text": "a"}, " ", "b", {"type": "image"}]) == "a\nb"
    assert join_content([3]) is None and join_content(None) is None


def test_a_sharegpt_seed_spoken_by_model_is_accepted():
    seed = parse_seed(sharegpt(("human", "Q"), ("model", "A")), "s.json")
    assert [m.role for m in seed.messages] == ["user", "assistant"]


BAD_LINE = json.dumps(sharegpt(("human", "Q"), ("robot", "A")))


def bad_file(tmp_path: Path) -> Path:
    path = tmp_path / "chats.jsonl"
    good = json.dumps(RECORDS["sharegpt"])
    path.write_text(f"{good}\n\n{BAD_LINE}\n{good}\n")
    return path


def test_a_bad_record_is_skipped_and_counted_by_the_loader(tmp_path):
    result = load(bad_file(tmp_path))
    assert [d.record_id for d in result.dialogues] == ["0", "2"]  # indexes skip blank lines
    assert result.skipped == Counter({"unknown role": 1})
    seeds = load_seed_set(bad_file(tmp_path))
    assert len(seeds.seeds) == 2 and sum(seeds.skipped.values()) == 1


def test_a_bad_record_is_a_one_line_error_for_eval(tmp_path):
    path = bad_file(tmp_path)
    with pytest.raises(EvalInputError) as info:
        load_dialogues(path)
    assert str(info.value) == (
        f"{path}: line 3: message 2 has role 'robot' (unknown role 'robot'): expected user, "
        "assistant or system (ShareGPT: human, gpt or system)"
    )
    with pytest.raises(ChatFileError, match=r"chats\.jsonl: line 3: message 2 has role 'robot'"):
        read_chats(path, on_bad_record="raise")


def test_bad_records_name_the_reason_counted_and_the_message_at_fault():
    with pytest.raises(BadRecord) as info:
        parse_record(openai(("user", "Q"), ("assistant", "  ")), "openai")
    assert info.value.reason == "empty text"
    assert str(info.value) == "message 2 (assistant) has empty content"


def test_system_messages_are_kept_or_dropped(tmp_path):
    path = tmp_path / "chat.json"
    path.write_text(json.dumps(RECORDS["leading-system"]))
    kept = read_chats(path).chats[0].messages
    dropped = read_chats(path, keep_system=False).chats[0].messages
    assert [m.role for m in kept] == ["system", "user", "assistant", "user"]
    assert kept[1:] == dropped


def test_eval_reads_the_other_linear_formats():
    hh = dialogue_from_record({"chosen": "\n\nHuman: Q\n\nAssistant: A\n\nHuman: F"})
    mt = dialogue_from_record({"task": "CM", "id": 1, "history": [{"user": "Q", "bot": "A"}]})
    assert (hh.source, hh.instructions) == ("hh", ["F"])
    assert [(m.role, m.content) for m in hh.messages] == TURNS
    assert (mt.source, mt.key, mt.instructions) == ("mtbench101", "CM-1", [])
