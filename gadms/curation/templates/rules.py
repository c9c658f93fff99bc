"""The rule extractor (offline): a caption sentence -> a template, by the vocabulary."""

from __future__ import annotations

import re
from typing import Sequence

from gadms.curation.templates.vocabulary import (
    ACTIONS,
    AGE_WORDS,
    CATEGORY_PLACEHOLDER,
    COLOR_LINKS,
    COLOR_WORDS,
    CONTENT_PLACEHOLDERS,
    GENDER_NOUNS,
    HAIR_TAIL,
    HEADS,
    MAX_HEAD,
    NEUTRAL_NOUNS,
    OBJECT_CONTEXT,
    PATTERN_ADJECTIVES,
    PLACE_PATTERN,
    SHADES,
    STYLE_WORDS,
    match_any_pattern,
    match_pattern,
)

_TOKEN = re.compile(r"\[[a-z ]+\]|'s\b|[a-z0-9]+(?:[-/][a-z0-9]+)*(?:'[a-rt-z][a-z]*)?|[.,!?;:]")
_SENTENCE_END = frozenset(".!?;")


def tokenize(text: str) -> list[str]:
    """Lower-case word, placeholder and punctuation tokens of ``text``.

    Args:
        text: a caption or template.

    Returns:
        Tokens: placeholders such as ``"[colored top]"`` stay whole, ``'s`` is
        its own token, other characters (quotes, brackets of non-placeholders) are dropped.
    """
    text = text.lower().replace("\u2019", "'").replace("`", "'")
    return _TOKEN.findall(text)


def render_tokens(tokens: Sequence[str]) -> str:
    """Join tokens into text.

    Args:
        tokens: words, placeholders and punctuation.

    Returns:
        The text: single spaces, punctuation and ``'s`` attached to the word before.
    """
    out = ""
    for token in tokens:
        if out and token not in ",.!?;:" and token != "'s":
            out += " "
        out += token
    return out


def _is_modifier(token: str) -> bool:
    """A word that belongs to a garment phrase before its head noun (colour, shade, pattern, cut)."""
    if token in COLOR_WORDS or token in SHADES or token in PATTERN_ADJECTIVES or token in STYLE_WORDS:
        return True
    parts = re.split(r"[-/]", token)
    if len(parts) > 1:
        extra = {"and", "colored", "coloured", "color", "colour", "ish", "rimmed", "framed", "length", "neck"}
        return all(_is_modifier(p) or p in extra for p in parts if p)
    return token.endswith(("-colored", "-coloured"))


def _is_color(token: str) -> bool:
    return token in COLOR_WORDS or token in SHADES or any(p in COLOR_WORDS for p in re.split(r"[-/]", token))


def _modifier_run(tokens: Sequence[str], i: int) -> int:
    """End of the run of garment modifiers starting at ``i`` (colour lists joined by and/or/comma included)."""
    j = i
    while j < len(tokens):
        if _is_modifier(tokens[j]):
            j += 1
        elif (
            tokens[j] in COLOR_LINKS
            and j > i
            and _is_color(tokens[j - 1])
            and j + 1 < len(tokens)
            and _is_color(tokens[j + 1])
        ):
            j += 1
        else:
            break
    return j


def _head_at(tokens: Sequence[str], j: int, modifiers: Sequence[str]) -> tuple[str, int] | None:
    """``(category, end)`` of a head noun starting at ``j``, or None."""
    for size in range(MAX_HEAD, 0, -1):
        key = tuple(tokens[j : j + size])
        if len(key) == size and key in HEADS:
            end = j + size
            if key in {("top",), ("bottom",)} and end < len(tokens) and tokens[end] == "of":
                return None  # "on top of", "at the bottom of"
            return HEADS[key], end
    if j < len(tokens) and tokens[j] == "head" and {"bald", "shaved"} & set(modifiers):
        return "hair", j + 1
    return None


def _item_at(tokens: Sequence[str], i: int) -> tuple[str, int] | None:
    """A described item at ``i`` (modifiers + head noun): ``(placeholder, end)``, or None."""
    run_end = _modifier_run(tokens, i)
    # A head noun can also be a modifier ("tote", "canvas"): take the last head position that works.
    head = next((h for j in range(run_end, i - 1, -1) if (h := _head_at(tokens, j, tokens[i:j])) is not None), None)
    if head is None:
        return None
    category, end = head
    if category == "hair":
        end = match_pattern(tokens, end, HAIR_TAIL) or end
    return CATEGORY_PLACEHOLDER[category], end


def _action_at(tokens: Sequence[str], i: int) -> int | None:
    """End of an action phrase at ``i`` (with a trailing place phrase swallowed), or None."""
    end = match_any_pattern(tokens, i, ACTIONS)
    if end is None:
        return None
    return match_pattern(tokens, end, PLACE_PATTERN) or end


def _her(tokens: Sequence[str], i: int) -> str:
    """``[him]`` or ``[his]`` for the ambiguous "her" at ``i``, by the word after it."""
    following = tokens[i + 1] if i + 1 < len(tokens) else "."
    return "[him]" if following in OBJECT_CONTEXT else "[his]"


def _person_word_at(tokens: Sequence[str], i: int) -> tuple[list[str], int] | None:
    """Gender nouns, age words and pronouns at ``i``: ``(replacement, end)``, or None."""
    token = tokens[i]
    if token in {"male", "female"} and i + 1 < len(tokens) and tokens[i + 1] in NEUTRAL_NOUNS:
        return ["[man]"], i + 2
    simple = {
        "he": "[he]",
        "she": "[he]",
        "him": "[him]",
        "his": "[his]",
        "himself": "[himself]",
        "herself": "[himself]",
    }
    if token in GENDER_NOUNS:
        return ["[man]"], i + 1
    if token in simple:
        return [simple[token]], i + 1
    if token == "her":
        return [_her(tokens, i)], i + 1
    if token in AGE_WORDS:
        return ["[age]"], i + 1
    if token == "middle" and i + 1 < len(tokens) and tokens[i + 1] == "aged":
        return ["[age]"], i + 2
    if token == "bald":
        return [], i + 1  # "a bald man": the hair is described elsewhere or not at all
    return None


def _replace_attributes(tokens: Sequence[str]) -> list[str]:
    """One left-to-right pass replacing actions, described items and person words with placeholders."""
    out: list[str] = []
    i = 0
    while i < len(tokens):
        end = _action_at(tokens, i)
        if end is not None:
            out.append("[action]")
            i = end
            continue
        item = _item_at(tokens, i)
        if item is not None:
            out.append(item[0])
            i = item[1]
            continue
        person = _person_word_at(tokens, i)
        if person is not None:
            out.extend(person[0])
            i = person[1]
            continue
        out.append(tokens[i])
        i += 1
    return out


def _mark_inner_tops(tokens: list[str]) -> list[str]:
    """A second top in one sentence is the inner one ("a jacket over a shirt"; "a shirt under a jacket")."""
    out = list(tokens)
    tops = [k for k, t in enumerate(out) if t == "[colored top]"]
    for previous, current in zip(tops, tops[1:]):
        between = set(out[previous + 1 : current])
        if between & {"under", "underneath", "beneath", "inside"}:
            out[previous] = "[colored inner top]"
        else:
            out[current] = "[colored inner top]"
    return out


def _merge_actions(tokens: list[str]) -> list[str]:
    """One ``[action]`` for "standing and looking at her phone" (a person gets one action phrase)."""
    out: list[str] = []
    for token in tokens:
        if token == "[action]" and len(out) >= 2 and out[-1] in {"and", ",", "while"} and out[-2] == "[action]":
            out.pop()
            continue
        out.append(token)
    return out


# Placeholders whose fill is often plural or uncountable ("jeans", "short hair"):
# the filler adds an article when the fill needs one, so templates keep none.
_NO_ARTICLE = frozenset({"[hair]", "[colored bottom]", "[colored footwear]", "[color pattern]", "[glasses]"})


def _canonical_articles(tokens: list[str]) -> list[str]:
    """Write "a" before placeholders ("an [colored top]" -> "a ..."), none before :data:`_NO_ARTICLE` ones.

    The filler makes articles agree, so variants that differ only here are one template.
    """
    out: list[str] = []
    for k, token in enumerate(tokens):
        following = tokens[k + 1] if k + 1 < len(tokens) else ""
        if token in {"a", "an"} and following.startswith("["):
            if following in _NO_ARTICLE:
                continue
            token = "a"
        out.append(token)
    return out


def split_sentences(tokens: Sequence[str]) -> list[list[str]]:
    """Group tokens into sentences.

    Args:
        tokens: as from :func:`tokenize`.

    Returns:
        One token list per sentence, each ending in its terminator (``;`` becomes
        ``.``, a missing final one is added).
    """
    sentences: list[list[str]] = []
    current: list[str] = []
    for token in tokens:
        if token in _SENTENCE_END:
            if current:
                sentences.append(current + ["." if token == ";" else token])
            current = []
        else:
            current.append(token)
    if current:
        sentences.append(current + ["."])
    return sentences


def _clean_sentence(tokens: list[str]) -> list[str]:
    """Drop doubled or stray commas and a leading "and"."""
    out: list[str] = []
    for token in tokens:
        if token == "," and (not out or out[-1] in {",", "and"}):
            continue
        out.append(token)
    while out and out[0] in {",", "and"}:
        out.pop(0)
    while len(out) > 1 and out[-2] == ",":
        out.pop(-2)
    return out


def capitalize_sentence(text: str) -> str:
    """Upper-case the first letter of a sentence.

    Args:
        text: one sentence.

    Returns:
        The sentence; unchanged when it begins with a placeholder (they stay lower-case).
    """
    return text[0].upper() + text[1:] if text and text[0].isalpha() else text


def _template_sentence(tokens: list[str]) -> str | None:
    """One sentence as a template, or None when it has no person content or states an attribute loosely."""
    replaced = _clean_sentence(_canonical_articles(_merge_actions(_mark_inner_tops(_replace_attributes(tokens)))))
    if any(_is_color(t) and t not in SHADES for t in replaced if not t.startswith("[")):
        return None
    if any(t in {"shaved", "blonde", "blond", "bald", "curly", "ponytail"} for t in replaced):
        return None
    if not CONTENT_PLACEHOLDERS & set(replaced):
        return None
    return capitalize_sentence(render_tokens(replaced))


def extract_template_rule(sentence: str) -> str | None:
    """Turn a person description into a template with the rule extractor.

    Colour + garment spans ("a dark blue denim jacket") collapse into one
    placeholder, gender words and pronouns become ``[man]``/``[he]``/``[his]``..,
    actions ``[action]``. Sentences without person content (background, image
    quality) and sentences that still state a colour outside a recognised
    phrase ("her shirt is white") are dropped.

    Args:
        sentence: one caption (one or more sentences, any case, sloppy punctuation).

    Returns:
        The template (sentence-cased, single-spaced, each sentence ending in a
        terminator), or None when no sentence kept any person content.
    """
    kept = [t for t in (_template_sentence(s) for s in split_sentences(tokenize(sentence))) if t]
    return " ".join(kept) if kept else None
