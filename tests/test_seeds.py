import json
import os
from pathlib import Path

import pytest
from pydantic import ValidationError

from dialogues.seeds import Seed, SeedError, SeedMessage, load_seed, parse_seed

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"

QUESTION = "What is a monad?"
ANSWER = "A design pattern for chaining computations."
FOLLOW_UP = "Can you give an example in Python?"


def write(tmp_path: Path, name: str, content: str | bytes) -> Path:
    path = tmp_path / name
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content, encoding="utf-8")
    return path


def write_json(tmp_path: Path, data: object, name: str = "seed.json") -> Path:
    return write(tmp_path, name, json.dumps(data))


def openai(*pairs: tuple[str, object]) -> list[dict[str, object]]:
    return [{"role": role, "content": content} for role, content in pairs]


def assert_seed_error(path: Path, *fragments: str) -> SeedError:
    with pytest.raises(SeedError) as info:
        load_seed(path)
    message = str(info.value)
    assert "\n" not in message
    assert path.name in message
    assert message.startswith(f"{path}: ")
    for fragment in fragments:
        assert fragment in message
    return info.value


# Accepted shapes


def test_openai_list(tmp_path):
    path = write_json(tmp_path, openai(("user", QUESTION), ("assistant", ANSWER)))
    seed = load_seed(path)
    assert seed.messages == [
        SeedMessage(role="user", content=QUESTION),
        SeedMessage(role="assistant", content=ANSWER),
    ]
    assert seed.system is None
    assert seed.source == str(path)
    assert not seed.ends_with_user


def test_messages_wrapper(tmp_path):
    data = {"messages": openai(("user", QUESTION), ("assistant", ANSWER), ("user", FOLLOW_UP))}
    seed = load_seed(write_json(tmp_path, data))
    assert [m.role for m in seed.messages] == ["user", "assistant", "user"]
    assert seed.ends_with_user


def test_sharegpt_record(tmp_path):
    data = {
        "id": "x1",
        "conversations": [
            {"from": "human", "value": QUESTION},
            {"from": "gpt", "value": ANSWER},
        ],
    }
    seed = load_seed(write_json(tmp_path, data))
    assert [(m.role, m.content) for m in seed.messages] == [
        ("user", QUESTION),
        ("assistant", ANSWER),
    ]


def test_sharegpt_record_in_one_element_list(tmp_path):
    data = [{"conversations": [{"from": "human", "value": QUESTION}]}]
    seed = load_seed(write_json(tmp_path, data))
    assert seed.messages == [SeedMessage(role="user", content=QUESTION)]


@pytest.mark.parametrize(
    ("user", "assistant"),
    [
        ("user", "assistant"),
        ("Human", "GPT"),
        ("human", "chatgpt"),
        ("human", "bing"),
        ("human", "bard"),
    ],
)
def test_sharegpt_aliases(tmp_path, user, assistant):
    data = {
        "conversations": [{"from": user, "value": QUESTION}, {"from": assistant, "value": ANSWER}]
    }
    seed = load_seed(write_json(tmp_path, data))
    assert [m.role for m in seed.messages] == ["user", "assistant"]


def test_sharegpt_system(tmp_path):
    data = {
        "conversations": [
            {"from": "system", "value": "Be brief."},
            {"from": "human", "value": QUESTION},
        ]
    }
    seed = load_seed(write_json(tmp_path, data))
    assert seed.system == "Be brief."
    assert seed.messages == [SeedMessage(role="user", content=QUESTION)]


def test_sharegpt_top_level_system_field(tmp_path):
    data = {"system": "Be brief.", "conversations": [{"from": "human", "value": QUESTION}]}
    assert load_seed(write_json(tmp_path, data)).system == "Be brief."


def test_json_string_is_a_question(tmp_path):
    seed = load_seed(write_json(tmp_path, f"  {QUESTION}  "))
    assert seed.messages == [SeedMessage(role="user", content=QUESTION)]
    assert seed.ends_with_user


def test_text_file_is_a_question(tmp_path):
    text = "Explain TCP slow start.\n\nKeep it short, with one example.\n"
    seed = load_seed(write(tmp_path, "question.txt", text))
    assert seed.messages == [SeedMessage(role="user", content=text.strip())]


def test_text_file_starting_with_a_bracket_is_still_a_question(tmp_path):
    seed = load_seed(write(tmp_path, "question.txt", "[Homework] What is entropy?"))
    assert seed.messages[0].content == "[Homework] What is entropy?"


def test_plain_text_in_a_json_file_is_a_question(tmp_path):
    seed = load_seed(write(tmp_path, "seed.json", "What is entropy?\n"))
    assert seed.messages[0].content == "What is entropy?"


def test_utf8_bom_and_unicode_are_accepted(tmp_path):
    data = json.dumps(openai(("user", "Qu'est-ce qu'un café ☕ ?")), ensure_ascii=False)
    seed = load_seed(write(tmp_path, "seed.json", "\ufeff" + data))
    assert seed.messages[0].content == "Qu'est-ce qu'un café ☕ ?"


def test_content_parts_are_joined(tmp_path):
    content = [
        {"type": "text", "text": "Look at this chart."},
        {"type": "image_url", "image_url": {"url": "http://example.com/a.png"}},
        {"type": "text", "text": "What trend does it show?"},
    ]
    seed = load_seed(write_json(tmp_path, openai(("user", content))))
    assert seed.messages[0].content == "Look at this chart.\nWhat trend does it show?"


def test_content_is_stripped(tmp_path):
    seed = load_seed(write_json(tmp_path, openai(("user", f"\n  {QUESTION}\t "))))
    assert seed.messages[0].content == QUESTION


# System messages


def test_leading_system_message_is_kept_apart(tmp_path):
    data = openai(("system", "You are terse."), ("user", QUESTION), ("assistant", ANSWER))
    seed = load_seed(write_json(tmp_path, data))
    assert seed.system == "You are terse."
    assert [m.role for m in seed.messages] == ["user", "assistant"]
    assert seed.to_openai_messages()[0] == {"role": "system", "content": "You are terse."}
    assert len(seed.to_openai_messages(include_system=False)) == 2


def test_empty_system_message_is_dropped(tmp_path):
    seed = load_seed(write_json(tmp_path, openai(("system", "  "), ("user", QUESTION))))
    assert seed.system is None
    assert seed.to_openai_messages() == [{"role": "user", "content": QUESTION}]


def test_later_system_message_is_rejected(tmp_path):
    data = openai(("user", QUESTION), ("system", "Be terse."), ("assistant", ANSWER))
    assert_seed_error(write_json(tmp_path, data), "message 2 has role 'system'")


def test_second_system_message_is_rejected(tmp_path):
    data = openai(("system", "A"), ("system", "B"), ("user", QUESTION))
    assert_seed_error(write_json(tmp_path, data), "message 2 has role 'system'")


def test_only_a_system_message_is_rejected(tmp_path):
    assert_seed_error(write_json(tmp_path, openai(("system", "A"))), "no user or assistant")


# Alternation


def test_must_start_with_user(tmp_path):
    data = openai(("assistant", ANSWER), ("user", QUESTION))
    assert_seed_error(write_json(tmp_path, data), "message 1 has role 'assistant'", "start with")


def test_must_start_with_user_after_system(tmp_path):
    data = openai(("system", "S"), ("assistant", ANSWER))
    assert_seed_error(write_json(tmp_path, data), "message 2 has role 'assistant'")


def test_two_user_turns_in_a_row(tmp_path):
    data = openai(("user", QUESTION), ("user", FOLLOW_UP))
    assert_seed_error(write_json(tmp_path, data), "message 2 has role 'user'", "'assistant'")


def test_alternation_counts_the_system_message(tmp_path):
    data = openai(("system", "S"), ("user", QUESTION), ("assistant", ANSWER), ("assistant", ANSWER))
    assert_seed_error(write_json(tmp_path, data), "message 4 has role 'assistant'")


def test_seed_model_validates_alternation_itself():
    with pytest.raises(ValidationError):
        Seed(
            messages=[SeedMessage(role="user", content="a"), SeedMessage(role="user", content="b")],
            source="x",
        )
    with pytest.raises(ValidationError):
        Seed(messages=[], source="x")


def test_seed_message_rejects_blank_content():
    with pytest.raises(ValidationError):
        SeedMessage(role="user", content="   ")


# Errors


def test_missing_file(tmp_path):
    assert_seed_error(tmp_path / "nope.json", "file not found")


def test_directory(tmp_path):
    directory = tmp_path / "seeds.json"
    directory.mkdir()
    assert_seed_error(directory, "directory")


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0, reason="root can read anything")
def test_unreadable_file(tmp_path):
    path = write_json(tmp_path, QUESTION)
    path.chmod(0)
    assert_seed_error(path, "permission denied")


def test_read_failure_is_one_line(tmp_path, monkeypatch):
    path = write_json(tmp_path, QUESTION)

    def refuse(self):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(Path, "read_bytes", refuse)
    assert_seed_error(path, "permission denied")


@pytest.mark.parametrize("content", ["", "  \n\t\n"])
def test_empty_file(tmp_path, content):
    assert_seed_error(write(tmp_path, "seed.json", content), "empty")


def test_empty_text_question(tmp_path):
    assert_seed_error(write(tmp_path, "question.txt", "\n\n"), "empty")


def test_non_utf8(tmp_path):
    assert_seed_error(
        write(tmp_path, "seed.json", "Qu'est-ce qu'un café ?".encode("latin-1")), "not UTF-8"
    )


def test_binary_file(tmp_path):
    assert_seed_error(write(tmp_path, "seed.json", b"abc\x00def"), "binary")


def test_invalid_json_object(tmp_path):
    path = write(tmp_path, "seed.json", '[\n  {"role": "user"\n   "content": "x"}\n]')
    assert_seed_error(path, "invalid JSON at line 3 column 4", "Expecting ',' delimiter")


def test_invalid_json_starting_with_brace(tmp_path):
    assert_seed_error(write(tmp_path, "seed.json", "{messages: []}"), "invalid JSON at line 1")


@pytest.mark.parametrize(
    "data",
    [42, None, True, {"turns": []}, {"role": "user", "content": "hi"}, ["hi", "there"]],
    ids=["number", "null", "bool", "unknown-key", "single-message", "list-of-strings"],
)
def test_not_a_seed(tmp_path, data):
    error = assert_seed_error(write_json(tmp_path, data), "OpenAI message list", "ShareGPT")
    assert error.source == str(tmp_path / "seed.json")


@pytest.mark.parametrize(
    "data",
    [[], {"messages": []}, {"conversations": []}, ""],
    ids=["list", "messages", "sharegpt", "string"],
)
def test_empty_seed(tmp_path, data):
    assert_seed_error(write_json(tmp_path, data), "the seed is empty")


def test_messages_not_a_list(tmp_path):
    assert_seed_error(write_json(tmp_path, {"messages": "hi"}), "'messages' must be a list")


def test_unknown_role(tmp_path):
    data = openai(("user", QUESTION), ("tool", "{}"))
    assert_seed_error(write_json(tmp_path, data), "message 2 has role 'tool'")


def test_missing_role(tmp_path):
    assert_seed_error(write_json(tmp_path, [{"content": QUESTION}]), "message 1 has no 'role'")


@pytest.mark.parametrize("content", ["   ", None, 7, [{"type": "image_url", "image_url": {}}]])
def test_bad_content(tmp_path, content):
    assert_seed_error(write_json(tmp_path, openai(("user", content))), "message 1")


def test_error_message_is_folded_onto_one_line():
    error = SeedError("a.json", "line one\nline two")
    assert str(error) == "a.json: line one line two"
    assert isinstance(error, ValueError)


# parse_seed and the examples


def test_parse_seed_on_parsed_objects():
    seed = parse_seed({"conversations": [{"from": "human", "value": QUESTION}]}, "batch.jsonl:3")
    assert seed.source == "batch.jsonl:3"
    with pytest.raises(SeedError, match=r"^batch\.jsonl:4: message 1 has role 'assistant'"):
        parse_seed(openai(("assistant", ANSWER)), "batch.jsonl:4")


def test_example_seed_loads():
    seed = load_seed(EXAMPLES / "seed.json")
    assert [m.role for m in seed.messages] == ["user", "assistant"]
    assert 120 <= len(seed.messages[1].content.split()) <= 200


def test_example_question_loads():
    seed = load_seed(EXAMPLES / "question.txt")
    assert len(seed.messages) == 1
    assert seed.ends_with_user
