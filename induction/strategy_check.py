"""Rules a strategy phrase must pass: short, imperative, general, not a copy of the instruction.

A strategy is one simple imperative phrase of at most 20 words, with no specifics of the dialogue
it was learned from (METHOD.md, induction step 1). Small extractor models break these rules in
recognisable ways - they echo the user's instruction, stutter ("Ask ik ik ik"), or name the topic -
so each rule returns a reason that can be fed back to the model or recorded for a dropped pair.
"""

from __future__ import annotations

import re

from rapidfuzz import fuzz, utils

MAX_WORDS = 20
COPY_RATIO = 80
"""fuzz.ratio (0-100) with the follow-up at or above which a strategy is a copy of it."""
CHUNK_RATIO = 90
"""fuzz.partial_ratio at or above which a long strategy repeats a passage of the follow-up."""
CHUNK_MIN_WORDS = 8

IMPERATIVE_VERBS = frozenset(
    """
    abandon announce answer approve choose concede disclose go paste pick rebuke select set
    step stop supply adopt insult decline call contradict
    cut delete dictate drop feed fill finish ignore keep lay quote remove replace restore save
    shorten trim
    accept acknowledge adapt add address adjust admit agree analyse analyze apply argue ask
    assess assume begin brainstorm broaden build calculate challenge change check cite clarify
    close combine compare complain compliment condense confirm connect consider contest
    continue contrast correct counter create criticise criticize critique cross-check debate
    deepen defend define demand demonstrate describe design detail dig disagree discuss dispute
    double-check doubt draft drill elaborate emphasise emphasize encourage end enquire estimate
    evaluate examine expand explain explore express extend find flag focus follow format frame
    generalise generalize generate get give guide highlight hypothesise hypothesize identify
    illustrate imagine improve include indicate inquire insist introduce investigate invite
    list look make mention modify move name narrow note object offer outline paraphrase pivot
    plan point pose praise predict present press prioritise prioritize probe prompt propose
    provide push quantify query question raise rank react recap recommend reconsider redirect
    refer refine reflect reframe refute reject relate remind repeat rephrase reply report
    request respond restate return reveal review revise revisit rewrite say seek share shift
    show simplify solve specify speculate start state steer suggest summarise summarize switch
    tailor take tell test thank translate try turn urge use validate verify voice want warn
    write
    """.split()
)
"""First words accepted as imperatives (lower case); an adverb may come first ("Politely ask")."""

_LEAD_ADVERBS = frozenset("again also first further just next now still then".split())
_WORD = re.compile(r"[A-Za-z][A-Za-z'-]*")
_QUOTES = re.compile(r"[\"“”„«»`]|(?:^|\s)['‘]\w")
_DIGIT = re.compile(r"\d")
_ADDRESSES_USER = re.compile(r"\bthe user\b(?!'s|’s)", re.IGNORECASE)


def validate_strategy(strategy: str, followup: str, *, answer: str = "") -> str | None:
    """Return why `strategy` is not a usable strategy for `followup`, or None when it is.

    Args:
        strategy: The extracted phrase.
        followup: The real user instruction it was extracted from.
        answer: The assistant answer before the follow-up; its names count as specifics too.

    Returns:
        A short reason, fit to show the extractor model on a retry, or None.
    """
    text = " ".join(strategy.split())
    if not text:
        return "the strategy is empty"
    words = text.split(" ")
    if len(words) > MAX_WORDS:
        return f"the strategy has {len(words)} words; use at most {MAX_WORDS}"
    for check in (_not_imperative, _repetition, _addresses_user):
        if reason := check(words, text):
            return reason
    if reason := _copy(text, words, followup):
        return reason
    return _specifics(text, words, f"{followup}\n{answer}")


def _bare(word: str) -> str:
    match = _WORD.search(word)
    return match.group(0).lower() if match else ""


def _not_imperative(words: list[str], text: str) -> str | None:
    first = _bare(words[0])
    if first in IMPERATIVE_VERBS:
        return None
    if (first.endswith("ly") or first in _LEAD_ADVERBS) and len(words) > 1:
        if _bare(words[1]) in IMPERATIVE_VERBS:
            return None
    return f"the strategy must start with an imperative verb such as 'Ask', not {words[0]!r}"


def _repetition(words: list[str], text: str) -> str | None:
    tokens = [_bare(w) or w.lower() for w in words]
    for size in (1, 2, 3):
        for i in range(len(tokens) - 3 * size + 1):
            chunk = tokens[i : i + size]
            if chunk == tokens[i + size : i + 2 * size] == tokens[i + 2 * size : i + 3 * size]:
                return f"the strategy repeats {' '.join(chunk)!r}; write a plain phrase"
    return None


def _addresses_user(words: list[str], text: str) -> str | None:
    if _ADDRESSES_USER.search(text):
        return "the strategy is what the user does; do not address 'the user'"
    return None


def _copy(text: str, words: list[str], followup: str) -> str | None:
    ratio = fuzz.ratio(text, followup, processor=utils.default_process)
    if ratio >= COPY_RATIO:
        return f"the strategy copies the instruction (similarity {ratio:.0f}%); generalise it"
    if len(words) >= CHUNK_MIN_WORDS and len(followup.split()) >= CHUNK_MIN_WORDS:
        partial = fuzz.partial_ratio(text, followup, processor=utils.default_process)
        if partial >= CHUNK_RATIO:
            return "the strategy repeats a passage of the instruction; generalise it"
    return None


def _specifics(text: str, words: list[str], context: str) -> str | None:
    if _DIGIT.search(text):
        return "the strategy contains a number; leave out the specifics of this dialogue"
    if _QUOTES.search(text):
        return "the strategy contains a quotation; leave out the specifics of this dialogue"
    for word in words[1:]:
        name = _WORD.search(word)
        if name and name.group(0)[0].isupper():
            bare = name.group(0).removesuffix("'s").removesuffix("’s")
            if re.search(rf"\b{re.escape(bare)}\b", context):
                return f"the strategy names {bare!r} from this dialogue; keep it general"
    return None
