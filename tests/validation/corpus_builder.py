"""Small curated corpora for the gate tests: clean, varied captions, and ways to break them.

A sample is the dict written as ``KEY.json`` in the curated format; the
corpus is written with the project's ``ShardWriter`` next to tiny JPEGs whose
shape follows the sample's ``crop_size``.
"""

from __future__ import annotations

import copy
import random
import re
from pathlib import Path
from typing import Any, Callable

import numpy as np

from gadms.reproducible_writes import ShardWriter, jpeg_bytes, json_bytes

NOUNS = {
    "man": ("man", "gentleman", "guy", "young man", "male pedestrian"),
    "woman": ("woman", "lady", "girl", "young woman", "female pedestrian"),
}
PRONOUNS = {"man": ("he", "his"), "woman": ("she", "her")}
COLOURS = (
    "black",
    "white",
    "gray",
    "red",
    "blue",
    "green",
    "yellow",
    "navy",
    "beige",
    "brown",
    "pink",
    "purple",
    "orange",
    "khaki",
    "maroon",
)
TOPS = ("t-shirt", "shirt", "hoodie", "jacket", "sweater", "coat", "blouse", "cardigan", "vest", "windbreaker")
BOTTOMS = ("jeans", "trousers", "shorts", "skirt", "pants", "leggings")
SHOES = ("sneakers", "boots", "sandals", "shoes", "loafers")
BAGS = ("backpack", "handbag", "shoulder bag", "tote bag", "messenger bag")
HAIR = ("short black", "long brown", "curly blonde", "short gray", "long black", "shoulder-length red")
ACTIONS = (
    "walking forward",
    "standing still",
    "looking at a phone",
    "holding a coffee cup",
    "waiting with arms crossed",
)
PATTERNS = (
    "A {person} wearing {top} and {bottom}, with {shoes}.",
    "The {person} has {hair} hair and wears {top} over {bottom}. {Pron} carries {bag}.",
    "This {person} is {action} in {top}, {bottom} and {shoes}.",
    "{Pron} is a {person} dressed in {top} with {bottom} and {bag} on {poss} shoulder.",
    "A {person} with {hair} hair is wearing {top}, {bottom} and {shoes}.",
    "A {person} in {top} and {bottom} is {action}. {Pron} wears {shoes} and carries {bag}.",
)
TOP_PHRASE = re.compile(r"\b(?:a|an) (?:%s) (?:%s)\b" % ("|".join(COLOURS), "|".join(TOPS)))


def _article(word: str) -> str:
    return "an" if word[0] in "aeiou" else "a"


def _coloured(rng: random.Random, items: tuple[str, ...], article: bool) -> str:
    colour, item = rng.choice(COLOURS), rng.choice(items)
    return f"{_article(colour)} {colour} {item}" if article else f"{colour} {item}"


def make_caption(rng: random.Random, pattern: int) -> str:
    """One clean caption: a random person and outfit poured into sentence pattern ``pattern``."""
    gender = rng.choice(("man", "woman"))
    he, his = PRONOUNS[gender]
    slots = {
        "person": rng.choice(NOUNS[gender]),
        "Pron": he.capitalize(),
        "poss": his,
        "top": _coloured(rng, TOPS, True),
        "bottom": _coloured(rng, BOTTOMS, False),
        "shoes": _coloured(rng, SHOES, False),
        "bag": _coloured(rng, BAGS, True),
        "hair": rng.choice(HAIR),
        "action": rng.choice(ACTIONS),
    }
    text = PATTERNS[pattern].format(**slots)
    return text[0].upper() + text[1:]


def clean_samples(count: int = 200, captions_per_sample: int = 2, seed: int = 0) -> list[dict[str, Any]]:
    """``count`` sample JSON dicts with distinct clean captions and crops inside the default bounds."""
    rng = random.Random(seed)
    seen: set[str] = set()
    samples = []
    for index in range(count):
        captions = []
        while len(captions) < captions_per_sample:
            caption = make_caption(rng, rng.randrange(len(PATTERNS)))
            if caption not in seen:
                seen.add(caption)
                captions.append(caption)
        width = rng.randint(100, 220)
        samples.append(_sample(index, captions, width, round(width / rng.uniform(0.3, 0.6))))
    return samples


def _sample(index: int, captions: list[str], width: int, height: int) -> dict[str, Any]:
    """A sample in the curated format (fields the gate ignores filled with plausible values)."""
    x0, y0 = 10 + index % 7, 20 + index % 5
    return {
        "captions": captions,
        "template_ids": list(range(len(captions))),
        "source_key": f"{index:09d}",
        "source_shard": "00000.tar",
        "person_index": 0,
        "box": [x0 + 5, y0 + 5, x0 + width - 5, y0 + height - 5],
        "crop_box": [x0, y0, x0 + width, y0 + height],
        "crop_size": [width, height],
        "score": 0.93,
        "keypoints": [[x0 + 20.0, y0 + 30.0, 0.9]] * 17,
        "captioner": "test",
    }


def _tiny_jpeg(crop_size: Any) -> bytes:
    """A JPEG a tenth of the crop's size (at least 1 x 1), grey."""
    try:
        width, height = (max(1, int(v) // 10) for v in crop_size)
    except (TypeError, ValueError):
        width, height = 4, 8
    return jpeg_bytes(np.full((height, width, 3), 128, dtype=np.uint8), quality=80)


def write_corpus(directory: Path, samples: list[dict[str, Any] | bytes], shard_size: int = 100) -> Path:
    """Write samples as curated shards ``00000.tar``, ...; a ``bytes`` sample is written as raw JSON bytes."""
    directory.mkdir(parents=True, exist_ok=True)
    for shard, start in enumerate(range(0, len(samples), shard_size)):
        with ShardWriter(directory / f"{shard:05d}.tar") as writer:
            for index, sample in enumerate(samples[start : start + shard_size], start):
                key = f"{index:06d}"
                meta = sample if isinstance(sample, bytes) else json_bytes(sample)
                size = sample.get("crop_size") if isinstance(sample, dict) else None
                writer.add(f"{key}.jpg", _tiny_jpeg(size))
                writer.add(f"{key}.json", meta)
    return directory


def edit_captions(samples: list[dict[str, Any]], every: int, edit: Callable[[str, int], str]) -> list[dict[str, Any]]:
    """A copy of ``samples`` where the first caption of every ``every``-th sample is ``edit(caption, n)``."""
    out = copy.deepcopy(samples)
    for n, sample in enumerate(out[::every]):
        sample["captions"][0] = edit(sample["captions"][0], n)
    return out


def edit_crops(samples: list[dict[str, Any]], every: int, crop_size: list[int]) -> list[dict[str, Any]]:
    """A copy of ``samples`` where every ``every``-th crop has size ``crop_size``."""
    out = copy.deepcopy(samples)
    for sample in out[::every]:
        sample["crop_size"] = list(crop_size)
    return out


SPECULATIVE_TAILS = (
    "The person seems to be in a hurry.",
    "The person is probably a student.",
    "The bag appears to be made of leather.",
    "Perhaps the person is waiting for someone.",
    "The person might be a tourist.",
)
BACKGROUND_TAILS = (
    "The person is standing on a busy street.",
    "Tall buildings fill the background.",
    "It is a sunny day.",
    "The atmosphere is calm and pleasant.",
)


def add_speculation(caption: str, n: int) -> str:
    """Append a hedged sentence."""
    return f"{caption} {SPECULATIVE_TAILS[n % len(SPECULATIVE_TAILS)]}"


def add_background(caption: str, n: int) -> str:
    """Append a sentence about the scene."""
    return f"{caption} {BACKGROUND_TAILS[n % len(BACKGROUND_TAILS)]}"


def leave_placeholder(caption: str, n: int) -> str:
    """Put the template slot back in place of the top, e.g. ``a [colored top]``."""
    edited, count = TOP_PHRASE.subn("a [colored top]", caption, count=1)
    assert count == 1, f"no top phrase in {caption!r}"
    return edited


def make_empty(caption: str, n: int) -> str:
    """An empty caption (every other one only whitespace)."""
    return "" if n % 2 else "   "


def make_duplicate(caption: str, n: int) -> str:
    """The same caption everywhere."""
    return "A man wearing a black jacket and blue jeans, with white sneakers."


def drop_person(caption: str, n: int) -> str:
    """An outfit with nobody in it."""
    return (
        f"{COLOURS[n % len(COLOURS)].capitalize()} {TOPS[n % len(TOPS)]} with {BOTTOMS[n % len(BOTTOMS)]} and sneakers."
    )


def drop_attribute(caption: str, n: int) -> str:
    """A person with no garment or colour."""
    return f"The {NOUNS['man'][n % 5]} is {ACTIONS[n // 5 % 5]} near number {n}."


def make_long(caption: str, n: int) -> str:
    """A caption well over 80 words."""
    return caption + " " + " ".join(f"word{n}x{i}" for i in range(90))


def add_control_character(caption: str, n: int) -> str:
    """A caption with a bell character in it."""
    return caption.replace(" ", " \x07", 1)


TWINS = {  # text -> samples whose second caption becomes it (ties in copies, a blank-padded copy, a 3-copy group)
    "A woman in a red coat and black jeans.": (3, 14, 25, 36),
    "A man in a blue shirt and gray pants.": (2, 15, 26),
    "  A man in a blue shirt and gray pants.\n": (41,),
    "A girl wearing a pink hoodie and white shoes.": (5, 7, 9),
}


def mixed_defects(samples: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Several defects at once: hedging, scenery, empty captions, bad crops and groups of exact twins."""
    out = edit_captions(samples, 10, add_speculation)
    out = edit_captions(out, 13, add_background)
    out = edit_captions(out, 17, make_empty)
    out = edit_crops(edit_crops(out, 11, [95, 600]), 23, [60, 150])
    for text, indices in TWINS.items():
        for index in indices:
            if index < len(out):
                out[index]["captions"][1] = text
    return out
