"""The end marker and the rules that allow an ending (pure functions of dialogues.ending)."""

from __future__ import annotations

import pytest

from dialogues.ending import END_MARKER, asks_back, ending_refused, is_end_marker


@pytest.mark.parametrize(
    "text",
    [END_MARKER, " <|End_Conversation|>. ", "END CONVERSATION", "<|endofconversation|>"],
)
def test_marker_variants_are_the_marker(text):
    assert is_end_marker(text)


@pytest.mark.parametrize(
    "text",
    ["Thanks, that's all! <|endconversation|>", "end", "", None, "Let's end the conversation."],
)
def test_a_turn_that_says_more_is_not_the_marker(text):
    assert not is_end_marker(text)


def test_asks_back_reads_the_last_paragraph_only():
    assert asks_back("Here is the letter.\n\nWould you like me to shorten it?")
    assert asks_back("Done. Want a shorter one? Just say so.")
    assert not asks_back("Why? Because of memory cells.\n\nThey last for decades.")
    assert not asks_back("Use the regex `a?b` here.")


def test_rules_in_order():
    fine = "Here is the final letter."
    assert ending_refused(fine, 2, min_turns=2, mode="learned") is None
    assert ending_refused(fine, 1, min_turns=2, mode="learned").startswith("too early")
    assert "refusal" in ending_refused(
        "I'm sorry, but I can't help.", 3, min_turns=2, mode="learned"
    )
    assert "question" in ending_refused("Shall I go on?", 3, min_turns=2, mode="learned")
    assert ending_refused(fine, 9, min_turns=0, mode="never").startswith("fixed length")
