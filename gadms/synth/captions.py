"""Captions of synthetic people from many sentence templates, with optional noise.

A caption is built as a list of :class:`Piece` objects, each optionally tagged
with the attribute it states, so that a wrong attribute word can be injected
(simulating MLLM hallucination) and its exact character span recorded.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np

from gadms.synth.attributes import VOCABULARY, Identity


@dataclass
class Piece:
    """A run of caption text; ``attribute`` names the attribute the word states, if any."""

    text: str
    attribute: str | None = None


@dataclass(frozen=True)
class NoiseSpan:
    """A wrong word in a caption: ``caption[start:end] == wrong`` while the truth is ``true``."""

    start: int
    end: int
    attribute: str
    wrong: str
    true: str

    def to_dict(self) -> dict[str, object]:
        return {
            "start": self.start,
            "end": self.end,
            "attribute": self.attribute,
            "wrong": self.wrong,
            "true": self.true,
        }


_NOUNS = {
    "man": ("man", "gentleman", "guy", "male pedestrian"),
    "woman": ("woman", "lady", "girl", "female pedestrian"),
}
# Words that state a gender; noise swaps a word for one of the other gender.
GENDER_WORDS = {"man": ("man", "gentleman", "guy", "male"), "woman": ("woman", "lady", "girl", "female")}
_PRONOUN = {"man": ("he", "his"), "woman": ("she", "her")}
_POSE_PHRASES = {
    "stand": ("standing", "standing still"),
    "walk": ("walking", "walking forward"),
    "hands_on_hips": ("standing with hands on the hips",),
    "phone": ("holding a phone to the ear", "talking on the phone"),
    "wave": ("waving one hand", "raising a hand"),
    "arms_out": ("holding both arms out", "stretching the arms out"),
}
_PLURAL_BOTTOMS = {"trousers", "jeans", "shorts"}

# Sentence templates: {slot} expands into tagged pieces; optional slots vanish
# with their sentence when the person has no such item.
TEMPLATES: tuple[str, ...] = (
    "A {person} with {hair} is wearing {top} and {bottom}. {Pron} has {shoes} on. {bag_sentence}{hat_sentence}",
    "The {person} wears {top}, {bottom} and {shoes}. {Pron} has {hair}. {bag_sentence}",
    "This {person} is {action}. {Pron} is dressed in {top} with {bottom}. {hat_sentence}{bag_sentence}",
    "A {person} {action} in {top} and {bottom}, with {shoes}. {bag_sentence}",
    "{Hair_subject} belongs to a {person} who wears {top} over {bottom}. {bag_sentence}{hat_sentence}",
    "The {person} has {hair} and is wearing {top}. {Pron} also wears {bottom} and {shoes}. {bag_sentence}",
    "A {person} is {action}. {Pron} wears {top}, {bottom} and {shoes}, and has {hair}. {hat_sentence}",
    "In {top} and {bottom}, the {person} is {action}. {bag_sentence}{hat_sentence}",
    "The pedestrian is a {person} with {hair}. {Poss} outfit is {top} and {bottom}, plus {shoes}. {bag_sentence}",
    "A {person} wearing {top}, {bottom} and {shoes} is {action}. {hat_sentence}{bag_sentence}",
    "{Pron} is a {person} in {top}. {Pron} wears {bottom} and {shoes}. {Poss} hair is {hair_short}. {bag_sentence}",
    "A {person} who has {hair} wears {top}, {bottom} and {shoes}. {hat_sentence}",
    "There is a {person} {action}, wearing {top} and {bottom}. {bag_sentence}",
    "The {person} in the picture wears {top} and {bottom}. {Pron} has {hair} and {shoes}. {hat_sentence}{bag_sentence}",
    "A {person} with {hair} and {shoes}. {Pron} is wearing {top} and {bottom}. {bag_sentence}",
    "Wearing {top} and {bottom}, a {person} with {hair} is {action}. {hat_sentence}",
)


def _article(word: str) -> str:
    return "an" if word[:1].lower() in "aeiou" else "a"


def _slot_pieces(slot: str, identity: Identity, pose: str, rng: np.random.Generator) -> list[Piece]:
    """Expand one template slot into tagged pieces (an empty list drops it)."""
    he, his = _PRONOUN[identity.gender]
    hair = _hair_pieces(identity, rng)
    a = Piece("{a} ")
    if slot == "person":
        noun = str(rng.choice(_NOUNS[identity.gender]))
        parts = noun.split(" ")
        if len(parts) == 2:  # "male pedestrian": the gender word is the first one
            gender_word = parts[0]
            return [Piece(gender_word, "gender"), Piece(" " + parts[1])]
        return [Piece(noun, "gender")]
    if slot in ("Pron", "Poss"):
        return [Piece((he if slot == "Pron" else his).capitalize())]
    if slot == "hair":
        return hair
    if slot == "Hair_subject":
        return hair
    if slot == "hair_short":
        if identity.hair_style == "bald":
            return [Piece("shaved off")]
        return [
            Piece(identity.hair_color, "hair_color"),
            Piece(" and "),
            Piece(identity.hair_style if identity.hair_style in ("short", "long") else "tied up"),
        ]
    if slot == "top":
        out = [a, Piece(identity.top_color, "top_color"), Piece(" ")]
        if identity.top_pattern != "plain":
            out += [Piece(identity.top_pattern, "top_pattern"), Piece(" ")]
        return out + [Piece(identity.top_type, "top_type")]
    if slot == "bottom":
        lead = [] if identity.bottom_type in _PLURAL_BOTTOMS else [a]
        return lead + [
            Piece(identity.bottom_color, "bottom_color"),
            Piece(" "),
            Piece(identity.bottom_type, "bottom_type"),
        ]
    if slot == "shoes":
        word = str(rng.choice(("shoes", "sneakers", "boots")))
        return [Piece(identity.shoe_color, "shoe_color"), Piece(" " + word)]
    if slot == "action":
        return [Piece(str(rng.choice(_POSE_PHRASES[pose])))]
    if slot == "bag_sentence":
        if identity.bag_type == "none":
            return []
        verb = str(rng.choice(("is carrying", "carries", "has")))
        return [
            Piece(f"{he.capitalize()} {verb} "),
            a,
            Piece(identity.bag_color, "bag_color"),
            Piece(" "),
            Piece(identity.bag_type, "bag_type"),
            Piece(". "),
        ]
    if slot == "hat_sentence":
        if identity.hat_type == "none":
            return []
        return [
            Piece(f"{he.capitalize()} wears "),
            a,
            Piece(identity.hat_color, "hat_color"),
            Piece(" "),
            Piece(identity.hat_type, "hat_type"),
            Piece(". "),
        ]
    raise KeyError(f"unknown caption slot {slot!r}")


def _hair_pieces(identity: Identity, rng: np.random.Generator) -> list[Piece]:
    if identity.hair_style == "bald":
        return [Piece("a bald head")]
    color = Piece(identity.hair_color, "hair_color")
    if identity.hair_style in ("short", "long"):
        return [Piece(identity.hair_style, "hair_style"), Piece(" "), color, Piece(" hair")]
    return [color, Piece(" hair in a "), Piece(identity.hair_style, "hair_style")]


_SLOT = re.compile(r"\{(\w+)\}")


def build_pieces(identity: Identity, pose: str, rng: np.random.Generator, template: int | None = None) -> list[Piece]:
    """Expand a template (random when ``template`` is None) into tagged pieces."""
    index = int(rng.integers(len(TEMPLATES))) if template is None else template
    text = TEMPLATES[index]
    pieces: list[Piece] = []
    pos = 0
    for match in _SLOT.finditer(text):
        if match.start() > pos:
            pieces.append(Piece(text[pos : match.start()]))
        pieces.extend(_slot_pieces(match.group(1), identity, pose, rng))
        pos = match.end()
    if pos < len(text):
        pieces.append(Piece(text[pos:]))
    return pieces


def render_pieces(pieces: list[Piece]) -> tuple[str, list[tuple[int, int, str]]]:
    """Join pieces into a caption.

    Returns:
        ``(caption, spans)`` where spans are ``(start, end, attribute)`` of every
        attribute-stating word. Articles agree with the word after them and the
        first letter of the caption is upper case.
    """
    texts = [p.text for p in pieces]
    for i, text in enumerate(texts):
        if text == "{a} ":
            following = next((t for t in texts[i + 1 :] if t.strip()), "")
            texts[i] = _article(following.strip()) + " "
    caption = ""
    spans: list[tuple[int, int, str]] = []
    for text, piece in zip(texts, pieces):
        if piece.attribute is not None:
            spans.append((len(caption), len(caption) + len(text), piece.attribute))
        caption += text
    # Tidy: collapse spaces left by dropped sentences, keeping spans aligned.
    caption, spans = _collapse_spaces(caption, spans)
    if caption:
        caption = caption[0].upper() + caption[1:]
    return caption, spans


def _collapse_spaces(text: str, spans: list[tuple[int, int, str]]) -> tuple[str, list[tuple[int, int, str]]]:
    keep = [True] * len(text)
    for i in range(1, len(text)):
        if text[i] == " " and text[i - 1] == " ":
            keep[i] = False
    for i in range(len(text) - 1, -1, -1):
        if text[i] != " ":
            break
        keep[i] = False
    new_index = np.cumsum([0] + [int(k) for k in keep])
    out = "".join(c for c, k in zip(text, keep) if k)
    return out, [(int(new_index[s]), int(new_index[e]), a) for s, e, a in spans]


def make_caption(identity: Identity, pose: str, rng: np.random.Generator) -> tuple[str, list[Piece]]:
    """A clean caption for one image of ``identity`` in ``pose``; also returns its pieces."""
    pieces = build_pieces(identity, pose, rng)
    caption, _ = render_pieces(pieces)
    return caption, pieces


def _wrong_words(attribute: str, truth: str, word: str) -> tuple[str, ...]:
    """Words that state a value of ``attribute`` other than ``truth``, in the form of ``word``."""
    if attribute == "gender":
        other = GENDER_WORDS["woman" if truth == "man" else "man"]
        return other[3:] if word in ("male", "female") else other[:3]
    return tuple(v for v in VOCABULARY[attribute] if v != truth and v != "none")


def inject_noise(
    pieces: list[Piece], identity: Identity, rng: np.random.Generator, count: int = 1
) -> tuple[str, list[NoiseSpan]]:
    """Replace ``count`` attribute words with wrong values of the same attribute.

    Args:
        pieces: the caption's tagged pieces (as built by :func:`build_pieces`).
        identity: the person's true attributes.
        rng: randomness source.
        count: how many attribute words to corrupt (fewer if the caption has fewer).

    Returns:
        ``(noisy caption, spans of the wrong words)``.
    """
    candidates = [i for i, p in enumerate(pieces) if p.attribute]
    chosen = (
        sorted(rng.choice(candidates, size=min(count, len(candidates)), replace=False).tolist()) if candidates else []
    )
    noisy = [Piece(p.text, p.attribute) for p in pieces]
    wrong_by_index: dict[int, tuple[str, str]] = {}
    for i in chosen:
        tag = noisy[i].attribute
        assert tag is not None
        truth = str(getattr(identity, tag))
        wrong = str(rng.choice(_wrong_words(tag, truth, noisy[i].text)))
        noisy[i] = Piece(wrong, tag)
        wrong_by_index[i] = (wrong, truth)
    caption, spans = render_pieces(noisy)
    tagged = [i for i, p in enumerate(noisy) if p.attribute is not None]
    out = []
    for piece_index, (start, end, tag) in zip(tagged, spans):
        if piece_index in wrong_by_index:
            wrong, truth = wrong_by_index[piece_index]
            out.append(NoiseSpan(start, end, tag, caption[start:end], truth))
    return caption, out


def alt_text(identity: Identity | None, rng: np.random.Generator) -> str:
    """Web alt-text-like text for a scene (short, noisy, sometimes unrelated)."""
    generic = (
        "street photography",
        "city life",
        "IMG_{n}",
        "downtown on a sunny afternoon",
        "stock photo people walking",
        "Fußgängerzone im Sommer",
        "urban scene #{n}",
        "café corner, weekend",
    )
    n = int(rng.integers(1000, 9999))
    if identity is None or rng.random() < 0.3:
        return str(rng.choice(generic)).format(n=n)
    noun = {"man": "man", "woman": "woman"}[identity.gender]
    forms = (
        f"{noun} in {identity.top_color} {identity.top_type} walking in the city",
        f"Street style: {identity.top_color} {identity.top_type} and {identity.bottom_color} "
        f"{identity.bottom_type} #{n}",
        f"outfit ideas {n} - {identity.bottom_type} look",
        f"Portrait of a {noun} outdoors",
    )
    return str(rng.choice(forms))


__all__ = [
    "GENDER_WORDS",
    "NoiseSpan",
    "Piece",
    "TEMPLATES",
    "alt_text",
    "build_pieces",
    "inject_noise",
    "make_caption",
    "render_pieces",
]
