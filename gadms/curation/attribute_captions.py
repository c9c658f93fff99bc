"""The offline captioner: fill caption templates from a person's known attributes.

Used with the synthetic world, whose web shards carry each person's attribute
set (:meth:`gadms.synth.attributes.Identity.to_dict` plus ``"pose"``). Every
placeholder of the template is filled from those attributes or, for an item the
person lacks (no bag, no hat, a plain top, glasses, an age), removed with the
list item, clause or sentence holding it. Articles are made to agree ("a"/"an",
none before plural or uncountable fills such as "jeans" or "short hair").
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import numpy as np

from gadms.config import CaptioningConfig
from gadms.curation.records import CaptionRequest, CaptionResult
from gadms.curation.templates import (
    PLACEHOLDERS,
    PRONOUNS,
    capitalize_sentence,
    render_tokens,
    split_sentences,
    tokenize,
)

NOUNS = {"man": ("man", "gentleman", "guy"), "woman": ("woman", "lady", "girl")}
_PRONOUNS = {
    "man": {"[he]": "he", "[him]": "him", "[his]": "his", "[himself]": "himself"},
    "woman": {"[he]": "she", "[him]": "her", "[his]": "her", "[himself]": "herself"},
}
POSE_PHRASES = {
    "stand": ("standing", "standing still"),
    "walk": ("walking", "walking forward"),
    "hands_on_hips": ("standing with hands on the hips",),
    "phone": ("talking on the phone", "holding a phone to the ear"),
    "wave": ("waving one hand", "raising a hand"),
    "arms_out": ("holding both arms out", "stretching the arms out"),
}
FOOTWEAR_WORDS = ("shoes", "sneakers", "boots")
PLURAL_BOTTOMS = frozenset({"trousers", "jeans", "shorts", "pants", "leggings"})
_PATTERN_NOUNS = {"striped": "stripes", "checked": "checks", "dotted": "dots"}

# Grammatical number of a fill: decides the article before it (BARE: pronouns,
# verb phrases; never given one).
SINGULAR, PLURAL, MASS, BARE = "singular", "plural", "mass", "bare"

_DETERMINERS = frozenset("a an the this that his her their its one some another each every of".split())
_NP_LEFT = frozenset({"a", "an", "the", "[his]", "some", "two"})
# Words that attach a removable item to the sentence: with them it goes too.
_LIST_LINKERS = frozenset({"with", "carrying", "holding", "plus", "wearing", "and"})
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
_DANGLING = frozenset(
    "a an the and or with of is are was were has have had wearing wears wear carrying carries carry holding holds "
    "in on over under his her [his] plus while also who which that to by at".split()
)
_PUNCTUATION = frozenset(",.!?;:")
# Words a caption cut to its word budget must not end on.
_CUT_WORDS = frozenset("a an the and or with of in on at to his her their".split())
ADJECTIVAL = frozenset({"[age]"})
# Used when a template describes only items the person lacks.
FALLBACK_TEMPLATE = "A [man] wearing a [colored top] and [colored bottom]."


@dataclass(frozen=True)
class Fill:
    """A placeholder's words and their grammatical number (``singular``, ``plural`` or ``mass``)."""

    text: str
    number: str = SINGULAR


def _value(attributes: Mapping[str, Any], key: str) -> str | None:
    """An attribute as a string, None when missing or ``"none"``."""
    value = attributes.get(key)
    if value is None or str(value).strip().lower() in {"", "none"}:
        return None
    return str(value).replace("_", " ")


def _hair(attributes: Mapping[str, Any]) -> Fill | None:
    """The hair phrase: "short black hair", "brown hair in a bun", or a shaved head for bald people."""
    style, color = _value(attributes, "hair_style"), _value(attributes, "hair_color")
    if style == "bald":
        return Fill("shaved head")
    if style is None and color is None:
        return None
    if style in {"ponytail", "bun"}:
        return Fill(f"{color + ' ' if color else ''}hair in a {style}", MASS)
    return Fill(" ".join(w for w in (style, color, "hair") if w), MASS)


def _top(attributes: Mapping[str, Any], pattern_placeholder: bool) -> Fill | None:
    """The top with its colour, and its pattern unless the template has ``[color pattern]``."""
    kind = _value(attributes, "top_type")
    if kind is None:
        return None
    pattern = _value(attributes, "top_pattern")
    pattern = None if pattern == "plain" or pattern_placeholder else pattern
    return Fill(" ".join(w for w in (_value(attributes, "top_color"), pattern, kind) if w))


def _bottom(attributes: Mapping[str, Any]) -> Fill | None:
    kind = _value(attributes, "bottom_type")
    if kind is None:
        return None
    text = " ".join(w for w in (_value(attributes, "bottom_color"), kind) if w)
    return Fill(text, PLURAL if kind in PLURAL_BOTTOMS else SINGULAR)


def _colored_item(attributes: Mapping[str, Any], kind_key: str, color_key: str) -> Fill | None:
    """A bag or hat with its colour, None when the person has none."""
    kind = _value(attributes, kind_key)
    if kind is None:
        return None
    return Fill(" ".join(w for w in (_value(attributes, color_key), kind) if w))


def _pattern(attributes: Mapping[str, Any]) -> Fill | None:
    pattern = _value(attributes, "top_pattern")
    return Fill(_PATTERN_NOUNS[pattern], PLURAL) if pattern in _PATTERN_NOUNS else None


def placeholder_fills(attributes: Mapping[str, Any], template: str, rng: np.random.Generator) -> dict[str, Fill | None]:
    """What each placeholder becomes for this person (None: the item is absent, remove it).

    Args:
        attributes: ``Identity.to_dict()`` keys plus ``"pose"``; must hold ``gender``.
        template: the template (its ``[color pattern]`` decides whether the top names its pattern).
        rng: draws the gender noun, footwear word and action wording, always in
            the same order so a seed gives the same words for every template.

    Returns:
        A fill, or None, for every placeholder of :data:`PLACEHOLDERS`.
    """
    gender = str(attributes["gender"])
    noun = str(rng.choice(NOUNS[gender]))
    shoe_word = str(rng.choice(FOOTWEAR_WORDS))
    pose = _value(attributes, "pose")
    action = (
        str(rng.choice(POSE_PHRASES[pose.replace(" ", "_")]))
        if pose and pose.replace(" ", "_") in POSE_PHRASES
        else None
    )
    shoe_color = _value(attributes, "shoe_color")
    fills: dict[str, Fill | None] = {p: Fill(w, BARE) for p, w in _PRONOUNS[gender].items()}
    fills.update(
        {
            "[man]": Fill(noun),
            "[age]": None,
            "[hair]": _hair(attributes),
            "[colored top]": _top(attributes, "[color pattern]" in template),
            "[colored inner top]": None,
            "[color pattern]": _pattern(attributes),
            "[colored bottom]": _bottom(attributes),
            "[colored footwear]": Fill(f"{shoe_color} {shoe_word}" if shoe_color else shoe_word, PLURAL),
            "[colored headwear]": _colored_item(attributes, "hat_type", "hat_color"),
            "[colored bag]": _colored_item(attributes, "bag_type", "bag_color"),
            "[facial hair]": None,
            "[glasses]": None,
            "[accessory]": None,
            "[action]": Fill(action, BARE) if action else None,
        }
    )
    return fills


# ------------------------------------------------------------- removal


def _is_placeholder(token: str | None) -> bool:
    return bool(token) and token.startswith("[")  # type: ignore[union-attr]


def _is_word(token: str | None) -> bool:
    return bool(token) and not _is_placeholder(token) and token not in _PUNCTUATION


def _np_start(tokens: Sequence[str], i: int) -> bool:
    """Whether a noun phrase (an item) starts at ``i``."""
    return i < len(tokens) and (
        tokens[i] in _NP_LEFT
        or tokens[i] == "pair"
        or (_is_placeholder(tokens[i]) and tokens[i] not in {"[he]", "[him]"})
    )


def _np_end(token: str) -> bool:
    """Whether ``token`` can end a noun phrase (a placeholder or the body word of an extension)."""
    return _is_placeholder(token) or token in _BODY_WORDS


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
    if prev in _LIST_LINKERS:
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
    return any(_is_placeholder(t) and t not in PRONOUNS for k, t in enumerate(tokens[start:end], start) if k != p)


def _dangling(tokens: Sequence[str]) -> bool:
    """Whether a sentence lost its content or ends on a word that needs an object."""
    words = [t for t in tokens if t not in _PUNCTUATION]
    return not words or words[-1] in _DANGLING or not any(_is_placeholder(t) and t not in PRONOUNS for t in words)


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


def remove_absent(sentence: list[str], fills: Mapping[str, Fill | None]) -> list[str]:
    """Remove every placeholder whose fill is None from one sentence.

    Args:
        sentence: the sentence's tokens (ending in its terminator).
        fills: from :func:`placeholder_fills`.

    Returns:
        The remaining tokens, or ``[]`` when the whole sentence has to go.
    """
    tokens = list(sentence)
    while True:
        absent = next((k for k, t in enumerate(tokens) if _is_placeholder(t) and fills.get(t) is None), None)
        if absent is None:
            return _tidy(tokens)
        tokens = next((option for option in _removals(tokens, absent) if not _dangling(option)), [])
        if not tokens:
            return []


# ---------------------------------------------------------------- filling


def _article(word: str) -> str:
    """ "a" or "an" for the word that follows it."""
    lowered = word.lower()
    if lowered.startswith(("uni", "use", "usu", "one", "eu")):
        return "a"
    return "an" if lowered[:1] in "aeiou" or lowered.startswith(("hour", "honest")) else "a"


def _fill_tokens(tokens: Sequence[str], fills: Mapping[str, Fill | None]) -> list[tuple[str, str | None]]:
    """Replace placeholders by their words: ``(text, number)`` pairs, number None for template words."""
    pairs: list[tuple[str, str | None]] = []
    for token in tokens:
        fill = fills[token] if _is_placeholder(token) else None
        pairs.append((fill.text, fill.number) if fill is not None else (token, None))
    return pairs


def _needs_article(pieces: Sequence[tuple[str, str | None]], i: int) -> bool:
    """Whether a singular fill at ``i`` lacks a determiner ("wearing [colored top]" -> "wearing a ...")."""
    if i == 0:
        return True
    prev = pieces[i - 1][0].split()[-1].lower()
    if prev in _DETERMINERS:
        return False
    # "a tall [man]": an adjective after the article
    return not (
        i >= 2
        and pieces[i - 1][1] is None
        and prev not in _LIST_LINKERS | _DANGLING
        and pieces[i - 2][0].lower() in _DETERMINERS
    )


def _fix_articles(pieces: list[tuple[str, str | None]]) -> list[str]:
    """Make a/an agree with the next word, drop them before plural or mass fills, add them where missing."""
    out: list[str] = []
    for i, (text, number) in enumerate(pieces):
        following = pieces[i + 1] if i + 1 < len(pieces) else None
        if text.lower() in {"a", "an"} and following is not None:
            if following[1] in {PLURAL, MASS}:
                continue
            text = _article(following[0]) if text.islower() else _article(following[0]).capitalize()
        elif number == SINGULAR and _needs_article(pieces, i):
            out.append(_article(text))
        out.append(text)
    return out


def _sentence_text(tokens: Sequence[str], fills: Mapping[str, Fill | None]) -> str:
    """One filled sentence, articles fixed and first letter upper-case."""
    return capitalize_sentence(render_tokens(_fix_articles(_fill_tokens(tokens, fills))))


def _check_placeholders(template: str) -> None:
    unknown = [t for t in tokenize(template) if _is_placeholder(t) and t not in PLACEHOLDERS]
    if unknown:
        raise ValueError(f"template {template[:60]!r}: unknown placeholder {unknown[0]}")


def fill_template(text: str, attributes: Mapping[str, Any], rng: np.random.Generator) -> str:
    """Write one caption: ``text``'s placeholders filled from ``attributes``.

    Args:
        text: a template (placeholders from :data:`PLACEHOLDERS`).
        attributes: the person's attributes (``Identity.to_dict()`` keys and
            ``"pose"``; ``gender`` required).
        rng: the source of every random wording choice.

    Returns:
        The caption: no placeholder left, absent items removed with their
        clause or sentence, articles agreeing.

    Raises:
        ValueError: the template has an unknown placeholder.
    """
    _check_placeholders(text)
    fills = placeholder_fills(attributes, text, rng)
    kept = [s for s in (remove_absent(s, fills) for s in split_sentences(tokenize(text))) if s]
    if not kept:  # every sentence was about items this person lacks
        kept = [remove_absent(s, fills) for s in split_sentences(tokenize(FALLBACK_TEMPLATE))]
    return " ".join(_sentence_text(s, fills) for s in kept)


def limit_words(caption: str, max_words: int) -> str:
    """Shorten a caption to at most ``max_words`` words: whole sentences first, then words.

    Args:
        caption: the caption.
        max_words: the word budget.

    Returns:
        The caption, cut at a sentence end where possible, ending in a full stop.
    """
    if len(caption.split()) <= max_words:
        return caption
    sentences = [s + "." for s in caption.rstrip(".").split(". ")]
    kept: list[str] = []
    for sentence in sentences:
        if len(" ".join(kept + [sentence]).split()) > max_words:
            break
        kept.append(sentence)
    if kept:
        return " ".join(kept)
    words = caption.split()[:max_words]
    while len(words) > 1 and words[-1].strip(",.;").lower() in _CUT_WORDS:
        words.pop()
    return " ".join(words).rstrip(",.;") + "."


class AttributeCaptioner:
    """Captions from known attributes and templates: deterministic, offline, no model."""

    def __init__(self, cfg: CaptioningConfig):
        """Set up the captioner.

        Args:
            cfg: the captioning parameters; ``max_words`` bounds every caption.
        """
        self.cfg = cfg

    def __repr__(self) -> str:
        return f"AttributeCaptioner(max_words={self.cfg.max_words})"

    def caption(self, requests: Sequence[CaptionRequest]) -> list[CaptionResult]:
        """Caption every request from its attributes.

        Args:
            requests: the crops, each with the templates to fill, its attributes and seed.

        Returns:
            One result per request, in order: one caption per template (the
            request's seed decides the wording), or ``CaptionResult(None,
            "no_attributes")`` when the person's attributes (gender at least) are unknown.

        Raises:
            ValueError: a request carries no template, or a template an unknown placeholder.
        """
        return [self._one(request) for request in requests]

    def _one(self, request: CaptionRequest) -> CaptionResult:
        if not request.templates:
            raise ValueError(f"caption request {request.key!r}: no templates given")
        attributes = request.attributes
        if not attributes or attributes.get("gender") not in NOUNS:
            return CaptionResult(None, "no_attributes")
        rng = np.random.default_rng(request.seed)
        captions = [limit_words(fill_template(t.text, attributes, rng), self.cfg.max_words) for t in request.templates]
        return CaptionResult(captions)
