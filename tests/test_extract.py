"""Induction step 1: strategy rules, the LLM extractor, the resumable cache and annotation files."""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass
from typing import Any

import pytest
from langchain_core.messages import BaseMessage
from langchain_core.outputs import ChatResult

from agents.chat import ChatClient
from dialogues.models import Usage
from induction.annotations import AnnotationError, check_annotations, load_extractions
from induction.batch import extract_all
from induction.cache import ExtractionCache, cache_key
from induction.extract import Extraction, ExtractionOutput, LLMExtractor, Rejection, clip
from induction.strategy_check import IMPERATIVE_VERBS, validate_strategy
from prompts import render
from tests.fakes import ScriptedChatModel, scripted, text_reply, tool_reply

FOLLOWUP = "Can you show me a sample code that sorts a list of names in descending order?"
ANSWER = "Python's sorted() returns a new list; pass reverse=True to sort from largest to smallest."
GOOD = "Ask for a concrete example that applies the idea to a new case"


@dataclass(frozen=True)
class Turn:
    role: str
    text: str
    id: str | None = None


@dataclass(frozen=True)
class Pair:
    source: str
    record_id: str
    turn: int
    history: tuple[Turn, ...]
    followup: str

    @property
    def answer(self) -> str:
        return self.history[-1].text

    @property
    def key(self) -> tuple[str, str, int]:
        return (self.source, self.record_id, self.turn)


def make_pair(n: int = 0, followup: str = FOLLOWUP, answer: str = ANSWER, **kw: Any) -> Pair:
    history = (Turn("user", f"How do I sort a list in Python? ({n})"), Turn("assistant", answer))
    return Pair(kw.get("source", "demo.jsonl"), kw.get("record_id", f"r{n}"), 1, history, followup)


def reply(strategy: str = GOOD, analysis: str = "The user wants to see the idea in practice."):
    return tool_reply("ExtractionOutput", analysis=analysis, strategy=strategy)


def run(coro):
    return asyncio.run(coro)


# --- validate_strategy ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "strategy",
    [
        GOOD,
        "Challenge a claim in the answer and ask for evidence",
        "ask how the approach compares with a common alternative",
        "Politely ask for a simpler explanation",
        "Then request the steps in order",
        "Relate the answer to the user's own situation",
        "Question whether the answer holds for edge cases.",
    ],
)
def test_validate_strategy_accepts_general_imperatives(strategy):
    assert validate_strategy(strategy, FOLLOWUP, answer=ANSWER) is None


def test_imperative_verbs_are_lower_case_and_include_the_common_moves():
    assert all(verb == verb.lower() for verb in IMPERATIVE_VERBS)
    assert {"ask", "request", "challenge", "clarify", "summarise", "summarize"} <= IMPERATIVE_VERBS


@pytest.mark.parametrize(
    ("strategy", "reason"),
    [
        ("", "empty"),
        ("   ", "empty"),
        (" ".join(["Ask"] + ["more"] * 2 + ["about it"] * 9), "21 words"),
        ("Can you tell me more about that?", "imperative verb"),
        ("The user asks for an example", "imperative verb"),
        ("Asking for an example of the idea", "imperative verb"),
        ("Politely", "imperative verb"),
        ("Ask ik ik ik ik ik ik", "repeats 'ik'"),
        ("Ask for for for an example", "repeats 'for'"),
        ("Ask for more ask for more ask for more", "repeats 'ask for more'"),
        ("Seek the user for a sample code that sorts names", "the user"),
        ("Ask the user for a sample code", "the user"),
        ("Ask for a sample code that sorts a list of names in descending order", "copies"),
        ("Ask for 3 examples of the idea", "number"),
        ('Ask what "reverse" means here', "quotation"),
        ("Ask what 'reverse' means here", "quotation"),
        ("Ask how Python handles ties", "'Python'"),
    ],
)
def test_validate_strategy_rejects(strategy, reason):
    found = validate_strategy(strategy, FOLLOWUP, answer=ANSWER)
    assert found is not None and reason in found


def test_a_long_verbatim_chunk_of_a_long_followup_is_a_copy():
    followup = (
        "I have tried for hours and it keeps failing on the server. Please rewrite the function "
        "so that it returns the sorted list of unique user names without mutating the input."
    )
    strategy = "Rewrite the function so that it returns the sorted list of unique names"
    assert "passage" in validate_strategy(strategy, followup)


def test_proper_nouns_count_only_when_they_come_from_the_dialogue():
    assert validate_strategy("Ask how Rust would handle it", FOLLOWUP, answer=ANSWER) is None
    assert "'Rust'" in validate_strategy("Ask how Rust handles it", "And in Rust?")


def test_extraction_output_tidies_strategy_and_clips_analysis():
    out = ExtractionOutput(analysis="why " * 100, strategy='  "Strategy: Ask for an  example."  ')
    assert out.strategy == "Ask for an example"
    assert len(out.analysis.split()) == 60


# --- LLMExtractor --------------------------------------------------------------------------------


def test_extract_renders_the_prompt_and_returns_a_keyed_extraction():
    chat = scripted(reply())
    result = run(LLMExtractor(chat).extract(make_pair()))

    assert isinstance(result, Extraction)
    assert result.key == ("demo.jsonl", "r0", 1)
    assert result.strategy == GOOD and result.annotator == "llm:ScriptedChatModel"
    assert result.usage.calls == 1 and result.usage.input_tokens == 50
    prompt = chat.model.prompts[0][-1].content
    assert "How do I sort a list in Python? (0)" in prompt
    assert ANSWER in prompt and FOLLOWUP in prompt and "rejected" not in prompt


def test_extract_clips_a_long_answer_and_omits_a_missing_previous_message():
    pair = Pair("s", "r", 1, (Turn("assistant", "word " * 1000),), "Why?")
    chat = scripted(reply())
    run(LLMExtractor(chat).extract(pair))
    prompt = chat.model.prompts[0][-1].content
    assert "[...]" in prompt and "The user had asked" not in prompt
    assert len(prompt) < 3000


def test_clip_keeps_start_and_end():
    text = "a" * 900 + "b" * 600
    clipped = clip(text, 1200)
    assert clipped.startswith("a" * 900) and clipped.endswith("b" * 300) and "[...]" in clipped
    assert clip(" short ", 10) == "short"


def test_extract_retries_with_the_validation_reason():
    chat = scripted(reply("Ask ik ik ik ik ik ik"), reply(GOOD))
    result = run(LLMExtractor(chat).extract(make_pair()))

    assert isinstance(result, Extraction) and result.strategy == GOOD
    assert result.usage.calls == 2
    retry = chat.model.prompts[1][-1].content
    assert "'Ask ik ik ik ik ik ik' was rejected" in retry and "repeats 'ik'" in retry


def test_extract_gives_up_with_the_last_reason():
    bad = "Seek the user for a sample code that sorts names"
    chat = scripted(reply("Can you help?"), reply("Ask for 2 examples"), reply(bad))
    result = run(LLMExtractor(chat, attempts=3).extract(make_pair()))

    assert isinstance(result, Rejection)
    assert result.key == ("demo.jsonl", "r0", 1) and result.attempts == 3
    assert "the user" in result.reason and result.last_strategy == bad
    assert result.usage.calls == 3 and chat.model.unused == 0


def test_extract_counts_unparseable_output_as_a_failed_attempt():
    model = ScriptedChatModel(script=[text_reply("I think they want code."), reply()])
    result = run(LLMExtractor(ChatClient(model, attempts=1), attempts=2).extract(make_pair()))
    assert isinstance(result, Extraction)
    assert "not valid" in model.prompts[1][-1].content

    model = ScriptedChatModel(script=[text_reply("no")])
    result = run(LLMExtractor(ChatClient(model, attempts=1), attempts=1).extract(make_pair()))
    assert isinstance(result, Rejection) and result.reason.startswith("no valid output")


def test_extract_accepts_the_loaders_pair():
    from induction.loaders import Pair as LoadedPair
    from induction.loaders import Turn as LoadedTurn

    history = (LoadedTurn("user", "How do I sort?"), LoadedTurn("assistant", ANSWER))
    pair = LoadedPair("demo.jsonl", "r9", 1, history, FOLLOWUP)
    result = run(LLMExtractor(scripted(reply())).extract(pair))
    assert result.key == ("demo.jsonl", "r9", 1)


def test_extractor_template_renders_with_feedback():
    text = render("extractor", previous="", answer="A.", followup="Q?", feedback="Bad: x.")
    assert text.endswith("Bad: x. Write a different strategy that follows the rules.")


# --- cache ---------------------------------------------------------------------------------------


def extraction(n: int = 0, strategy: str = GOOD) -> Extraction:
    return Extraction(
        source="demo.jsonl", record_id=f"r{n}", turn=1, analysis="a", strategy=strategy
    )


def test_cache_key_depends_on_model_prompt_history_and_followup():
    base = cache_key("model+template", make_pair())
    assert base == cache_key("model+template", make_pair()) and len(base) == 64
    assert base != cache_key("other model+template", make_pair())
    assert base != cache_key("model+template", make_pair(followup="Why?"))
    assert base != cache_key("model+template", make_pair(answer="Another answer."))
    assert base == cache_key("model+template", make_pair(record_id="elsewhere"))


def test_llm_extractor_fingerprint_holds_model_template_and_schema():
    fingerprint = LLMExtractor(scripted()).fingerprint
    assert fingerprint.startswith("ScriptedChatModel\n")
    assert "Then the user wrote" in fingerprint and "imperative phrase" in fingerprint


def test_cache_round_trip(tmp_path):
    path = tmp_path / "cache" / "extract.jsonl"
    rejection = Rejection(key=("demo.jsonl", "r1", 1), reason="too long", attempts=3)
    with ExtractionCache(path) as cache:
        cache.put("k0", extraction(0).with_usage(Usage(1, 50, 10, 0.1)))
        cache.put("k1", rejection)
    lines = path.read_text().splitlines()
    assert len(lines) == 2 and json.loads(lines[0])["key"] == ["demo.jsonl", "r0", 1]
    assert "usage" not in json.loads(lines[0])["result"]

    reopened = ExtractionCache(path)
    assert len(reopened) == 2 and "k0" in reopened and reopened.get("missing") is None
    assert reopened.get("k0") == extraction(0)
    assert reopened.get("k1") == rejection


def test_a_truncated_last_line_is_ignored_and_cut_off(tmp_path):
    path = tmp_path / "extract.jsonl"
    with ExtractionCache(path) as cache:
        cache.put("k0", extraction(0))
        cache.put("k1", extraction(1))
    data = path.read_bytes()
    path.write_bytes(data[: len(data) - 20])

    cache = ExtractionCache(path)
    assert cache.truncated_tail and len(cache) == 1 and "k1" not in cache
    cache.put("k1", extraction(1))
    cache.close()
    assert len(ExtractionCache(path)) == 2
    assert all(json.loads(line) for line in path.read_text().splitlines())


def test_an_invalid_complete_line_is_skipped_and_counted(tmp_path):
    path = tmp_path / "extract.jsonl"
    with ExtractionCache(path) as cache:
        cache.put("k0", extraction(0))
    with path.open("a") as file:
        file.write('{"cache_key": "k1"}\nnot json\n')
    cache = ExtractionCache(path)
    assert len(cache) == 1 and cache.invalid_lines == 2 and not cache.truncated_tail


# --- extract_all ---------------------------------------------------------------------------------


class DyingModel(ScriptedChatModel):
    """A scripted model whose process is killed (an exception is raised) on call `die_on`."""

    die_on: int = 0
    error: Any = KeyboardInterrupt

    def _generate(self, messages: list[BaseMessage], *args: Any, **kwargs: Any) -> ChatResult:
        if len(self.prompts) + 1 == self.die_on:
            self.prompts.append(list(messages))
            raise self.error()
        return super()._generate(messages, *args, **kwargs)


def pairs(count: int) -> list[Pair]:
    return [make_pair(n) for n in range(count)]


@pytest.mark.parametrize(("error", "concurrency"), [(KeyboardInterrupt, 1), (RuntimeError, 2)])
def test_a_killed_run_resumes_without_repeating_finished_pairs(tmp_path, error, concurrency):
    path = tmp_path / "extract.jsonl"
    first = DyingModel(script=[reply(), reply()], die_on=3, error=error)
    with pytest.raises(error), ExtractionCache(path) as cache:
        run(extract_all(pairs(5), LLMExtractor(ChatClient(first)), cache, concurrency=concurrency))
    finished = len(path.read_text().splitlines())
    assert finished == 2 if concurrency == 1 else 1 <= finished <= 2

    second = DyingModel(script=[reply()] * 5)  # the same model name, so the same cache keys
    with ExtractionCache(path) as cache:
        report = run(extract_all(pairs(5), LLMExtractor(ChatClient(second)), cache))

    assert len(second.prompts) == 5 - finished
    assert report.cached_hits == finished and report.llm_calls == 5 - finished
    assert report.usage.calls == 5 - finished
    assert [e.record_id for e in report.extractions] == ["r0", "r1", "r2", "r3", "r4"]
    assert not report.rejections


def test_extract_all_caches_rejections_and_reports_progress(tmp_path):
    path = tmp_path / "extract.jsonl"
    model = ScriptedChatModel(script=[reply(), reply("Can you?"), reply("Can you?")])
    seen = []
    with ExtractionCache(path) as cache:
        report = run(
            extract_all(
                pairs(2),
                LLMExtractor(ChatClient(model), attempts=2),
                cache,
                on_progress=lambda done, total: seen.append((done, total)),
            )
        )
    assert seen == [(0, 2), (1, 2), (2, 2)]
    assert len(report.extractions) == 1 and report.llm_calls == 3
    assert report.rejections[0].key == ("demo.jsonl", "r1", 1)
    assert "imperative" in report.rejections[0].reason

    idle = ScriptedChatModel(script=[])
    with ExtractionCache(path) as cache:
        again = run(extract_all(pairs(2), LLMExtractor(ChatClient(idle)), cache))
    assert again.cached_hits == 2 and again.llm_calls == 0 and not idle.prompts
    assert len(again.rejections) == 1 and again.rejections[0].attempts == 2


def test_pairs_with_the_same_content_share_one_call(tmp_path):
    twins = [make_pair(0), make_pair(0, record_id="copy")]
    model = ScriptedChatModel(script=[reply()])
    with ExtractionCache(tmp_path / "extract.jsonl") as cache:
        report = run(extract_all(twins, LLMExtractor(ChatClient(model)), cache))
    assert [e.record_id for e in report.extractions] == ["r0", "copy"]
    assert report.cached_hits == 1 and report.llm_calls == 1


# --- annotation files ----------------------------------------------------------------------------


def write_lines(path, *lines):
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def annotation(n: int = 0, **fields: Any) -> str:
    data = {"source": "demo.jsonl", "record_id": f"r{n}", "turn": 1, "analysis": "a"}
    return json.dumps(data | {"strategy": GOOD} | fields)


def test_load_extractions_reads_valid_lines(tmp_path):
    path = write_lines(
        tmp_path / "gold.jsonl", annotation(0, annotator="alice"), "", annotation(1, record_id=7)
    )
    loaded = load_extractions(path)
    assert [e.key for e in loaded] == [("demo.jsonl", "r0", 1), ("demo.jsonl", "7", 1)]
    assert loaded[0].annotator == "alice" and loaded[1].annotator is None


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        ('{"source": ', ":2: not JSON"),
        ("[1, 2]", ":2: expected a JSON object, got list"),
        (
            json.dumps({"source": "s", "record_id": "r", "turn": 1, "analysis": "a"}),
            ":2: strategy:",
        ),
        (annotation(turn="second"), ":2: turn:"),
        (annotation(notes="typo"), ":2: notes:"),
    ],
)
def test_load_extractions_names_the_bad_line(tmp_path, bad, message):
    path = write_lines(tmp_path / "gold.jsonl", annotation(0), bad)
    with pytest.raises(AnnotationError) as caught:
        load_extractions(path)
    assert message in str(caught.value) and "\n" not in str(caught.value)
    assert str(caught.value).startswith(str(path))


def test_load_extractions_of_a_missing_file(tmp_path):
    with pytest.raises(AnnotationError, match="cannot read"):
        load_extractions(tmp_path / "missing.jsonl")


def test_check_annotations_reports_rules_and_keys_both_ways():
    loaded = [
        extraction(0),
        extraction(1, strategy="Ask ik ik ik"),
        extraction(1),
        extraction(7),
    ]
    by_key = {p.key: p for p in pairs(3)}
    report = check_annotations(loaded, by_key)

    assert report.checked == 4 and not report.ok
    assert report.invalid == [
        (("demo.jsonl", "r1", 1), "the strategy repeats 'ik'; write a plain phrase")
    ]
    assert report.without_pair == [("demo.jsonl", "r7", 1)]
    assert report.without_extraction == [("demo.jsonl", "r2", 1)]
    assert report.duplicates == [("demo.jsonl", "r1", 1)]
    assert report.summary().startswith("4 extractions: 1 invalid, 1 without a pair, 1 duplicate")
    assert check_annotations([extraction(0)], {make_pair(0).key: make_pair(0)}).ok
