"""Training pairs (no torch needed): the prompt is what the simulator sends, loss on the target."""

import asyncio
import json
from pathlib import Path

import pytest
from langchain_core.messages import AIMessage, HumanMessage

from agents.simulator import PlainSimulator, StrategySimulator
from cli.main import main
from dialogues.messages import to_openai
from induction.extract import Extraction
from induction.library import extracted_record_id
from induction.records import Pair, Turn
from stores.base import StrategyRecord
from tests.fakes import ScriptedGuidance, scripted, text_reply
from training import INSTALL_HINT
from training.encode import IGNORE, encode, encode_fitting
from training.pairs import (
    TrainingPair,
    build_pairs,
    dialogue_of,
    drop_strategies,
    split_by_dialogue,
    strategy_texts,
)

LONG = "word " * 300


def pair(record_id: str, turn: int = 1, root: str | None = None, answers: int = 1) -> Pair:
    history: list[Turn] = [Turn("user", f"question {record_id}", root)]
    for n in range(answers):
        if n:
            history.append(Turn("user", f"more {n} {LONG}"))
        history.append(Turn("assistant", f"answer {n} of {record_id} {LONG}"))
    return Pair("src.jsonl", record_id, turn, tuple(history), f"follow-up of {record_id}")


def langchain_history(p: Pair):
    kinds = {"user": HumanMessage, "assistant": AIMessage}
    return [kinds[t.role](content=t.text) for t in p.history]


def extraction(p: Pair, strategy: str) -> Extraction:
    return Extraction(
        source=p.source, record_id=p.record_id, turn=p.turn, analysis="", strategy=strategy
    )


@pytest.mark.parametrize(
    "simulator, with_strategy", [(StrategySimulator, True), (PlainSimulator, False)]
)
def test_prompt_is_exactly_what_the_simulator_sends(simulator, with_strategy):
    p = pair("d1", answers=4)  # long enough for the history budget to drop old turns
    built = build_pairs(
        [p], {p.key: "Ask for an example"}, with_strategy=with_strategy, history_tokens=300
    )
    chat = scripted(text_reply("ok"), history_tokens=300)
    asyncio.run(simulator(chat).draft(langchain_history(p), "Ask for an example", None))

    sent = to_openai(chat.model.prompts[0])
    (training_pair,) = built.pairs
    assert training_pair.messages == sent
    assert len(sent) < len(p.history) + 1  # the budget trimmed the history, as at run time
    assert training_pair.target == p.followup
    assert ("Ask for an example" in sent[-1]["content"]) is with_strategy  # the request comes last
    assert training_pair.strategy == ("Ask for an example" if with_strategy else None)


def test_pairs_without_a_strategy_are_dropped_and_counted():
    a, b = pair("a"), pair("b")
    built = build_pairs([a, b], {a.key: "Ask why"}, with_strategy=False, history_tokens=2400)
    assert [p.key for p in built.pairs] == [a.key]
    assert built.dropped == {"without strategy": 1}


def test_strategy_level_climbs_parent_links_to_the_high_level_record():
    a, b, c = pair("a"), pair("b"), pair("c")
    records = [
        StrategyRecord(id="h", text="Probe the limits", level="high"),
        StrategyRecord(id="i", text="Ask about edge cases", level="intermediate", parent_id="h"),
        StrategyRecord(
            id=extracted_record_id(*a.key),
            text="Ask about empty input",
            level="extracted",
            parent_id="i",
        ),
        StrategyRecord(id=extracted_record_id(*b.key), text="Ask for a test", level="extracted"),
    ]
    extractions = [
        extraction(a, "Ask about empty input"),
        extraction(b, "Ask for a test"),
        extraction(c, "Ask more"),
    ]

    assert strategy_texts(extractions, records, "high") == {
        a.key: "Probe the limits",
        b.key: "Ask for a test",
    }
    assert strategy_texts(extractions, records, "extracted") == {
        a.key: "Ask about empty input",
        b.key: "Ask for a test",
    }


class CharTokenizer:
    """One token per character; a chat template with a visible end-of-turn mark."""

    def apply_chat_template(self, conversation, tokenize=False, add_generation_prompt=False):
        assert tokenize is False
        text = "".join(f"<{m['role']}>{m['content']}$" for m in conversation)
        return text + ("<assistant>" if add_generation_prompt else "")

    def __call__(self, text, add_special_tokens=False):
        return {"input_ids": [ord(c) for c in text]}


def test_loss_mask_covers_the_target_and_end_of_turn_only():
    messages = [{"role": "system", "content": "be a user"}, {"role": "user", "content": "hi"}]
    example = encode(CharTokenizer(), messages, "why?")

    prompt = "<system>be a user$<user>hi$<assistant>"
    assert "".join(map(chr, example.input_ids)) == prompt + "why?$"
    assert example.labels[: len(prompt)] == [IGNORE] * len(prompt)
    assert "".join(map(chr, example.labels[len(prompt) :])) == "why?$"
    assert (example.prompt_length, example.target_length) == (len(prompt), 5)


def test_a_long_pair_drops_its_oldest_history_to_fit_and_keeps_the_last_answer():
    turns = [
        {"role": role, "content": f"{role} turn {i} " + "x" * 200}
        for i in range(6)
        for role in ("user", "assistant")
    ]
    messages = [
        {"role": "system", "content": "be a user"},
        *turns,
        {"role": "user", "content": "go"},
    ]
    whole = encode(CharTokenizer(), messages, "why?")
    assert len(whole.input_ids) > 1000

    example, trimmed = encode_fitting(CharTokenizer(), messages, "why?", 1000, 2400)
    text = "".join(map(chr, example.input_ids))
    assert trimmed and len(example.input_ids) <= 1000
    assert text.startswith("<system>be a user$") and text.endswith("<user>go$<assistant>why?$")
    assert "assistant turn 5" in text and "user turn 0" not in text  # the oldest went first

    short = messages[:1] + messages[-3:]
    assert encode_fitting(CharTokenizer(), short, "why?", 1000, 2400) == (
        encode(CharTokenizer(), short, "why?"),
        False,
    )


def test_a_pair_whose_last_message_alone_is_too_long_stays_too_long():
    messages = [{"role": "system", "content": "s"}, {"role": "user", "content": "y" * 2000}]
    example, trimmed = encode_fitting(CharTokenizer(), messages, "why?", 1000, 2400)
    assert not trimmed and len(example.input_ids) > 1000


def test_split_is_by_dialogue_and_seeded():
    pairs = [pair(f"m{d}-{t}", turn=t, root=f"root{d}") for d in range(20) for t in (1, 2, 3)]
    built = build_pairs(
        pairs, {p.key: "Ask why" for p in pairs}, with_strategy=True, history_tokens=2400
    )
    train, held = split_by_dialogue(built.pairs, 0.2, seed=1)

    assert {p.dialogue for p in train}.isdisjoint({p.dialogue for p in held})
    assert len({p.dialogue for p in held}) == 4 and len(held) == 12
    assert split_by_dialogue(built.pairs, 0.2, seed=1) == (train, held)
    assert split_by_dialogue(built.pairs, 0.2, seed=2)[1] != held


def test_a_tree_is_one_dialogue_and_a_linear_record_is_its_own():
    assert dialogue_of(pair("msg-1", root="root")) == dialogue_of(pair("msg-2", root="root"))
    assert dialogue_of(pair("d1")) != dialogue_of(pair("d2"))


# --- CLI input errors (before torch is needed) -------------------------------------------------


@pytest.fixture
def inputs(tmp_path):
    dialogues = tmp_path / "chats.jsonl"
    rows = [
        {"id": f"d{n}", "messages": [
            {"role": "user", "content": f"How do I sort {n} items?"},
            {"role": "assistant", "content": "Use sorted()."},
            {"role": "user", "content": "And in reverse?"},
        ]}
        for n in range(4)
    ]  # fmt: skip
    dialogues.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    extractions = tmp_path / "extractions.jsonl"
    extractions.write_text("")
    return dialogues, extractions


def train_cli(capsys, *args):
    code = main(["train-simulator", *map(str, args)])
    return code, capsys.readouterr().err.strip()


def test_cli_missing_file_is_a_usage_error(capsys, tmp_path, inputs):
    dialogues, extractions = inputs
    code, err = train_cli(
        capsys,
        "--dialogues",
        tmp_path / "nope.jsonl",
        "--extractions",
        extractions,
        "--out",
        tmp_path / "m",
    )
    assert code == 2 and err.startswith("error:") and "nope.jsonl" in err and "\n" not in err


def test_cli_without_strategies_for_the_pairs_is_a_usage_error(capsys, tmp_path, inputs):
    dialogues, extractions = inputs
    code, err = train_cli(
        capsys, "--dialogues", dialogues, "--extractions", extractions, "--out", tmp_path / "m"
    )
    assert code == 2 and "none of the 4 pairs has a strategy" in err


def test_cli_out_that_is_a_file_is_a_usage_error(capsys, tmp_path, inputs):
    dialogues, extractions = inputs
    out = tmp_path / "model"
    out.write_text("x")
    code, err = train_cli(
        capsys, "--dialogues", dialogues, "--extractions", extractions, "--out", out
    )
    assert code == 2 and "is not a folder" in err


def with_strategies(tmp_path, dialogues, extractions) -> tuple[int, Path]:
    """Write an extraction and a library record for every pair; return (rows, library)."""
    rows = [json.loads(line) for line in dialogues.read_text().splitlines()]
    from induction.loaders import load

    keys = [p.key for p in load(dialogues).pairs]
    extractions.write_text(
        "\n".join(
            json.dumps(
                {
                    "source": s,
                    "record_id": r,
                    "turn": t,
                    "analysis": "",
                    "strategy": "Ask for the reverse order",
                }
            )
            for s, r, t in keys
        )
    )
    library = tmp_path / "library"
    library.mkdir()
    library.joinpath("records.jsonl").write_text(
        "\n".join(
            json.dumps(
                {"id": extracted_record_id(*k), "text": "Ask for a variant", "level": "extracted"}
            )
            for k in keys
        )
    )
    return len(rows), library


def test_cli_names_the_extra_when_torch_is_missing(capsys, tmp_path, inputs, monkeypatch):
    dialogues, extractions = inputs
    n_rows, library = with_strategies(tmp_path, dialogues, extractions)
    import cli.train

    real = cli.train.importlib.util.find_spec
    monkeypatch.setattr(
        cli.train.importlib.util, "find_spec", lambda n: None if n == "torch" else real(n)
    )
    code, err = train_cli(
        capsys,
        "--dialogues",
        dialogues,
        "--extractions",
        extractions,
        "--library",
        library,
        "--out",
        tmp_path / "m",
    )
    assert n_rows == 4 and code == 1
    assert "needs torch" in err and INSTALL_HINT in err and "\n" not in err


def test_cli_without_the_converter_stops_before_creating_out(capsys, tmp_path, inputs, monkeypatch):
    dialogues, extractions = inputs
    _, library = with_strategies(tmp_path, dialogues, extractions)
    import cli.train

    monkeypatch.setattr(cli.train, "EXTRA_MODULES", ())  # as if the extra were installed
    monkeypatch.delenv("LLAMA_CPP_DIR", raising=False)
    monkeypatch.setenv("IDEAS_CACHE", str(tmp_path / "empty-cache"))
    out = tmp_path / "m"
    code, err = train_cli(
        capsys, "--dialogues", dialogues, "--extractions", extractions, "--library", library,
        "--out", out,
    )  # fmt: skip
    assert code == 1 and "setup-train.sh" in err and "\n" not in err
    assert not out.exists()


# --- numeric options and the base, checked before anything expensive (G11) -------------------


@pytest.fixture
def ready(tmp_path, inputs, monkeypatch):
    """Arguments of a run that would train: the checks are all that stands before the model."""
    dialogues, extractions = inputs
    _, library = with_strategies(tmp_path, dialogues, extractions)
    base = tmp_path / "base.gguf"
    base.write_bytes(b"GGUF" + bytes(60))
    import cli.train

    def reached(out):
        raise AssertionError(f"the run went on to create {out}")

    monkeypatch.setattr(cli.train, "EXTRA_MODULES", ())
    monkeypatch.setattr(cli.train, "converter_tree", lambda: tmp_path)
    monkeypatch.setattr(cli.train, "create_out", reached)
    return [
        "--dialogues", dialogues, "--extractions", extractions, "--library", library,
        "--base", base, "--out", tmp_path / "m",
    ]  # fmt: skip


@pytest.mark.parametrize(
    "flag, value",
    [
        ("--rank", "0"),
        ("--rank", "100000"),
        ("--alpha", "0"),
        ("--alpha", "-4"),
        ("--accumulation", "0"),
        ("--threads", "0"),
        ("--threads", "100000"),
        ("--learning-rate", "nan"),
        ("--learning-rate", "inf"),
        ("--learning-rate", "0"),
        ("--learning-rate", "5"),
        ("--eval-limit", "-1"),
        ("--eval-limit", "0"),
        ("--history-tokens", "0"),
        ("--max-length", "0"),
        ("--held-out", "nan"),
        ("--epochs", "0"),
        ("--max-steps", "0"),
        ("--ending-weight", "0"),
        ("--strategy-dropout", "1"),
        ("--strategy-dropout", "-0.1"),
        ("--strategy-dropout", "nan"),
    ],
)
def test_cli_bad_number_is_one_line_before_anything_starts(capsys, tmp_path, ready, flag, value):
    code, err = train_cli(capsys, *ready, flag, value)
    assert code == 2 and err.startswith(f"error: {flag}") and "\n" not in err
    assert not (tmp_path / "m").exists()


def test_cli_ending_weight_without_endings_is_one_line(capsys, tmp_path, ready):
    code, err = train_cli(capsys, *ready, "--ending-weight", "3")
    assert (
        code == 2
        and err == "error: --ending-weight needs --endings (there are no ending pairs to weigh)"
    )
    assert not (tmp_path / "m").exists()


def test_ending_pairs_are_repeated_to_their_weight_and_a_too_long_one_is_not():
    pytest.importorskip("torch")
    from training.encode import Example
    from training.pipeline import repeated_endings

    def pair(name: str, *, ending: bool) -> TrainingPair:
        return TrainingPair(("s", name, 1), name, [], "t", None, ending=ending)

    short, long = Example([1, 2], [1, 2]), Example([1] * 9, [1] * 9)
    pairs = [(pair("a", ending=False), short), (pair("b", ending=True), short),
             (pair("c", ending=True), long)]  # fmt: skip
    assert repeated_endings(pairs, 3, max_length=8) == [short, short]
    assert repeated_endings(pairs, 1, max_length=8) == []


def test_cli_base_that_is_neither_gguf_nor_model_directory_is_one_line(capsys, tmp_path, ready):
    text = tmp_path / "notes.txt"
    text.write_text("not a model")
    folder = tmp_path / "half-model"
    folder.mkdir()
    (folder / "config.json").write_text("{}")
    args = ready[: ready.index("--base")] + ready[ready.index("--base") + 2 :]
    for base, reason in [
        (text, "not a GGUF file nor a Hugging Face model directory"),
        (folder, "no model.safetensors or model.safetensors.index.json, no tokenizer.json"),
    ]:
        code, err = train_cli(capsys, *args, "--base", base)
        assert code == 2 and reason in err and "\n" not in err, err
        assert str(base) in err
    assert not (tmp_path / "m").exists()


def test_cli_run_that_fails_before_a_checkpoint_leaves_no_out(capsys, tmp_path, ready, monkeypatch):
    import cli.train
    from training.job import TrainingInputError

    def too_few(job, *args):
        (job.out / "checkpoints").mkdir()
        raise TrainingInputError("too few pairs to train and hold out")

    monkeypatch.undo()  # the real create_out
    monkeypatch.setattr(cli.train, "EXTRA_MODULES", ())
    monkeypatch.setattr(cli.train, "converter_tree", lambda: tmp_path)
    monkeypatch.setattr(cli.train, "_train", too_few)
    code, err = train_cli(capsys, *ready)
    assert code == 2 and "too few pairs" in err
    assert not (tmp_path / "m").exists()


# --- endings (issue 21) --------------------------------------------------------------------------


def ended(record_id: str, *, by_user: bool, last: str = "assistant"):
    from induction.records import Dialogue

    turns = [
        Turn("user", "q0"),
        Turn("assistant", "a0"),
        Turn("user", "q1"),
        Turn("assistant", "a1"),
    ]
    if last == "user":
        turns.append(Turn("user", "q2"))
    return Dialogue(record_id, tuple(turns), ended_by_user=by_user)


def test_end_pairs_only_for_dialogues_the_user_ended():
    from dialogues.ending import END_MARKER, is_end_marker
    from induction.records import pairs_of
    from training.pairs import build_end_pairs

    dialogues = [
        ended("u", by_user=True),
        ended("cut", by_user=False),
        ended("open", by_user=True, last="user"),
        ended("bare", by_user=True),
    ]
    strategies = {p.key: "Ask for an example" for p in pairs_of(dialogues[0], "s.json")}
    strategies |= {p.key: "Ask" for p in pairs_of(dialogues[2], "s.json")}
    built = build_end_pairs(
        [("s.json", d) for d in dialogues], strategies, with_strategy=True, history_tokens=2400
    )
    (end,) = built.pairs
    assert (end.target, end.ending, end.key) == (END_MARKER, True, ("s.json", "u", 2))
    assert is_end_marker(end.target)
    assert end.messages[-1]["content"].endswith("a1") or "a1" in json.dumps(end.messages)
    assert built.dropped == {
        "cut by the source": 1,
        "ends with a user turn": 1,
        "without strategy": 1,
    }
    (follow,) = build_pairs(
        pairs_of(dialogues[0], "s.json"), strategies, with_strategy=True, history_tokens=2400
    ).pairs
    assert follow.dialogue == end.dialogue  # the split keeps an ending with its dialogue
    assert not follow.ending


def test_simulatorarena_conversations_are_ended_by_their_users_oasst_ones_are_cut():
    from induction.loaders import load
    from tests.test_loaders import DATA as data  # the shared data folder, found in one place

    arena = data / "simulatorarena-doc" / "document_creation_annotations_for_benchmarking.json"
    mirror = data / "mirrorbench-oasst1" / "oasst1_mirror.jsonl"
    if not arena.is_file() or not mirror.is_file():
        pytest.skip("shared data not found")
    a, m = load(arena), load(mirror)
    assert (a.format, len(a.dialogues), len(a.pairs)) == ("simulatorarena", 51, 298)
    assert all(d.ended_by_user and d.turns[-1].role == "assistant" for d in a.dialogues)
    assert (m.format, len(m.dialogues), len(m.pairs)) == ("mirrorbench", 200, 166)
    assert not any(d.ended_by_user for d in m.dialogues)


def test_simulatorarena_without_why_stop_is_not_an_ending(tmp_path):
    from induction.loaders import load

    rec = {"user_queries": ["a", "b"], "ai_responses": ["x", "y"], "why_stop": "satisfied"}
    path = tmp_path / "arena.json"
    path.write_text(json.dumps([rec, {**rec, "why_stop": ""}]))
    first, second = load(path).dialogues
    assert (first.ended_by_user, second.ended_by_user) == (True, False)
    assert [t.role for t in first.turns] == ["user", "assistant", "user", "assistant"]


def test_endings_off_keeps_the_settings_and_run_id_of_a_shipped_build(tmp_path):
    from training.job import TrainJob

    paths = {k: tmp_path / k for k in ("dialogues", "extractions", "library", "out", "base")}
    off = TrainJob(
        dialogues=[paths["dialogues"]], **{k: v for k, v in paths.items() if k != "dialogues"}
    )
    on = TrainJob(
        dialogues=[paths["dialogues"]],
        endings=True,
        **{k: v for k, v in paths.items() if k != "dialogues"},
    )
    assert "endings" not in off.settings() and on.settings()["endings"] is True
    assert off.run_id({"x": "1"}) != on.run_id({"x": "1"})


def test_strategy_dropout_trains_the_contrast_that_guided_drafts_send():
    p = pair("d1", answers=4)
    (kept,) = build_pairs(
        [p], {p.key: "Ask for an example"}, with_strategy=True, history_tokens=300
    ).pairs
    chat = ScriptedGuidance("Which example?", history_tokens=300)
    asyncio.run(StrategySimulator(chat, guidance=5.0).draft(langchain_history(p), "Ask", None))
    [(_, against, _)] = chat.asked

    (dropped,) = drop_strategies([kept], 0.999, seed=0)
    assert dropped.strategy is None and dropped.target == kept.target
    assert dropped.messages == kept.unconditioned
    assert dropped.messages[-1] == to_openai(against)[-1]  # the request guidance contrasts with
    assert "Ask for an example" not in json.dumps(dropped.messages)
    assert dropped.messages[:-1] == kept.messages[:-1]  # only the request differs


def test_strategy_dropout_drops_its_share_by_seed_and_never_a_plain_pair():
    pairs = [pair(f"d{n}") for n in range(400)]
    strategies = {p.key: "Ask why" for p in pairs}
    ideas = build_pairs(pairs, strategies, with_strategy=True, history_tokens=2400).pairs
    plain = build_pairs(pairs, strategies, with_strategy=False, history_tokens=2400).pairs

    once, again = drop_strategies(ideas, 0.2, seed=0), drop_strategies(ideas, 0.2, seed=0)
    dropped = [p.key for p in once if p.strategy is None]
    assert dropped == [p.key for p in again if p.strategy is None]  # the seed decides
    assert 0.14 < len(dropped) / len(ideas) < 0.26
    assert dropped != [p.key for p in drop_strategies(ideas, 0.2, seed=1) if p.strategy is None]
    assert drop_strategies(ideas, 0.0, seed=0) == ideas
    assert drop_strategies(plain, 0.5, seed=0) == plain  # no strategy to drop


def test_cli_strategy_dropout_with_the_plain_prompt_is_one_line(capsys, tmp_path, ready):
    code, err = train_cli(capsys, *ready, "--no-strategy", "--strategy-dropout", "0.2")
    assert code == 2 and err == (
        "error: --strategy-dropout needs a strategy to drop (not --no-strategy)"
    )
    assert not (tmp_path / "m").exists()


def test_strategy_dropout_enters_the_run_id_only_when_on(tmp_path):
    from training.job import TrainJob

    paths = {k: tmp_path / k for k in ("extractions", "library", "out", "base")}
    off = TrainJob(dialogues=[tmp_path / "d"], **paths)
    on = TrainJob(dialogues=[tmp_path / "d"], strategy_dropout=0.2, **paths)
    assert "strategy_dropout" not in off.settings() and on.settings()["strategy_dropout"] == 0.2
    assert off.run_id({"x": "1"}) != on.run_id({"x": "1"})
