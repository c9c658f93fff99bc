"""The placeholder vocabulary and the person-description words the rule extractor recognises."""

from __future__ import annotations

import re
from typing import Iterable, Sequence

# The placeholder vocabulary: what each stands for. Lower-case, bracketed; the
# gender noun and the pronouns agree with the person's gender when filled.
PLACEHOLDERS: dict[str, str] = {
    "[man]": "the gender noun: man or woman (also lady, guy, male pedestrian, ...)",
    "[he]": "subject pronoun agreeing with the gender: he / she",
    "[him]": "object pronoun: him / her",
    "[his]": "possessive pronoun: his / her",
    "[himself]": "reflexive pronoun: himself / herself",
    "[age]": "an age word: young, old, middle-aged, ...",
    "[hair]": "the hair with its length, colour and style: short black hair, a ponytail, a bald head",
    "[colored top]": "the upper garment with its colour, pattern and cut: a red striped t-shirt, a black coat, a dress",
    "[colored inner top]": "a second upper garment worn under the first: a white shirt (under a jacket)",
    "[color pattern]": "a pattern or print on the top: yellow stripes, a white logo, checks",
    "[colored bottom]": "the lower garment with its colour: blue jeans, a black skirt, grey shorts",
    "[colored footwear]": "the shoes with their colour: white sneakers, black boots",
    "[colored headwear]": "a hat or cap with its colour: a red cap, a black beanie",
    "[colored bag]": "a bag with its colour: a black backpack, a brown handbag",
    "[facial hair]": "a beard or moustache: a grey beard",
    "[glasses]": "glasses or sunglasses",
    "[accessory]": "another carried or worn item: a scarf, a watch, an umbrella, a belt",
    "[action]": "what the person is doing: walking, standing, talking on the phone",
}
PRONOUNS = frozenset({"[he]", "[him]", "[his]", "[himself]"})
# Placeholders that describe the person (a template needs at least one).
CONTENT_PLACEHOLDERS = frozenset(PLACEHOLDERS) - PRONOUNS - {"[age]"}
PLACEHOLDER_RE = re.compile(r"\[[^\[\]]*\]")

_BASE_COLORS = (
    "black white grey gray red blue green yellow orange pink purple brown beige navy khaki tan cream maroon "
    "burgundy violet teal turquoise olive gold golden silver coffee camel wine lavender magenta cyan indigo "
    "ivory charcoal rose peach mustard lilac multicolored multicoloured colorful colourful"
).split()
# Colour words: a caption sentence that still holds one after extraction states an
# attribute outside any recognised phrase ("his shirt is white"), so it is dropped.
COLOR_WORDS = frozenset(
    _BASE_COLORS
    + "greyish grayish bluish reddish greenish brownish yellowish pinkish purplish whitish blackish".split()
    + "blonde blond brunette auburn".split()
)
SHADES = frozenset("dark light pale bright deep navy pastel neon faded".split())
PATTERN_ADJECTIVES = frozenset(
    "striped stripped stripe checked checkered chequered plaid dotted polka floral printed patterned camouflage camo "
    "solid plain graphic lettered spotted flowered flowery tie-dye".split()
)
# Cut, fabric, length and style words that belong to the garment phrase.
STYLE_WORDS = frozenset(
    "long short long-sleeved short-sleeved long-sleeve short-sleeve sleeveless sleeved sleeve tight loose baggy skinny "
    "ripped torn knee-length ankle-length hooded zip-up zipped button-up button-down thick thin casual formal winter "
    "summer sports sport athletic running high-top low-top heeled high-heeled flat mini midi maxi cropped oversized "
    "matching colored coloured denim leather cotton wool woolen woollen knit knitted fur furry silk jean corduroy "
    "puffy puffer padded down velvet suede canvas lace woven straw rubber plastic paper shopping school book messenger "
    "tote gym duffel duffle cargo sweat track capri baseball wide-brimmed brimmed peaked fitted slim army military "
    "trench bomber biker varsity business office chino chinos pleated flared straight-leg high-waisted low-cut "
    "curly wavy straight shoulder-length medium-length medium messy neat shaggy spiky braided shaved bald fluffy "
    "collared v-neck round-neck turtleneck crew-neck polo work waterproof rain quilted lightweight heavy big large "
    "small little mid-length full-length calf-length three-quarter 3/4 tank sleeves".split()
)
# Connectors allowed between two colour words of one phrase ("black and white").
COLOR_LINKS = frozenset({"and", "or", ",", "/"})

_TOPS = (
    "shirt",
    "t-shirt",
    "tshirt",
    "t shirt",
    "tee",
    "tee shirt",
    "top",
    "tank top",
    "blouse",
    "jacket",
    "coat",
    "overcoat",
    "raincoat",
    "sweater",
    "hoodie",
    "hooded sweatshirt",
    "sweatshirt",
    "jumper",
    "cardigan",
    "vest",
    "polo",
    "polo shirt",
    "jersey",
    "blazer",
    "dress",
    "suit",
    "uniform",
    "windbreaker",
    "parka",
    "tunic",
    "pullover",
    "down jacket",
    "camisole",
    "gown",
    "shirt dress",
    "tops",
    "shirts",
    "jackets",
    "dress shirt",
)
_BOTTOMS = (
    "pants",
    "jeans",
    "trousers",
    "shorts",
    "skirt",
    "leggings",
    "tights",
    "capris",
    "slacks",
    "sweatpants",
    "joggers",
    "bottom",
    "bottoms",
    "miniskirt",
    "capri pants",
    "dress pants",
    "overalls",
    "culottes",
)
_FOOTWEAR = (
    "shoes",
    "shoe",
    "sneakers",
    "sneaker",
    "trainers",
    "boots",
    "boot",
    "sandals",
    "sandal",
    "heels",
    "high heels",
    "slippers",
    "loafers",
    "flats",
    "flip-flops",
    "flip flops",
    "footwear",
    "dress shoes",
    "running shoes",
    "tennis shoes",
    "canvas shoes",
    "leather shoes",
    "ankle boots",
)
_HEADWEAR = ("hat", "cap", "beanie", "helmet", "headband", "beret", "baseball cap", "bonnet", "headscarf")
_BAGS = (
    "backpack",
    "back pack",
    "bag",
    "handbag",
    "hand bag",
    "purse",
    "shoulder bag",
    "satchel",
    "tote",
    "messenger bag",
    "suitcase",
    "luggage",
    "briefcase",
    "schoolbag",
    "knapsack",
    "bags",
    "bookbag",
    "crossbody bag",
    "clutch",
    "pouch",
    "wallet",
)
_GLASSES = ("glasses", "sunglasses", "eyeglasses", "spectacles", "sun glasses", "goggles")
_ACCESSORIES = (
    "watch",
    "scarf",
    "umbrella",
    "belt",
    "necklace",
    "bracelet",
    "earrings",
    "mask",
    "face mask",
    "gloves",
    "tie",
    "bottle",
    "water bottle",
    "socks",
    "stockings",
    "phone",
    "cell phone",
    "mobile phone",
    "cellphone",
    "headphones",
    "earphones",
    "cup",
    "box",
    "book",
    "books",
    "folder",
    "camera",
    "badge",
    "lanyard",
)
_PATTERN_NOUNS = (
    "stripes",
    "stripe",
    "dots",
    "polka dots",
    "checks",
    "plaid",
    "print",
    "prints",
    "pattern",
    "patterns",
    "logo",
    "logos",
    "letters",
    "lettering",
    "writing",
    "words",
    "graphic",
    "graphics",
    "design",
    "designs",
    "flowers",
    "floral pattern",
    "numbers",
)
_HAIR_HEADS = ("hair", "ponytail", "pony tail", "bun", "braid", "braids", "pigtails", "hairstyle", "haircut")
_FACIAL_HAIR = ("beard", "mustache", "moustache", "goatee", "stubble", "beards")

CATEGORY_PLACEHOLDER = {
    "top": "[colored top]",
    "bottom": "[colored bottom]",
    "footwear": "[colored footwear]",
    "headwear": "[colored headwear]",
    "bag": "[colored bag]",
    "glasses": "[glasses]",
    "accessory": "[accessory]",
    "pattern": "[color pattern]",
    "hair": "[hair]",
    "facial hair": "[facial hair]",
}


def _head_table() -> dict[tuple[str, ...], str]:
    """Garment (and hair, pattern, ...) head nouns as token tuples -> category."""
    table: dict[tuple[str, ...], str] = {}
    groups = (
        ("top", _TOPS),
        ("bottom", _BOTTOMS),
        ("footwear", _FOOTWEAR),
        ("headwear", _HEADWEAR),
        ("bag", _BAGS),
        ("glasses", _GLASSES),
        ("accessory", _ACCESSORIES),
        ("pattern", _PATTERN_NOUNS),
        ("hair", _HAIR_HEADS),
        ("facial hair", _FACIAL_HAIR),
    )
    for category, phrases in groups:
        for phrase in phrases:
            table[tuple(phrase.split())] = category
    return table


HEADS = _head_table()
MAX_HEAD = max(len(k) for k in HEADS)
GENDER_NOUNS = frozenset("man woman lady gentleman guy boy girl male female gent".split())
NEUTRAL_NOUNS = frozenset(
    "person pedestrian adult student worker individual figure human child kid teenager teen".split()
)
AGE_WORDS = frozenset("young old elderly middle-aged older younger teenage senior aged youthful".split())
OBJECT_CONTEXT = frozenset(
    "and with in on at to from by while as is was who that which a an the there when near behind beside "
    ". , ; ! ? :".split()
) | {"carrying", "holding", "walking", "wearing", "standing", "looks", "appears", "too", "also"}

# -------------------------------------------------------------- phrase patterns


def _pattern(text: str) -> tuple[tuple[frozenset[str], bool], ...]:
    """Compile ``"walking ?forward|ahead"``: words split by ``|`` are alternatives, ``?`` makes one optional."""
    out = []
    for part in text.split():
        optional = part.startswith("?")
        out.append((frozenset(part.lstrip("?").split("|")), optional))
    return tuple(out)


_POSSESSIVE = "a|the|his|her|one|both"
_PHONE = f"{_POSSESSIVE} ?cell|mobile|smart phone|cellphone|smartphone"
ACTIONS = tuple(
    _pattern(p)
    for p in (
        "walking|strolling|moving ?forward|ahead|away|along|forwards|quickly|slowly",
        "standing|waiting ?still|straight|upright",
        "standing with ?his|her|both|the hands|arms on ?the|his|her hips",
        "with ?his|her|both|the hands|arms on ?the|his|her hips",
        f"talking|speaking|chatting on {_PHONE}",
        f"looking at|on {_PHONE}",
        f"holding|carrying {_PHONE} to ?the|his|her ear",
        f"using|checking|playing ?with {_PHONE}",
        "waving ?one|a|his|her|the|both ?hand|hands|arm|arms",
        "raising ?one|a|his|her|the|both hand|hands|arm|arms",
        "holding ?one|his|her|the|both arms|arm out",
        "stretching|spreading|holding ?out ?the|his|her|both arms ?out|wide",
        "riding a|the|his|her bike|bicycle|scooter|motorcycle|motorbike|skateboard",
        "pushing|pulling a|the|his|her stroller|pram|cart|trolley|bike|bicycle",
        "running|jogging|sitting|crouching|squatting|kneeling|smiling|talking|posing",
        "crossing the|a street|road|crosswalk",
        "looking down|up|ahead|forward|back|around",
        "on the|a|his|her phone",
    )
)
PLACE_PATTERN = _pattern(
    "down|on|along|across|through|in|into|toward|towards|near|by|at|outside|inside|past|from "
    "the|a street|road|sidewalk|crosswalk|pavement|square|corridor|hallway|path|lane|campus|park|station|mall|"
    "building|store|shop|stairs|steps|plaza|road"
)
HAIR_TAIL = _pattern(
    "?which ?is|are|was ?tied|pulled|put|done|styled|worn|pinned ?up|back in|into a|two "
    "ponytail|bun|braid|braids|pigtails|knot"
)


def match_pattern(tokens: Sequence[str], i: int, pattern: tuple[tuple[frozenset[str], bool], ...]) -> int | None:
    """End index of ``pattern`` matched at ``tokens[i]`` (longest, optional parts skipped), or None."""
    if not pattern:
        return i
    (words, optional), rest = pattern[0], pattern[1:]
    best = None
    if i < len(tokens) and tokens[i] in words:
        best = match_pattern(tokens, i + 1, rest)
    if optional:
        skipped = match_pattern(tokens, i, rest)
        if skipped is not None and (best is None or skipped > best):
            best = skipped
    return best


def match_any_pattern(
    tokens: Sequence[str], i: int, patterns: Iterable[tuple[tuple[frozenset[str], bool], ...]]
) -> int | None:
    """The longest match of any pattern at ``i``, or None."""
    ends = [e for e in (match_pattern(tokens, i, p) for p in patterns) if e is not None and e > i]
    return max(ends) if ends else None
