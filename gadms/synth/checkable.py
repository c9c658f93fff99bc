"""Words a tiny vision model can check: the ablation testbed's ``checkable`` corpus (issue 22).

The default world's captions state a dozen attributes, most of them a few pixels wide at 128 x 64, so a wrong
word usually lands on something the tiny model cannot see. Here every person wears colours from a set of six
well-separated ones on four slots the crop shows large: the top, the bottom (trousers or jeans, the whole leg),
the shoes and a bag held at the side (a tote, a handbag drawn large enough to show its colour at 128 x 64; never
a backpack hidden behind the body), or no bag. A caption is short and states only those slots ("Red top, blue
jeans, white shoes, green bag."). Noise swaps a slot's colour for another of the six, or, when the person has
no bag, adds one (a hallucinated absent item); each wrong word is recorded with its character span.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from gadms.synth.attributes import HAIR_COLORS, SKIN_TONES, TOP_TYPES, Identity, sample_unique_identities
from gadms.synth.captions import NoiseSpan, Piece, render_pieces

# Bumped whenever what a checkable corpus holds changes, so that cached corpora and bases are rebuilt.
WORLD_VERSION = 2
CHECKABLE_COLORS = ("black", "white", "red", "blue", "green", "yellow")
# The attribute slots a caption states, in caption order; noise falls only on these.
SLOTS = ("top_color", "bottom_color", "shoe_color", "bag_color")
# A family of the one-slot gallery: a person and one variant per slot.
FAMILY_SIZE = 1 + len(SLOTS)
_BOTTOMS = ("trousers", "jeans")
_TOPS = tuple(t for t in TOP_TYPES if t != "coat")  # a long coat hides the bottom
_BAGS = ("none", "tote")  # a tote: a handbag drawn 2.2 times as large (gadms.synth.figure)
# Short templates: {top} {bottom} {shoes} always, {bag} only when the caption states a bag.
TEMPLATES: tuple[tuple[str, str], ...] = (
    ("{top} top, {bottom}, {shoes}{bag}.", ", {color} bag"),
    ("A {top} top and {bottom} with {shoes}{bag}.", " and a {color} bag"),
    ("Wearing a {top} top, {bottom} and {shoes}{bag}.", ", carrying a {color} bag"),
)


def sample_checkable_identity(rng: np.random.Generator) -> Identity:
    """One person of the checkable world: the four colour slots from :data:`CHECKABLE_COLORS`, nothing small.

    Plain tops (no long coat), full-length bottoms, no hat; a tote or no bag (half each), the tote in a colour
    other than the top's and the bottom's (a bag of the top's colour does not show).
    """
    gender = str(rng.choice(("man", "woman")))
    top = str(rng.choice(CHECKABLE_COLORS))
    bottom = str(rng.choice([c for c in CHECKABLE_COLORS if c != top]))
    bag = str(_BAGS[int(rng.integers(len(_BAGS)))])
    bag_color = str(rng.choice([c for c in CHECKABLE_COLORS if c not in (top, bottom)]))
    hair_style = str(rng.choice(("short", "long") if gender == "woman" else ("short", "bald")))
    return Identity(
        gender=gender,
        skin_tone=int(rng.integers(len(SKIN_TONES))),
        hair_color="none" if hair_style == "bald" else str(rng.choice(tuple(HAIR_COLORS))),
        hair_style=hair_style,
        top_type=str(rng.choice(_TOPS)),
        top_color=top,
        top_pattern="plain",
        bottom_type=str(rng.choice(_BOTTOMS)),
        bottom_color=bottom,
        shoe_color=str(rng.choice(CHECKABLE_COLORS)),
        bag_type=bag,
        bag_color="none" if bag == "none" else bag_color,
        hat_type="none",
        hat_color="none",
    )


def sample_unique_checkable(rng: np.random.Generator, count: int) -> list[Identity]:
    """``count`` checkable identities with pairwise different attribute sets."""
    return sample_unique_identities(rng, count, sample_checkable_identity)


def one_slot_variant(identity: Identity, slot: str, rng: np.random.Generator) -> Identity:
    """``identity`` with only ``slot``'s colour changed (a bagless person gains a tote), the world's rules kept.

    The new colour is none of the person's other clothes' colours where those rules need it (the top, the
    bottom and the bag differ from each other); shoes take any other colour.
    """
    values = true_values(identity)
    worn = {values["top_color"], values["bottom_color"], values["bag_color"]} - {"none"}
    taken = {values[slot]} if slot == "shoe_color" else worn
    color = str(rng.choice([c for c in CHECKABLE_COLORS if c not in taken]))
    if slot == "bag_color":
        return replace(identity, bag_type="tote", bag_color=color)
    if slot == "top_color":
        return replace(identity, top_color=color)
    if slot == "bottom_color":
        return replace(identity, bottom_color=color)
    return replace(identity, shoe_color=color)


def sample_checkable_families(rng: np.random.Generator, count: int) -> list[Identity]:
    """``count`` checkable identities in families of five: a person and four others, each differing from it in
    exactly one slot's colour (top, bottom, shoes, bag), everything else the same.

    Families are consecutive in the list (the last one may be cut short). No two identities anywhere in the list
    share all four colours, so every caption names one identity of the gallery; within a family only one word
    tells two people apart.
    """
    seen: set[tuple[str, ...]] = set()
    out: list[Identity] = []
    while len(out) < count:
        root = sample_checkable_identity(rng)
        family = [root, *(one_slot_variant(root, slot, rng) for slot in SLOTS)]
        colours = [tuple(true_values(person).values()) for person in family]
        if len(set(colours)) < len(family) or seen.intersection(colours):
            continue
        seen.update(colours)
        out.extend(family[: count - len(out)])
    return out


def checkable_pieces(values: dict[str, str], bottom_type: str, template: int) -> list[Piece]:
    """The tagged pieces of a caption stating ``values`` (slot -> colour; ``bag_color`` ``none``: no bag)."""
    text, bag_text = TEMPLATES[template]
    slot_pieces = {
        "top": [Piece(values["top_color"], "top_color")],
        "bottom": [Piece(values["bottom_color"], "bottom_color"), Piece(" " + bottom_type)],
        "shoes": [Piece(values["shoe_color"], "shoe_color"), Piece(" shoes")],
        "bag": [],
    }
    if values["bag_color"] != "none":
        before, after = bag_text.split("{color}")
        slot_pieces["bag"] = [Piece(before), Piece(values["bag_color"], "bag_color"), Piece(after)]
    pieces: list[Piece] = []
    rest = text
    while "{" in rest:
        head, tail = rest.split("{", 1)
        name, rest = tail.split("}", 1)
        if head:
            pieces.append(Piece(head))
        pieces.extend(slot_pieces[name])
    if rest:
        pieces.append(Piece(rest))
    return pieces


def true_values(identity: Identity) -> dict[str, str]:
    """The identity's colour per slot (``bag_color`` ``none`` without a bag)."""
    return {slot: str(getattr(identity, slot)) for slot in SLOTS}


def checkable_caption(identity: Identity, template: int) -> tuple[str, list[tuple[int, int, str]]]:
    """A clean caption of ``identity`` and the ``(start, end, slot)`` spans of its colour words."""
    return render_pieces(checkable_pieces(true_values(identity), identity.bottom_type, template))


def inject_checkable_noise(
    identity: Identity, template: int, rng: np.random.Generator, count: int = 1
) -> tuple[str, list[NoiseSpan], list[tuple[int, int, str]]]:
    """A caption of ``identity`` with ``count`` wrong slots: a swapped colour, or a bag the person lacks.

    Args:
        identity: the person (its slots' true colours).
        template: which of :data:`TEMPLATES`.
        rng: randomness source.
        count: wrong slots (at most the four).

    Returns:
        ``(caption, wrong spans, (start, end, slot) of every colour word)``; a hallucinated bag's span has
        ``true`` ``none``.
    """
    values = true_values(identity)
    chosen = sorted(rng.choice(len(SLOTS), size=min(count, len(SLOTS)), replace=False).tolist())
    wrong: dict[str, str] = {}
    for k in chosen:
        slot = SLOTS[k]
        wrong[slot] = str(rng.choice([c for c in CHECKABLE_COLORS if c != values[slot]]))
    caption, spans = render_pieces(checkable_pieces({**values, **wrong}, identity.bottom_type, template))
    out = [NoiseSpan(s, e, slot, caption[s:e], values[slot]) for s, e, slot in spans if slot in wrong]
    return caption, out, spans


def swap_one(identity: Identity, template: int, slot: str, color: str) -> tuple[str, list[tuple[int, int, str]]]:
    """The caption with one slot's colour replaced (a hard negative; ``bag_color`` on a bagless person adds one)."""
    values = {**true_values(identity), slot: color}
    return render_pieces(checkable_pieces(values, identity.bottom_type, template))


__all__ = [
    "CHECKABLE_COLORS",
    "SLOTS",
    "TEMPLATES",
    "WORLD_VERSION",
    "checkable_caption",
    "checkable_pieces",
    "inject_checkable_noise",
    "FAMILY_SIZE",
    "one_slot_variant",
    "sample_checkable_families",
    "sample_checkable_identity",
    "sample_unique_checkable",
    "swap_one",
    "true_values",
]
