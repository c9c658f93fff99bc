"""Attribute vocabulary of the synthetic person world and identity sampling.

An identity is one :class:`Identity` (a full attribute set); every image of
that identity shows the same attributes with a different pose, scale,
background and lighting.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, fields

import numpy as np

# Named colours with the RGB used to draw them. Names are the words captions use.
COLORS: dict[str, tuple[int, int, int]] = {
    "black": (25, 25, 28),
    "white": (235, 235, 232),
    "gray": (128, 128, 128),
    "red": (200, 30, 35),
    "blue": (35, 70, 190),
    "green": (40, 140, 60),
    "yellow": (235, 205, 40),
    "orange": (240, 130, 30),
    "pink": (240, 140, 180),
    "purple": (120, 50, 150),
    "brown": (115, 70, 35),
    "beige": (215, 195, 160),
}
HAIR_COLORS: dict[str, tuple[int, int, int]] = {
    "black": (20, 18, 18),
    "brown": (90, 55, 30),
    "blonde": (225, 190, 110),
    "red": (165, 60, 30),
    "gray": (150, 150, 150),
}
SKIN_TONES: tuple[tuple[int, int, int], ...] = (
    (245, 215, 190),
    (225, 185, 150),
    (190, 140, 100),
    (140, 95, 65),
    (95, 65, 45),
)

GENDERS = ("man", "woman")
HAIR_STYLES = ("short", "long", "ponytail", "bun", "bald")
TOP_TYPES = ("t-shirt", "shirt", "jacket", "coat", "hoodie", "sweater")
TOP_PATTERNS = ("plain", "striped", "checked", "dotted")
BOTTOM_TYPES = ("trousers", "jeans", "shorts", "skirt")
BAG_TYPES = ("none", "backpack", "handbag", "shoulder bag")
HAT_TYPES = ("none", "cap", "beanie")

# What each attribute may take: the vocabulary a caption word is checked against.
VOCABULARY: dict[str, tuple[str, ...]] = {
    "gender": GENDERS,
    "hair_color": tuple(HAIR_COLORS),
    "hair_style": HAIR_STYLES,
    "top_type": TOP_TYPES,
    "top_color": tuple(COLORS),
    "top_pattern": TOP_PATTERNS,
    "bottom_type": BOTTOM_TYPES,
    "bottom_color": tuple(COLORS),
    "shoe_color": tuple(COLORS),
    "bag_type": BAG_TYPES,
    "bag_color": tuple(COLORS),
    "hat_type": HAT_TYPES,
    "hat_color": tuple(COLORS),
}


@dataclass(frozen=True)
class Identity:
    """One person's full attribute set (clothes do not change between images)."""

    gender: str
    skin_tone: int
    hair_color: str
    hair_style: str
    top_type: str
    top_color: str
    top_pattern: str
    bottom_type: str
    bottom_color: str
    shoe_color: str
    bag_type: str
    bag_color: str
    hat_type: str
    hat_color: str

    def to_dict(self) -> dict[str, object]:
        """Attributes as a plain dict (for JSON)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, object]) -> "Identity":
        """Inverse of :meth:`to_dict`."""
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names})  # type: ignore[arg-type]


def _pick(rng: np.random.Generator, options: tuple[str, ...], p: list[float] | None = None) -> str:
    return str(options[int(rng.choice(len(options), p=p))])


def sample_identity(rng: np.random.Generator) -> Identity:
    """Draw one random attribute set.

    Args:
        rng: the generator all randomness comes from.

    Returns:
        A new identity; colours of top and bottom differ so outfits read clearly.
    """
    gender = _pick(rng, GENDERS)
    style_p = [0.45, 0.1, 0.05, 0.05, 0.35] if gender == "man" else [0.2, 0.4, 0.25, 0.15, 0.0]
    bottom_p = [0.4, 0.35, 0.25, 0.0] if gender == "man" else [0.25, 0.25, 0.2, 0.3]
    colors = tuple(COLORS)
    top_color = _pick(rng, colors)
    bottom_color = _pick(rng, tuple(c for c in colors if c != top_color))
    hair_style = _pick(rng, HAIR_STYLES, style_p)
    hair_color = _pick(rng, tuple(HAIR_COLORS))
    bag_type, bag_color = _pick(rng, BAG_TYPES, [0.4, 0.25, 0.15, 0.2]), _pick(rng, colors)
    hat_type, hat_color = _pick(rng, HAT_TYPES, [0.7, 0.2, 0.1]), _pick(rng, colors)
    # A colour of something the person does not have is "none", so two
    # identities that look the same are the same identity.
    return Identity(
        gender=gender,
        skin_tone=int(rng.integers(len(SKIN_TONES))),
        hair_color="none" if hair_style == "bald" else hair_color,
        hair_style=hair_style,
        top_type=_pick(rng, TOP_TYPES),
        top_color=top_color,
        top_pattern=_pick(rng, TOP_PATTERNS, [0.55, 0.2, 0.15, 0.1]),
        bottom_type=_pick(rng, BOTTOM_TYPES, bottom_p),
        bottom_color=bottom_color,
        shoe_color=_pick(rng, colors),
        bag_type=bag_type,
        bag_color="none" if bag_type == "none" else bag_color,
        hat_type=hat_type,
        hat_color="none" if hat_type == "none" else hat_color,
    )


def sample_unique_identities(
    rng: np.random.Generator, count: int, sample: Callable[[np.random.Generator], Identity] | None = None
) -> list[Identity]:
    """Draw ``count`` identities with pairwise different attribute sets, each by ``sample`` (default
    :func:`sample_identity`)."""
    draw = sample or sample_identity
    seen: set[Identity] = set()
    out: list[Identity] = []
    while len(out) < count:
        identity = draw(rng)
        if identity not in seen:
            seen.add(identity)
            out.append(identity)
    return out
