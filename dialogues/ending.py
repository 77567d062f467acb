"""The user ends the conversation: the end marker, how it is recognised, and when it is allowed.

Real users stop when they are satisfied, give up or move on. A trained user simulator learns
it the way UserLM does: after the last assistant reply of each real dialogue that the *user*
ended, its training target is `END_MARKER` (`training.pairs.build_end_pairs`); at run time a
draft that is the marker ends the dialogue (`graphs.deduction.judge_ending`), unless a rule
below forbids it, in which case the draft is rejected with the rule as its reason and the
simulator drafts again.

Why a reserved *text* and not a special token: the shipped simulators are LoRA adapters
converted to GGUF (`convert_lora_to_gguf.py`), applied by llama.cpp on top of the unchanged base
GGUF. A LoRA-only adapter carries low-rank deltas of existing weight matrices; it cannot add rows
to the base model's embedding and output matrices, so a token added to the vocabulary would have
no embedding on the server (and no id in the base GGUF's tokenizer). `<|endconversation|>` (the
name UserLM uses) is not in SmolLM2's vocabulary, so it is tokenized as ordinary text pieces,
learned as an ordinary target, generated as ordinary text by any OpenAI-compatible server, and
read back here as the whole turn. `is_end_marker` normalises case, spacing and punctuation, so
`<|end_conversation|>`, `<|endconversation|>.` or `END CONVERSATION` are the marker too, but a
turn that says anything more ("thanks, that's all <|endconversation|>") is not: an ending is a
turn of its own. No real user turn normalises to it.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Literal

from dialogues.refusal import is_refusal

END_MARKER = "<|endconversation|>"
"""The simulator's whole turn when the user ends the conversation (training target and output)."""

SPECIAL_TAG = re.compile(r"<\|[^<>|\s]{1,40}\|>")
"""A special tag as chat templates write them (the marker, `<|im_start|>`, a mangled
`<|endcopyboard|>`): the real users' turns in `../shared/data` hold none."""

ENDED_BY_USER = "ended_by_user"
"""A document's status when the user ended the conversation before `--turns`."""

ENDED_REASON = "the user ended the conversation"
"""The start of a document's `reason` when the user ended it (`ended_reason`)."""

EndingMode = Literal["learned", "never"]
"""`learned`: the simulator may end the dialogue (within the rules); `never`: fixed length."""

ENDING_MODES: tuple[EndingMode, ...] = ("learned", "never")

_MARKER_FORMS = frozenset({"endconversation", "endofconversation"})
"""The marker's letters, lower-cased, without anything else (see `is_end_marker`)."""

_NOT_LETTERS = re.compile(r"[^a-z]+")

_QUESTION = re.compile(r"\?(?=[\s\"'`*_)\]]*(?:\s|$))")
"""A question mark ending a sentence (then closing quotes or markup, and a space or the end)."""


@dataclass(frozen=True)
class EndingRule:
    """When a simulator that scores the marker ends: p_end >= threshold * exp(-per_turn * k).

    p_end is the probability of `END_MARKER` as the user's next turn, k the user turns of the
    dialogue so far (the seed's included). A trained simulator's card holds its calibrated rule
    (`training.endings`); `per_turn` 0 is a fixed threshold. A threshold above 1 never ends
    (the first turns of a rule whose threshold falls steeply).
    """

    threshold: float
    per_turn: float = 0.0

    def __post_init__(self) -> None:
        if not (math.isfinite(self.threshold) and self.threshold > 0):
            raise ValueError(f"an ending threshold is above 0, not {self.threshold}")
        if not (math.isfinite(self.per_turn) and self.per_turn >= 0):
            raise ValueError(f"an ending threshold's per-turn fall is >= 0, not {self.per_turn}")

    def at(self, user_turns: int) -> float:
        """The threshold on p_end after `user_turns` user turns."""
        return self.threshold * math.exp(-self.per_turn * user_turns)

    def ends(self, p_end: float, user_turns: int) -> bool:
        """Whether the user ends here."""
        return p_end >= self.at(user_turns)


def is_end_marker(text: str | None) -> bool:
    """Whether a drafted user turn is the end marker (case, spacing and punctuation ignored)."""
    if not text or len(text) > 4 * len(END_MARKER):
        return False
    return _NOT_LETTERS.sub("", text.lower()) in _MARKER_FORMS


def asks_back(answer: str) -> bool:
    """Whether an answer ends by asking the user a question (its last paragraph has one).

    "Would you like me to add an example?" leaves the user a question to answer: a real user who
    stops there leaves it open, so an ending is not allowed right after it.
    """
    paragraphs = [p for p in re.split(r"\n\s*\n", answer.strip()) if p.strip()]
    return bool(paragraphs) and _QUESTION.search(paragraphs[-1]) is not None


def ending_refused(answer: str, turns_done: int, *, min_turns: int, mode: EndingMode) -> str | None:
    """Why the user may not end the dialogue now, or None when an ending is allowed.

    Args:
        answer: The assistant's last answer (the one the user would leave without a reply).
        turns_done: Generated user turns completed so far (the ending would not be one).
        min_turns: The floor: at least this many generated user turns before an ending.
        mode: `never` refuses every ending (fixed length).
    """
    if mode == "never":
        return "fixed length (--ending never): the user does not end the conversation; write a turn"
    if turns_done < min_turns:
        return f"too early to end: {turns_done} of at least {min_turns} turns (--min-turns)"
    if is_refusal(answer):
        return "do not end right after a refusal: react to it"
    if asks_back(answer):
        return "do not end right after the assistant asks a question: answer it"
    return None


def ended_reason(turn: int) -> str:
    """The document's reason when the user ended the conversation instead of turn `turn`."""
    return f"{ENDED_REASON} instead of turn {turn}"
