"""Lexical features of user instructions: words, n-grams, question form, anaphora, references.

All rules are deliberately simple and documented, so that a number in a report can be checked by
hand. They are meant for English.
"""

from __future__ import annotations

import re

WORD = re.compile(r"[^\W_]+(?:'[^\W_]+)*")
"""A word token: letters/digits, with inner apostrophes kept (`what's` is one word)."""

QUESTION_STARTS = frozenset(
    "what why how when where which who whom whose "
    "is are was were am do does did can could would will should shall may might must "
    "have has had".split()
)
"""First words that make an instruction a question even without a question mark."""

ANAPHORA_WORDS = frozenset("it its this that these those they them their such".split())
"""Pronouns and determiners that usually point back at something already said."""

ANAPHORA_PHRASES = (
    "you mentioned",
    "you said",
    "you described",
    "you suggested",
    "you listed",
    "you gave",
    "you explained",
    "mentioned above",
    "the above",
    "the former",
    "the latter",
    "as you",
)
"""Phrases that refer back to the previous answer explicitly."""

STOPWORDS = frozenset(
    """about above after again against also although among another anything around because been
    before being below between both cannot could does doing down during each either else even ever
    every from further have having here hers herself himself however into itself just like many
    more most much must myself neither never only other others ought ours ourselves over same
    shall should since some something still such than that their theirs them themselves then there
    these they this those though through thus under until upon very want were what whatever when
    where whether which while whom whose will with within without would your yours yourself
    yourselves tell please give explain know make thing things really kind sort""".split()
)
"""Function words and vague verbs (length >= 4) that never count as a shared content word."""


def words(text: str) -> list[str]:
    """Return the lower-cased word tokens of `text`."""
    return WORD.findall(text.lower())


def ngrams(tokens: list[str], n: int) -> list[tuple[str, ...]]:
    """Return the n-grams of one token list (none cross a text boundary)."""
    return [tuple(tokens[i : i + n]) for i in range(len(tokens) - n + 1)]


def is_question(text: str) -> bool:
    """Tell whether `text` ends with '?' or starts with a wh- or auxiliary word."""
    tokens = words(text)
    return text.rstrip().endswith("?") or bool(tokens and tokens[0] in QUESTION_STARTS)


def is_anaphoric(text: str) -> bool:
    """Tell whether `text` holds an anaphoric word (`ANAPHORA_WORDS`) or phrase."""
    tokens = words(text)
    if ANAPHORA_WORDS.intersection(tokens):
        return True
    joined = f" {' '.join(tokens)} "
    return any(f" {phrase} " in joined for phrase in ANAPHORA_PHRASES)


def content_words(text: str) -> set[str]:
    """Return the content words of `text`: alphabetic, length >= 4, not a stopword.

    A final 's' is dropped from words longer than 4 letters, so `cells` matches `cell`.
    """
    found = set()
    for token in words(text):
        if len(token) < 4 or not token.isalpha() or token in STOPWORDS:
            continue
        found.add(token[:-1] if len(token) > 4 and token.endswith("s") else token)
    return found


def refers_back(instruction: str, answer: str) -> bool:
    """Tell whether `instruction` refers back to `answer`.

    It does when it shares a content word with the answer (`content_words`) or is anaphoric
    (`is_anaphoric`).
    """
    return bool(content_words(instruction) & content_words(answer)) or is_anaphoric(instruction)
