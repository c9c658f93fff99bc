"""Removing what a person lacks from a caption template: the list item, clause or sentence holding a placeholder
with no fill (no bag, no hat, a plain top, ...), so what remains still reads as a sentence.

Used by :mod:`gadms.curation.attribute_captions` before the template is filled.
"""

from __future__ import annotations

from typing import Mapping, Sequence

from gadms.curation.templates import PRONOUNS

_NP_LEFT = frozenset({"a", "an", "the", "[his]", "some", "two"})
# Words that attach a removable item to the sentence: with them it goes too.
LIST_LINKERS = frozenset({"with", "carrying", "holding", "plus", "wearing", "and"})
_SINGLE_LINKERS = frozenset({"over", "beneath", "underneath"})
_UNDER_LINKS = frozenset({"under", "beneath", "underneath"})
_OWN_LINKERS = {"[color pattern]": frozenset({"with"}), "[colored inner top]": frozenset({"with", "under", "over"})}
_RIGHT_PREPOSITIONS = frozenset({"on", "in", "over", "across", "around", "at", "under", "from", "by", "to", "between"})
_BODY_WORDS = frozenset(
    "left right front back lower upper back hand hands shoulder shoulders head face chest arm arms body side waist "
    "neck ear ears feet wrist nose eyes hip hips".split()
)
_TRAILING_PARTICLES = frozenset({"on", "too", "underneath", "beneath", "inside", "also"})
# A sentence ending in one of these lost its object: drop the sentence.
DANGLING = frozenset(
    "a an the and or with of is are was were has have had wearing wears wear carrying carries carry holding holds "
    "in on over under his her [his] plus while also who which that to by at".split()
)
_PUNCTUATION = frozenset(",.!?;:")
ADJECTIVAL = frozenset({"[age]"})


def is_placeholder(token: str | None) -> bool:
    return bool(token) and token.startswith("[")  # type: ignore[union-attr]


def _is_word(token: str | None) -> bool:
    return bool(token) and not is_placeholder(token) and token not in _PUNCTUATION


def _np_start(tokens: Sequence[str], i: int) -> bool:
    """Whether a noun phrase (an item) starts at ``i``."""
    return i < len(tokens) and (
        tokens[i] in _NP_LEFT
        or tokens[i] == "pair"
        or (is_placeholder(tokens[i]) and tokens[i] not in {"[he]", "[him]"})
    )


def _np_end(token: str) -> bool:
    """Whether ``token`` can end a noun phrase (a placeholder or the body word of an extension)."""
    return is_placeholder(token) or token in _BODY_WORDS


def _span(tokens: Sequence[str], p: int) -> tuple[int, int]:
    """``[start, end)`` of the noun phrase of the placeholder at ``p``: articles, "a pair of", "on his back"."""
    start = p
    while start > 0 and tokens[start - 1] in _NP_LEFT:
        start -= 1
    if start >= 2 and tokens[start - 2 : start] == ["pair", "of"]:
        start -= 2
        while start > 0 and tokens[start - 1] in {"a", "one"}:
            start -= 1
    return start, _right_extension(tokens, p + 1)


def _right_extension(tokens: Sequence[str], end: int) -> int:
    """End of a trailing "on his back" / "in her left hand" / "underneath" that belongs to the item."""
    if (
        end < len(tokens)
        and tokens[end] in _TRAILING_PARTICLES
        and (end + 1 == len(tokens) or tokens[end + 1] in _PUNCTUATION)
    ):
        return end + 1
    if (
        end + 1 < len(tokens)
        and tokens[end] in _RIGHT_PREPOSITIONS
        and tokens[end + 1] in {"the", "[his]", "a", "both"}
    ):
        k = end + 2
        while k < len(tokens) and k < end + 4 and tokens[k] in _BODY_WORDS:
            k += 1
        if k > end + 2:
            return k
    return end


def _without(tokens: Sequence[str], start: int, end: int) -> list[str]:
    return list(tokens[:start]) + list(tokens[end:])


def _list_comma_to_and(tokens: list[str], before: int) -> list[str]:
    """After dropping a list's final "and X", turn its last comma (before ``before``) into "and"."""
    for k in range(before - 1, 0, -1):
        if tokens[k] == "and":
            return tokens
        if tokens[k] == "," and _np_end(tokens[k - 1]) and _np_start(tokens, k + 1):
            return tokens[:k] + ["and"] + tokens[k + 1 :]
    return tokens


def _clause_bounds(tokens: Sequence[str], p: int) -> tuple[int, int]:
    """``[start, end)`` of the comma-delimited clause around ``p`` (start includes its comma)."""
    start = max((k for k in range(p) if tokens[k] == ","), default=0)
    end = next((k for k in range(p, len(tokens)) if tokens[k] in _PUNCTUATION), len(tokens))
    return start, end


def _cut_back(tokens: Sequence[str], cut: int, words: frozenset[str] = frozenset({",", "and"})) -> int:
    """Move ``cut`` left over separators directly before it."""
    while cut > 0 and tokens[cut - 1] in words:
        cut -= 1
    return cut


def _primary_removal(tokens: list[str], p: int) -> list[str]:
    """Remove the placeholder at ``p`` with what belongs to it: its list item, linking word or verb."""
    placeholder = tokens[p]
    if placeholder in ADJECTIVAL:
        return _without(tokens, p, p + 1)
    start, end = _span(tokens, p)
    prev = tokens[start - 1] if start > 0 else None
    nxt = tokens[end] if end < len(tokens) else None
    if placeholder == "[action]" and prev in {"is", "are", "was"}:
        return _without(tokens, start - 1, end)  # "A [man] in ... is [action]." -> "A [man] in ..."
    if nxt in _UNDER_LINKS:  # "a [colored inner top] under a [colored top]"
        return _without(tokens, start, end + 1)
    if prev in _SINGLE_LINKERS | _OWN_LINKERS.get(placeholder, frozenset()):
        return _without(tokens, _cut_back(tokens, start - 1, frozenset({","})), end)
    if prev in {",", "and"} and start >= 2 and _np_end(tokens[start - 2]):
        cut = _cut_back(tokens, start)
        rest = _without(tokens, cut, end)
        return _list_comma_to_and(rest, cut) if prev == "and" else rest
    if nxt in {",", "and"}:
        after = end + 1 + (nxt == "," and end + 1 < len(tokens) and tokens[end + 1] == "and")
        if _np_start(tokens, after):
            return _without(tokens, start, after)
    if prev in LIST_LINKERS:
        return _without(tokens, _cut_back(tokens, start - 1), end)
    if _is_word(prev) and nxt in {"and", ","} and _is_word(tokens[end + 1] if end + 1 < len(tokens) else None):
        return _without(tokens, start - 1, end + 1)  # "carries a [bag] and wears ..." -> "wears ..."
    return _without(tokens, start, end)


def _removals(tokens: list[str], p: int) -> list[list[str]]:
    """Ways to remove the placeholder at ``p``, most local first; the sentence itself last."""
    options = [_primary_removal(tokens, p)]
    clause_start, clause_end = _clause_bounds(tokens, p)
    if clause_start > 0 and not _other_content(tokens, clause_start, clause_end, p):
        options.append(_without(tokens, clause_start, clause_end))
    return options


def _other_content(tokens: Sequence[str], start: int, end: int, p: int) -> bool:
    """Whether ``tokens[start:end]`` holds a describing placeholder other than the one at ``p``."""
    return any(is_placeholder(t) and t not in PRONOUNS for k, t in enumerate(tokens[start:end], start) if k != p)


def _dangling(tokens: Sequence[str]) -> bool:
    """Whether a sentence lost its content or ends on a word that needs an object."""
    words = [t for t in tokens if t not in _PUNCTUATION]
    return not words or words[-1] in DANGLING or not any(is_placeholder(t) and t not in PRONOUNS for t in words)


def _tidy(tokens: list[str]) -> list[str]:
    """Drop stray commas (doubled, leading, before the terminator) and a lone list comma before "and"."""
    out: list[str] = []
    for token in tokens:
        if token == "," and (not out or out[-1] in {",", "and"}):
            continue
        while token in _PUNCTUATION - {","} and out and out[-1] in {",", "and"}:
            out.pop()
        out.append(token)
    while out and out[0] in {",", "and"}:
        out.pop(0)
    commas = [k for k, t in enumerate(out) if t == ","]
    if len(commas) == 1 and commas[0] + 1 < len(out) and out[commas[0] + 1] == "and":
        out.pop(commas[0])
    return out


def remove_absent(sentence: list[str], fills: Mapping[str, object]) -> list[str]:
    """Remove every placeholder whose fill is None from one sentence.

    Args:
        sentence: the sentence's tokens (ending in its terminator).
        fills: from :func:`gadms.curation.attribute_captions.placeholder_fills` (None: the person lacks it).

    Returns:
        The remaining tokens, or ``[]`` when the whole sentence has to go.
    """
    tokens = list(sentence)
    while True:
        absent = next((k for k, t in enumerate(tokens) if is_placeholder(t) and fills.get(t) is None), None)
        if absent is None:
            return _tidy(tokens)
        tokens = next((option for option in _removals(tokens, absent) if not _dangling(option)), [])
        if not tokens:
            return []
