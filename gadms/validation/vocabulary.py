"""Word lists of the caption quality gate (SPEC 4) and the regexes compiled from them.

Each list follows one principle of the captioning prompt (SPEC 3): no hedging,
no scenery or atmosphere, talk about a person, name at least one garment or
colour. Words that also describe a person ("light" blue, "evening" dress,
"platform" shoes, "outdoor" jacket, "sun" hat, "snow" boots, "sky" blue) are
deliberately left out of, or guarded in, the background list, and so are
picture words that name a print on clothing ("cartoon", "illustration").

Every pattern is case-insensitive (an inline ``(?i)`` flag, so that
``PATTERN.pattern`` can be handed to a Great Expectations regex expectation
as is), matches whole words only, lets a phrase's words be separated by any
run of blanks, and sticks to syntax RE2 shares with Python's ``re`` (no
lookaround, no ``\\s``), so pandas can evaluate it with pyarrow.

The lists themselves are in :mod:`gadms.validation.words_off_topic` (hedging, scenery) and
:mod:`gadms.validation.words_on_topic` (person, garment, colour).
"""

from __future__ import annotations

import re
from typing import Iterable

from gadms.validation.words_off_topic import BACKGROUND_WORDS, SPECULATION_WORDS
from gadms.validation.words_on_topic import COLOUR_WORDS, GARMENT_WORDS, PERSON_WORDS

# Blanks between the words of a phrase. Not ``\s``: pandas then leaves the regex to
# pyarrow's RE2 instead of running Python's ``re`` row by row (much slower).
_BLANKS = r"[ \t\n\r]+"


def _phrase(words: str) -> str:
    """One list entry as a regex body: its words escaped, joined by any run of blanks."""
    return _BLANKS.join(re.escape(part) for part in words.split())


def word_pattern(words: Iterable[str]) -> re.Pattern[str]:
    """Compile a case-insensitive regex that finds any of ``words`` as whole words.

    Args:
        words: plain words or phrases (matched literally, word by word).

    Returns:
        The compiled pattern; its ``.pattern`` carries the ``(?i)`` flag inline.
    """
    # Longest first, so that a phrase wins over a word it starts with.
    bodies = sorted({_phrase(w) for w in words}, key=lambda b: (-len(b), b))
    return re.compile(r"(?i)\b(?:" + "|".join(bodies) + r")\b")


SPECULATION = word_pattern(SPECULATION_WORDS)
BACKGROUND = word_pattern(BACKGROUND_WORDS)
PERSON = word_pattern(PERSON_WORDS)
GARMENT = word_pattern(GARMENT_WORDS)
COLOUR = word_pattern(COLOUR_WORDS)
ATTRIBUTE = word_pattern(GARMENT_WORDS + COLOUR_WORDS)
# A template slot left unfilled: "[colored top]" (benchmark-style) or "{top}" (format-style).
PLACEHOLDER = re.compile(r"\[[^\[\]]*\]|\{ *[A-Za-z_][\w ]*\}")
# Control characters (C0 incl. tab and newline, DEL, C1) and U+FFFD (written as the character
# itself), the mark of undecodable bytes.
INVALID_CHARACTER = re.compile("[\\x00-\\x1f\\x7f-\\x9f\ufffd]")
