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
"""

from __future__ import annotations

import re
from typing import Iterable

# Blanks between the words of a phrase. Not ``\s``: pandas then leaves the regex to
# pyarrow's RE2 instead of running Python's ``re`` row by row (much slower).
_BLANKS = r"[ \t\n\r]+"

SPECULATION_WORDS: tuple[str, ...] = (
    "possibly", "possible", "perhaps", "maybe", "probably", "probable", "likely", "unlikely",
    "presumably", "apparently", "seemingly", "supposedly", "potentially", "conceivably",
    "might", "may be", "could be", "could have", "would be", "must be",
    "seem", "seems", "seemed", "seem to", "seems to",
    "appear to", "appears", "appears to", "appears to be", "appeared",
    "looks like", "look like", "looking like", "as if", "as though",
    "suggest", "suggests", "suggesting", "suggestive of", "indicating", "implies", "implying",
    "resemble", "resembles", "resembling", "reminiscent of",
    "i think", "i believe", "i guess", "we can assume", "assume", "assumed", "guess",
    "not sure", "unsure", "uncertain", "unclear", "hard to tell", "difficult to tell",
    "cannot tell", "can't tell", "hard to say", "cannot be determined", "it is unclear",
)

BACKGROUND_WORDS: tuple[str, ...] = (
    # the picture around the person
    "background", "backdrop", "foreground", "scene", "scenery", "surroundings",
    "surrounding area", "environment", "landscape", "cityscape", "skyline", "horizon",
    "in the distance", "in the picture behind", "behind him", "behind her", "behind them",
    # places
    "street", "streets", "road", "roads", "roadside", "sidewalk", "sidewalks", "pavement",
    "crosswalk", "zebra crossing", "alley", "alleyway", "intersection", "highway", "avenue",
    "plaza", "parking lot", "bus stop", "train station", "subway", "metro station",
    "building", "buildings", "skyscraper", "skyscrapers", "wall", "walls", "brick wall",
    "storefront", "shop", "shops", "store", "stores", "mall", "supermarket", "market",
    "restaurant", "cafe", "campus", "stadium", "airport", "hallway", "corridor",
    "lobby", "staircase", "escalator", "room", "indoors", "outdoors", "urban setting",
    "outdoor setting", "indoor setting", "city", "downtown", "town", "park", "garden",
    "tree", "trees", "bushes", "lawn", "beach", "ocean", "lake", "river", "mountain",
    "mountains", "hill", "hills", "forest", "fence", "traffic", "cars", "vehicles",
    "the sky", "blue sky", "clear sky", "cloudy sky", "open sky", "night sky", "skies",
    "crowd", "crowded", "passersby", "passers-by", "bystanders", "onlookers",
    # weather, light and time of day
    "weather", "sunny", "cloudy", "rainy", "snowy", "foggy", "overcast", "clouds",
    "daylight", "sunlight", "sunshine", "sunset", "sunrise", "dusk", "dawn", "daytime",
    "nighttime", "at night", "lighting", "illuminated", "shadow", "shadows",
    # atmosphere and mood
    "atmosphere", "mood", "ambience", "ambiance", "vibe", "vibes", "serene", "tranquil",
    "peaceful", "bustling", "lively", "gloomy", "dreamy", "idyllic",
    # the photograph itself and its style
    "photo", "photos", "photograph", "photography", "photographed", "snapshot",
    "image style", "art style", "style of the image", "artistic", "cinematic", "blurry", "blurred", "out of focus", "low resolution",
    "high resolution", "grainy", "pixelated", "camera angle",
)

PERSON_WORDS: tuple[str, ...] = (
    "man", "men", "woman", "women", "person", "persons", "people", "pedestrian", "pedestrians",
    "boy", "boys", "girl", "girls", "lady", "ladies", "gentleman", "gentlemen", "guy", "guys",
    "male", "female", "child", "children", "kid", "kids", "teenager", "teen", "teenage",
    "adolescent", "youth", "adult", "elderly", "senior", "toddler", "baby", "individual",
    "someone", "he", "she", "him", "her", "his", "hers", "himself", "herself",
)

GARMENT_WORDS: tuple[str, ...] = (
    # tops
    "shirt", "shirts", "t-shirt", "t-shirts", "t shirt", "tshirt", "tee", "top", "tops",
    "blouse", "tank top", "camisole", "vest", "jacket", "jackets", "coat", "coats", "overcoat",
    "raincoat", "trench coat", "parka", "puffer", "windbreaker", "hoodie", "hoody", "sweatshirt",
    "sweater", "jumper", "cardigan", "pullover", "jersey", "polo", "uniform", "suit", "blazer",
    "tunic", "dress", "dresses", "gown", "robe", "apron",
    # bottoms
    "skirt", "skirts", "trousers", "pants", "jeans", "shorts", "leggings", "tights",
    "sweatpants", "joggers", "slacks", "chinos", "overalls", "jumpsuit", "bottom", "bottoms",
    # footwear
    "shoes", "shoe", "sneakers", "trainers", "boots", "boot", "sandals", "slippers", "heels",
    "high heels", "loafers", "flip-flops", "socks", "stockings", "footwear",
    # head and accessories
    "hat", "hats", "cap", "caps", "beanie", "helmet", "hood", "headscarf", "scarf", "headband",
    "glasses", "eyeglasses", "sunglasses", "spectacles", "mask", "face mask", "gloves",
    "mittens", "belt", "tie", "bag", "bags", "backpack", "handbag", "purse", "tote",
    "shoulder bag", "satchel", "briefcase", "suitcase", "luggage", "umbrella", "watch",
    "bracelet", "necklace", "earrings", "headphones", "earphones", "lanyard",
)

COLOUR_WORDS: tuple[str, ...] = (
    "black", "white", "gray", "grey", "silver", "red", "blue", "navy", "green", "olive",
    "khaki", "yellow", "orange", "pink", "purple", "violet", "lavender", "lilac", "brown",
    "tan", "beige", "cream", "ivory", "maroon", "burgundy", "crimson", "scarlet", "teal",
    "turquoise", "cyan", "aqua", "magenta", "fuchsia", "gold", "golden", "camel", "coral",
    "mint", "charcoal", "denim", "blonde", "blond", "dark", "light", "pale", "bright",
    "multicolored", "multicoloured", "colorful", "colourful",
    "reddish", "bluish", "greenish", "grayish", "greyish", "brownish", "yellowish",
    "pinkish", "purplish", "whitish", "blackish",
)


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
