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
from gadms.curation.caption_removal import DANGLING, LIST_LINKERS, is_placeholder, remove_absent
from gadms.curation.records import CaptionRequest, CaptionResult
from gadms.curation.templates import (
    PLACEHOLDERS,
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
# Words a caption cut to its word budget must not end on.
_CUT_WORDS = frozenset("a an the and or with of in on at to his her their".split())
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
        fill = fills[token] if is_placeholder(token) else None
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
        and prev not in LIST_LINKERS | DANGLING
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
    unknown = [t for t in tokenize(template) if is_placeholder(t) and t not in PLACEHOLDERS]
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
