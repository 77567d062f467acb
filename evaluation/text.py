"""Lexical features of user instructions: words, n-grams, question form, anaphora, references.

All rules are deliberately simple and documented, so that a number in a report can be checked by
hand. They are meant for English.
"""

from __future__ import annotations

import re

from dialogues.ending import SPECIAL_TAG

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


def strategy_overlap(instruction: str, strategy: str) -> float | None:
    """Fraction of the strategy's content words that the instruction repeats.

    Content words as in `content_words` (alphabetic, 4+ letters, not a stopword, a final 's'
    dropped from words over 4 letters), so `Ask for concrete examples` -> {concrete, example}.
    None when the strategy has no content word.
    """
    wanted = content_words(strategy)
    return len(wanted & content_words(instruction)) / len(wanted) if wanted else None


ANSWER_OPENERS = (
    "sure",
    "certainly",
    "of course",
    "absolutely",
    "great question",
    "good question",
    "excellent question",
    "here is",
    "here's",
    "here are",
    "as an ai",
    "as a language model",
    "as an assistant",
    "i'd be happy to",
    "i would be happy to",
    "i'm happy to",
    "happy to help",
    "i apologize",
)
"""Openings of an assistant's answer (matched on the first word tokens, case-insensitive)."""

USER_AFTER_HERE = frozenset({"my", "mine", "our"})
"""Words after `here is` / `here's` / `here are` that make it a user's own: `Here is my code`."""

CODE_BLOCK_LINES = 10
"""A fenced code block with more lines than this reads like an answer."""

LIST_ITEMS = 3
"""A list with at least this many numbered or bulleted lines reads like an answer."""

LONG_WORDS = 120
"""An instruction with more words than this is far over real length (real median 10-14)."""

FENCE = re.compile(r"^[ \t]*(```|~~~)[^\n]*\n(.*?)^[ \t]*\1", re.MULTILINE | re.DOTALL)
"""A fenced code block: its opening fence line, its body, its closing fence."""

LIST_ITEM = re.compile(r"^[ \t]*(?:[-*+•]|\d{1,2}[.)])[ \t]+\S", re.MULTILINE)
"""A line that starts a bulleted (`-`, `*`, `+`, `•`) or numbered (`1.`, `2)`) list item."""


def assistant_like(text: str) -> list[str]:
    """Name the clauses by which a user turn reads like an assistant's reply (empty: none).

    A user turn is assistant-like when any of these holds:

    1. `opener`: its first word tokens (lower-cased, curly apostrophes made straight) are one of
       `ANSWER_OPENERS` ("Sure", "Certainly", "Of course", "Absolutely", "Great question",
       "Here is/Here's/Here are", "As an AI", "I'd be happy to", "I apologize", ...), except
       "here is/here's/here are" followed by a word of `USER_AFTER_HERE` ("Here is my code").
    2. `code`: it holds a fenced (``` or ~~~) code block of more than `CODE_BLOCK_LINES` (10)
       lines.
    3. `list`: it holds `LIST_ITEMS` (3) or more lines starting a bulleted (`-`, `*`, `+`, `•`)
       or numbered (`1.`, `1)`) list item.
    4. `long`: it has more than `LONG_WORDS` (120) word tokens (`words`), about 10x the median
       real follow-up.

    "Yes, ..." is no opener: real users answer the assistant's questions that way.
    """
    tokens = words(text.replace("\u2019", "'"))
    clauses = []
    for opener in ANSWER_OPENERS:
        head = opener.split()
        if tokens[: len(head)] == head:
            after = tokens[len(head) : len(head) + 1]
            if not (head[0].startswith("here") and after and after[0] in USER_AFTER_HERE):
                clauses.append("opener")
            break
    if any(body.count("\n") > CODE_BLOCK_LINES for _, body in FENCE.findall(text)):
        clauses.append("code")
    if len(LIST_ITEM.findall(text)) >= LIST_ITEMS:
        clauses.append("list")
    if len(tokens) > LONG_WORDS:
        clauses.append("long")
    return clauses


def is_assistant_like(text: str) -> bool:
    """Tell whether a user turn reads like an assistant's reply (see `assistant_like`)."""
    return bool(assistant_like(text))


LOOP_COPIES = 3
"""A user turn that writes the same run of words this many times running is looping."""

LOOP_LONGEST = 8
"""The longest run of words (`LOOP_COPIES` times running) counted as a loop."""


def loops(text: str) -> bool:
    """Tell whether a user turn loops: a model circling where it should have stopped.

    It does when it writes a run of 1 to `LOOP_LONGEST` (8) whitespace-separated words
    `LOOP_COPIES` (3) times running ("that occurred that occurred that occurred"; a one-word
    run only if it has a letter, so "- - -" or "0 0 0" is no loop), or when it holds a special
    tag (`dialogues.ending.SPECIAL_TAG`), as the end marker written line after line does.
    Measured on the real follow-ups of oasst1-en100 and realhumaneval-chat: 1 of 823 (a query
    pasted three times).
    """
    if SPECIAL_TAG.search(text):
        return True
    tokens = text.split()
    for n in range(1, LOOP_LONGEST + 1):
        for start in range(len(tokens) - LOOP_COPIES * n + 1):
            run = tokens[start : start + n]
            if n == 1 and not re.search(r"[^\W\d_]", run[0]):
                continue
            if all(
                tokens[start + k * n : start + (k + 1) * n] == run for k in range(1, LOOP_COPIES)
            ):
                return True
    return False
