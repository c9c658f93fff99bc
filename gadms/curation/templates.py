"""Caption templates (SPEC 3.1-3.2): extract from captions, cluster, store.

A template is a person description whose attribute words are replaced by
generic placeholders (:data:`PLACEHOLDERS`), e.g. "the man is wearing a black
jacket and blue jeans." -> "The [man] is wearing a [colored top] and
[colored bottom]." Two extractors: ``rule`` (offline; a vocabulary of
real-world person-description words) and ``llm`` (an instruction LLM behind an
OpenAI-compatible endpoint, its answers validated). Templates are embedded with
the project's CLIP text tower and k-means clustered; per cluster the template
nearest the centroid plus a few random members are kept (optionally the LLM
writes new ones from each cluster). The result is a canonical JSON file: the
same captions, parameters and seed give the same bytes.

The built-in ``default_templates.json`` is regenerated with::

    python -m gadms synth benchmark --out /tmp/gadms-templates --identities 150 --seed 0 --quiet
    python -m gadms.curation.templates --source /tmp/gadms-templates --with-examples \\
        --clusters 40 --random-members 1 --seed 0 --out gadms/curation/default_templates.json
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import re
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable, Optional, Sequence

import numpy as np

from gadms.config import TemplatesConfig
from gadms.curation.kmeans import kmeans_labels, quantise, squared_distances
from gadms.curation.records import Template
from gadms.data.problems import DataError

if TYPE_CHECKING:  # chat pulls in httpx; only the llm paths need it at run time
    from gadms.curation.chat import ChatClient

logger = logging.getLogger(__name__)

FORMAT = "gadms-templates/1"
DEFAULT_TEMPLATES_FILE = "default_templates.json"
EMBED_GRID = float(1 << 16)  # template embeddings are rounded to multiples of 1/EMBED_GRID

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
_PLACEHOLDER = re.compile(r"\[[^\[\]]*\]")

# ---------------------------------------------------------------- vocabulary

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
_SHADES = frozenset("dark light pale bright deep navy pastel neon faded".split())
_PATTERN_ADJECTIVES = frozenset(
    "striped stripped stripe checked checkered chequered plaid dotted polka floral printed patterned camouflage camo "
    "solid plain graphic lettered spotted flowered flowery tie-dye".split()
)
# Cut, fabric, length and style words that belong to the garment phrase.
_STYLE_WORDS = frozenset(
    "long short long-sleeved short-sleeved long-sleeve short-sleeve sleeveless sleeved sleeve tight loose baggy skinny "
    "ripped torn knee-length ankle-length hooded zip-up zipped button-up button-down thick thin casual formal winter "
    "summer sports sport athletic running high-top low-top heeled high-heeled flat mini midi maxi cropped oversized "
    "matching colored coloured denim leather cotton wool woolen woollen knit knitted fur furry silk jean corduroy "
    "puffy puffer padded down velvet suede canvas lace woven straw rubber plastic paper shopping school book messenger "
    "tote gym duffel duffle cargo sweat track capri baseball wide-brimmed brimmed peaked fitted slim army military "
    "trench bomber biker varsity business office chino chinos pleated flared straight-leg high-waisted low-cut "
    "curly wavy straight shoulder-length medium-length medium messy neat shaggy spiky braided shaved bald fluffy "
    "collared v-neck round-neck turtleneck crew-neck polo work waterproof rain quilted lightweight heavy big large "
    "small little mid-length full-length calf-length three-quarter 3/4 tank sleeves"
    .split()
)
# Connectors allowed between two colour words of one phrase ("black and white").
_COLOR_LINKS = frozenset({"and", "or", ",", "/"})

_TOPS = (
    "shirt", "t-shirt", "tshirt", "t shirt", "tee", "tee shirt", "top", "tank top", "blouse", "jacket", "coat",
    "overcoat", "raincoat", "sweater", "hoodie", "hooded sweatshirt", "sweatshirt", "jumper", "cardigan", "vest",
    "polo", "polo shirt", "jersey", "blazer", "dress", "suit", "uniform", "windbreaker", "parka", "tunic", "pullover",
    "down jacket", "camisole", "gown", "shirt dress", "tops", "shirts", "jackets",
    "dress shirt",
)
_BOTTOMS = (
    "pants", "jeans", "trousers", "shorts", "skirt", "leggings", "tights", "capris", "slacks", "sweatpants",
    "joggers", "bottom", "bottoms", "miniskirt", "capri pants", "dress pants", "overalls", "culottes",
)
_FOOTWEAR = (
    "shoes", "shoe", "sneakers", "sneaker", "trainers", "boots", "boot", "sandals", "sandal", "heels",
    "high heels", "slippers", "loafers", "flats", "flip-flops", "flip flops", "footwear", "dress shoes",
    "running shoes", "tennis shoes", "canvas shoes", "leather shoes", "ankle boots",
)
_HEADWEAR = ("hat", "cap", "beanie", "helmet", "headband", "beret", "baseball cap", "bonnet", "headscarf")
_BAGS = (
    "backpack", "back pack", "bag", "handbag", "hand bag", "purse", "shoulder bag", "satchel", "tote",
    "messenger bag", "suitcase", "luggage", "briefcase", "schoolbag", "knapsack", "bags", "bookbag", "crossbody bag",
    "clutch", "pouch", "wallet",
)
_GLASSES = ("glasses", "sunglasses", "eyeglasses", "spectacles", "sun glasses", "goggles")
_ACCESSORIES = (
    "watch", "scarf", "umbrella", "belt", "necklace", "bracelet", "earrings", "mask", "face mask", "gloves",
    "tie", "bottle", "water bottle", "socks", "stockings", "phone", "cell phone", "mobile phone", "cellphone",
    "headphones", "earphones", "cup", "box", "book", "books", "folder", "camera", "badge", "lanyard",
)
_PATTERN_NOUNS = (
    "stripes", "stripe", "dots", "polka dots", "checks", "plaid", "print", "prints", "pattern", "patterns", "logo",
    "logos", "letters", "lettering", "writing", "words", "graphic", "graphics", "design", "designs", "flowers",
    "floral pattern", "numbers",
)
_HAIR_HEADS = ("hair", "ponytail", "pony tail", "bun", "braid", "braids", "pigtails", "hairstyle", "haircut")
_FACIAL_HAIR = ("beard", "mustache", "moustache", "goatee", "stubble", "beards")

_CATEGORY_PLACEHOLDER = {
    "top": "[colored top]", "bottom": "[colored bottom]", "footwear": "[colored footwear]",
    "headwear": "[colored headwear]", "bag": "[colored bag]", "glasses": "[glasses]",
    "accessory": "[accessory]", "pattern": "[color pattern]", "hair": "[hair]", "facial hair": "[facial hair]",
}  # fmt: skip


def _head_table() -> dict[tuple[str, ...], str]:
    """Garment (and hair, pattern, ...) head nouns as token tuples -> category."""
    table: dict[tuple[str, ...], str] = {}
    groups = (
        ("top", _TOPS), ("bottom", _BOTTOMS), ("footwear", _FOOTWEAR), ("headwear", _HEADWEAR), ("bag", _BAGS),
        ("glasses", _GLASSES), ("accessory", _ACCESSORIES), ("pattern", _PATTERN_NOUNS), ("hair", _HAIR_HEADS),
        ("facial hair", _FACIAL_HAIR),
    )  # fmt: skip
    for category, phrases in groups:
        for phrase in phrases:
            table[tuple(phrase.split())] = category
    return table


_HEADS = _head_table()
_MAX_HEAD = max(len(k) for k in _HEADS)
_GENDER_NOUNS = frozenset("man woman lady gentleman guy boy girl male female gent".split())
_NEUTRAL_NOUNS = frozenset("person pedestrian adult student worker individual figure human child kid teenager teen".split())
_AGE_WORDS = frozenset("young old elderly middle-aged older younger teenage senior aged youthful".split())
_OBJECT_CONTEXT = frozenset(
    "and with in on at to from by while as is was who that which a an the there when near behind beside . , ; ! ? :"
    .split()
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
_ACTIONS = tuple(
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
_PLACE = _pattern(
    "down|on|along|across|through|in|into|toward|towards|near|by|at|outside|inside|past|from "
    "the|a street|road|sidewalk|crosswalk|pavement|square|corridor|hallway|path|lane|campus|park|station|mall|"
    "building|store|shop|stairs|steps|plaza|road"
)
_HAIR_TAIL = _pattern(
    "?which ?is|are|was ?tied|pulled|put|done|styled|worn|pinned ?up|back in|into a|two ponytail|bun|braid|braids|pigtails|knot"
)


def _match(tokens: Sequence[str], i: int, pattern: tuple[tuple[frozenset[str], bool], ...]) -> int | None:
    """End index of ``pattern`` matched at ``tokens[i]`` (longest, optional parts skipped), or None."""
    if not pattern:
        return i
    (words, optional), rest = pattern[0], pattern[1:]
    best = None
    if i < len(tokens) and tokens[i] in words:
        best = _match(tokens, i + 1, rest)
    if optional:
        skipped = _match(tokens, i, rest)
        if skipped is not None and (best is None or skipped > best):
            best = skipped
    return best


def _match_any(tokens: Sequence[str], i: int, patterns: Iterable[tuple[tuple[frozenset[str], bool], ...]]) -> int | None:
    """The longest match of any pattern at ``i``, or None."""
    ends = [e for e in (_match(tokens, i, p) for p in patterns) if e is not None and e > i]
    return max(ends) if ends else None


# ------------------------------------------------------------ rule extractor

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
    if token in COLOR_WORDS or token in _SHADES or token in _PATTERN_ADJECTIVES or token in _STYLE_WORDS:
        return True
    parts = re.split(r"[-/]", token)
    if len(parts) > 1:
        extra = {"and", "colored", "coloured", "color", "colour", "ish", "rimmed", "framed", "length", "neck"}
        return all(_is_modifier(p) or p in extra for p in parts if p)
    return token.endswith(("-colored", "-coloured"))


def _is_color(token: str) -> bool:
    return token in COLOR_WORDS or token in _SHADES or any(p in COLOR_WORDS for p in re.split(r"[-/]", token))


def _modifier_run(tokens: Sequence[str], i: int) -> int:
    """End of the run of garment modifiers starting at ``i`` (colour lists joined by and/or/comma included)."""
    j = i
    while j < len(tokens):
        if _is_modifier(tokens[j]):
            j += 1
        elif tokens[j] in _COLOR_LINKS and j > i and _is_color(tokens[j - 1]) and j + 1 < len(tokens) and _is_color(tokens[j + 1]):
            j += 1
        else:
            break
    return j


def _head_at(tokens: Sequence[str], j: int, modifiers: Sequence[str]) -> tuple[str, int] | None:
    """``(category, end)`` of a head noun starting at ``j``, or None."""
    for size in range(_MAX_HEAD, 0, -1):
        key = tuple(tokens[j : j + size])
        if len(key) == size and key in _HEADS:
            end = j + size
            if key in {("top",), ("bottom",)} and end < len(tokens) and tokens[end] == "of":
                return None  # "on top of", "at the bottom of"
            return _HEADS[key], end
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
        end = _match(tokens, end, _HAIR_TAIL) or end
    return _CATEGORY_PLACEHOLDER[category], end


def _action_at(tokens: Sequence[str], i: int) -> int | None:
    """End of an action phrase at ``i`` (with a trailing place phrase swallowed), or None."""
    end = _match_any(tokens, i, _ACTIONS)
    if end is None:
        return None
    return _match(tokens, end, _PLACE) or end


def _her(tokens: Sequence[str], i: int) -> str:
    """``[him]`` or ``[his]`` for the ambiguous "her" at ``i``, by the word after it."""
    following = tokens[i + 1] if i + 1 < len(tokens) else "."
    return "[him]" if following in _OBJECT_CONTEXT else "[his]"


def _person_word_at(tokens: Sequence[str], i: int) -> tuple[list[str], int] | None:
    """Gender nouns, age words and pronouns at ``i``: ``(replacement, end)``, or None."""
    token = tokens[i]
    if token in {"male", "female"} and i + 1 < len(tokens) and tokens[i + 1] in _NEUTRAL_NOUNS:
        return ["[man]"], i + 2
    simple = {"he": "[he]", "she": "[he]", "him": "[him]", "his": "[his]", "himself": "[himself]", "herself": "[himself]"}
    if token in _GENDER_NOUNS:
        return ["[man]"], i + 1
    if token in simple:
        return [simple[token]], i + 1
    if token == "her":
        return [_her(tokens, i)], i + 1
    if token in _AGE_WORDS:
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
    if any(_is_color(t) and t not in _SHADES for t in replaced if not t.startswith("[")):
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


# ----------------------------------------------------------- validation


def template_placeholders(text: str) -> list[str]:
    """The placeholders of a template.

    Args:
        text: a template.

    Returns:
        Every bracketed span, in order, known to :data:`PLACEHOLDERS` or not.
    """
    return _PLACEHOLDER.findall(text)


def template_problem(text: str) -> str | None:
    """What makes ``text`` unusable as a template, or None when it is fine.

    Args:
        text: a candidate template.

    Returns:
        A short reason: empty, unbalanced brackets, an unknown placeholder, or
        no placeholder that describes the person.
    """
    if not text.strip():
        return "empty template"
    found = template_placeholders(text)
    if _PLACEHOLDER.sub("", text).count("[") or _PLACEHOLDER.sub("", text).count("]"):
        return "unbalanced brackets"
    unknown = [p for p in found if p not in PLACEHOLDERS]
    if unknown:
        return f"unknown placeholder {unknown[0]}"
    if not CONTENT_PLACEHOLDERS & set(found):
        return "no placeholder describing the person"
    return None


def _concrete_words(text: str) -> list[str]:
    """Colour and garment words outside placeholders (a template must have none)."""
    tokens = [t for t in tokenize(_PLACEHOLDER.sub(" ", text)) if not t.startswith("[")]
    heads = {k[0] for k in _HEADS if len(k) == 1 and _HEADS[k] != "pattern"}
    return [t for t in tokens if t in COLOR_WORDS or t in heads]


# --------------------------------------------------------------- LLM extractor

_EXTRACT_INSTRUCTION = """You turn descriptions of a pedestrian into reusable caption templates.
Replace every word that describes this particular person with the generic placeholder that stands for it: gender, \
age, hair and other head features, tops, bottoms, footwear, headwear, bags and other accessories, colours, patterns \
and actions. A colour and the thing it describes become one placeholder ("a dark blue denim jacket" -> \
"a [colored top]"). Use only these placeholders:
{placeholders}
Keep every other word, the sentence structure and the punctuation. Add nothing. Drop sentences about the \
background or the photo. Answer with the template only, on one line.

Example: "A woman in a red coat and black boots is walking. She carries a white bag."
Answer: A [man] in a [colored top] and [colored footwear] is [action]. [he] carries a [colored bag]."""

_DIVERSIFY_INSTRUCTION = """You write caption templates for describing pedestrians.
A template uses placeholders instead of concrete attributes; the placeholders are:
{placeholders}
Write {count} new templates in the style of the examples below, each on its own line: vary the sentence \
structure and the order in which the attributes are described, use only the placeholders above, never write a \
concrete colour, garment or gender word, and mention nothing about the background. Answer with the templates only.

Examples:
{examples}"""

# Words a rephrasing LLM may add without adding content (articles, linking verbs, prepositions).
_FUNCTION_WORDS = frozenset(
    "a an the and or with in on of is are was were has have had wearing wears wear who which that this there "
    "while also to at by for from as his her their its".split()
)
MAX_NEW_WORDS = 2
LLM_CONCURRENCY = 8


def _placeholder_list() -> str:
    return "\n".join(f"{p}: {meaning}" for p, meaning in PLACEHOLDERS.items())


def extraction_messages(sentence: str) -> list[dict[str, str]]:
    """The chat messages asking the LLM to turn ``sentence`` into a template.

    Args:
        sentence: one caption.

    Returns:
        A system message with the instruction and a user message with the caption.
    """
    system = _EXTRACT_INSTRUCTION.format(placeholders=_placeholder_list())
    return [{"role": "system", "content": system}, {"role": "user", "content": sentence.strip()}]


def _strip_answer(answer: str) -> str:
    """The first non-empty line of an answer, without a label, quotes or bullet."""
    lines = [line.strip() for line in answer.strip().splitlines() if line.strip()]
    if not lines:
        return ""
    line = re.sub(r"^(template|answer)\s*:\s*", "", lines[0], flags=re.IGNORECASE)
    line = re.sub(r"^(\d+[.)]|[-*\u2022])\s+", "", line)
    return line.strip().strip("\"'\u201c\u201d").strip()


def validate_llm_template(answer: str, sentence: str) -> str | None:
    """The LLM's answer as a template if it is one, else None.

    Args:
        answer: the raw model answer.
        sentence: the caption it was made from.

    Returns:
        The cleaned template when it uses only known placeholders, has at least
        one describing the person, keeps no colour or garment word, and adds at
        most :data:`MAX_NEW_WORDS` content words not in ``sentence``; else None.
    """
    text = " ".join(_strip_answer(answer).split())
    text = _PLACEHOLDER.sub(lambda m: m.group(0).lower(), text)
    if template_problem(text) is not None or _concrete_words(text):
        return None
    source = set(tokenize(sentence))
    words = [t for t in tokenize(_PLACEHOLDER.sub(" ", text)) if t[0].isalnum()]
    new = [w for w in words if w not in source and w not in _FUNCTION_WORDS]
    if len(new) > MAX_NEW_WORDS or len(words) > len(source) + 5:
        return None
    return text


def extract_templates_llm(sentences: Sequence[str], client: "ChatClient", seed: int = 0) -> list[str | None]:
    """Turn captions into templates with an instruction LLM (SPEC 3.1).

    Args:
        sentences: the captions.
        client: the chat client of the LLM endpoint.
        seed: sampling seed sent with every request (answers are greedy anyway).

    Returns:
        One entry per caption: the validated template, or None when the call
        failed for good or the answer was not a valid template.
    """
    from gadms.curation.chat import ChatCall, ChatError

    calls = [ChatCall(extraction_messages(s), max_tokens=192, temperature=0.0, seed=seed) for s in sentences]
    answers = client.complete_many(calls, LLM_CONCURRENCY) if calls else []
    failed = [a for a in answers if isinstance(a, ChatError)]
    if failed:
        logger.warning("template extraction: %d of %d LLM calls failed; first: %s", len(failed), len(calls), failed[0])
    return [None if isinstance(a, ChatError) else validate_llm_template(a, s) for a, s in zip(answers, sentences)]


def diversification_messages(examples: Sequence[str], count: int) -> list[dict[str, str]]:
    """The chat messages asking for ``count`` new templates in the style of ``examples``.

    Args:
        examples: one cluster's templates.
        count: how many new templates to ask for.

    Returns:
        A single user message.
    """
    listed = "\n".join(examples)
    text = _DIVERSIFY_INSTRUCTION.format(placeholders=_placeholder_list(), count=count, examples=listed)
    return [{"role": "user", "content": text}]


def parse_diversified(answer: str) -> list[str]:
    """The valid templates of a diversification answer, in order, each once.

    Args:
        answer: the raw model answer, one template per line.

    Returns:
        Templates with only known placeholders, one describing the person, and
        no concrete colour or garment word.
    """
    out: list[str] = []
    for line in answer.splitlines():
        text = " ".join(_strip_answer(line).split())
        text = _PLACEHOLDER.sub(lambda m: m.group(0).lower(), text)
        if text and text not in out and template_problem(text) is None and not _concrete_words(text):
            out.append(text)
    return out


# ---------------------------------------------------------------- clustering


@dataclass(frozen=True)
class TemplateCluster:
    """One k-means cluster of templates.

    Attributes:
        index: position of the cluster in the output (by first member in input order).
        representative: the member closest (cosine) to the centroid.
        members: the random other members kept, in input order.
        size: number of distinct templates in the cluster.
    """

    index: int
    representative: str
    members: tuple[str, ...]
    size: int


def unique_in_order(texts: Iterable[str]) -> list[str]:
    """Drop repeats.

    Args:
        texts: any strings.

    Returns:
        The distinct strings, first occurrences in order.
    """
    return list(dict.fromkeys(texts))


def _normalise(rows: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(rows, axis=1, keepdims=True)
    return rows / np.maximum(norms, 1e-12)


def cluster_templates(templates: list[str], embeddings: np.ndarray, k: int, random_members: int, seed: int) -> list[TemplateCluster]:
    """K-means the distinct templates; per cluster keep the centroid's nearest plus random members (SPEC 3.2).

    Args:
        templates: templates, repeats allowed (removed first, first occurrence kept).
        embeddings: one row per entry of ``templates``.
        k: number of clusters (at most the number of distinct templates).
        random_members: random other members kept per cluster (fewer if it is small).
        seed: seeds k-means and the random choice.

    Returns:
        The non-empty clusters, ordered by their earliest member in ``templates``.
    """
    if len(templates) != len(embeddings):
        raise ValueError(f"cluster_templates: {len(templates)} templates but {len(embeddings)} embedding rows")
    if k < 1 or random_members < 0:
        raise ValueError(f"cluster_templates: k must be >= 1 and random_members >= 0 (got {k}, {random_members})")
    first = {text: row for row, text in reversed(list(enumerate(templates)))}
    unique = unique_in_order(templates)
    if not unique:
        return []
    vectors = _normalise(np.asarray(embeddings, dtype=np.float64)[[first[t] for t in unique]])
    labels = kmeans_labels(vectors, min(k, len(unique)), seed)
    rng = np.random.default_rng(seed)
    order = sorted(set(labels.tolist()), key=lambda label: int(np.flatnonzero(labels == label)[0]))
    return [_cluster(index, np.flatnonzero(labels == label), unique, vectors, random_members, rng) for index, label in enumerate(order)]


def _cluster(index: int, rows: np.ndarray, unique: list[str], vectors: np.ndarray, random_members: int, rng: np.random.Generator) -> TemplateCluster:
    """Build one cluster from its member rows (the representative: nearest the centroid, exact on any CPU)."""
    members = quantise(vectors[rows])
    sums = members.sum(axis=0, keepdims=True)
    distances = squared_distances(members, sums, np.array([len(rows)], dtype=np.int64))[:, 0]
    best = int(rows[int(np.argmin(distances))])
    others = [int(r) for r in rows if r != best]
    picked = sorted(rng.choice(others, size=min(random_members, len(others)), replace=False).tolist()) if others else []
    return TemplateCluster(index, unique[best], tuple(unique[r] for r in picked), len(rows))


def _text_embedder(cfg: TemplatesConfig, seed: int) -> Any:
    """The CLIP model whose text tower embeds templates (seeded random init unless weights are given)."""
    import torch

    from gadms.model.backbone import build_clip, load_pretrained

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = build_clip(cfg.embedder)
    if cfg.embedder_pretrained is not None:
        load_pretrained(model, cfg.embedder_pretrained)
    return model.eval()


def embed_templates(texts: Sequence[str], cfg: TemplatesConfig, seed: int, batch_size: int = 64) -> np.ndarray:
    """L2-normalised CLIP text embeddings of ``texts`` (deterministic for a seed, on any CPU).

    The text tower runs in float64 and the rows are rounded to a ``2**-16`` grid, so
    the last-bit differences between CPUs' float kernels do not reach the result.

    Args:
        texts: templates or captions.
        cfg: ``embedder`` (tiny | ViT-B-16) and ``embedder_pretrained`` (local weights, or None for a seeded random init).
        seed: the random-init seed.
        batch_size: texts encoded at once.

    Returns:
        float32 array ``(len(texts), embed_dim)`` with unit rows.
    """
    import torch

    from gadms.model.backbone import tokenizer

    model = _text_embedder(cfg, seed).double()
    tokenize_batch = tokenizer()
    rows = []
    with torch.inference_mode():
        for start in range(0, len(texts), batch_size):
            tokens = tokenize_batch(list(texts[start : start + batch_size]))
            rows.append(model.encode_text(tokens, normalize=True).numpy())
    if not rows:
        return np.zeros((0, model.text_projection.shape[1]), dtype=np.float32)
    return (np.rint(np.concatenate(rows) * EMBED_GRID) / EMBED_GRID).astype(np.float32)


# ---------------------------------------------------------------- mining


@dataclass(frozen=True)
class MinedTemplate:
    """One template of a :class:`TemplateSet`.

    Attributes:
        id: position in the set, 0..n-1.
        text: the template.
        cluster: index of its cluster.
        representative: whether it is its cluster's centroid-nearest template.
        origin: ``"extracted"`` (from a caption) or ``"diversified"`` (written by the LLM).
    """

    id: int
    text: str
    cluster: int
    representative: bool
    origin: str = "extracted"


@dataclass(frozen=True)
class TemplateSet:
    """Mined templates and how they were made (the content of a templates file).

    Attributes:
        templates: the templates, ids 0..n-1, cluster by cluster.
        extractor: ``rule`` or ``llm``.
        clusters_requested: k asked for.
        clusters: clusters found (k capped by the distinct templates).
        random_members: random members kept per cluster.
        seed: the seed of embedding, k-means and sampling.
        embedder: the CLIP text tower used.
        embedder_pretrained: its weights (None: seeded random init).
        diversified: whether the LLM added templates.
        source: a description of the captions mined.
        sentences: captions read.
        extracted: captions that gave a template.
        unique: distinct templates clustered.
    """

    templates: tuple[MinedTemplate, ...]
    extractor: str
    clusters_requested: int
    clusters: int
    random_members: int
    seed: int
    embedder: str
    embedder_pretrained: Optional[str]
    diversified: bool
    source: str
    sentences: int
    extracted: int
    unique: int

    def as_templates(self) -> list[Template]:
        """The templates as :class:`Template` records (what captioners take)."""
        return [Template(t.id, t.text) for t in self.templates]


def _extract(sentences: list[str], cfg: TemplatesConfig, seed: int, client: "ChatClient | None", progress: bool) -> list[str | None]:
    """Templates of ``sentences`` by the configured extractor."""
    if cfg.extractor == "llm":
        return extract_templates_llm(sentences, _client(cfg, client), seed)
    if progress:
        from tqdm import tqdm

        sentences = tqdm(sentences, desc="templates", unit="caption")  # type: ignore[assignment]
    return [extract_template_rule(s) for s in sentences]


def _client(cfg: TemplatesConfig, client: "ChatClient | None") -> "ChatClient":
    """The given client, or one for ``cfg.llm_url``."""
    if client is not None:
        return client
    from gadms.curation.chat import ChatClient

    return ChatClient(cfg.llm_url, cfg.llm_model, api_key_env=cfg.api_key_env)


def _diversify(clusters: list[TemplateCluster], client: "ChatClient", seed: int, existing: set[str]) -> list[list[str]]:
    """New valid templates per cluster from the LLM, none repeating ``existing`` or each other."""
    from gadms.curation.chat import ChatCall, ChatError

    calls = []
    for cluster in clusters:
        examples = [cluster.representative, *cluster.members]
        calls.append(ChatCall(diversification_messages(examples, len(examples)), max_tokens=96 * len(examples), temperature=0.0, seed=seed))
    answers = client.complete_many(calls, LLM_CONCURRENCY)
    seen = set(existing)
    out = []
    for answer in answers:
        fresh = [] if isinstance(answer, ChatError) else [t for t in parse_diversified(answer) if t not in seen]
        seen.update(fresh)
        out.append(fresh)
    return out


def _entries(clusters: list[TemplateCluster], added: list[list[str]]) -> tuple[MinedTemplate, ...]:
    """Number templates 0..n-1, cluster by cluster: representative, random members, LLM additions."""
    rows: list[tuple[str, int, bool, str]] = []
    for cluster, extra in zip(clusters, added):
        rows.append((cluster.representative, cluster.index, True, "extracted"))
        rows += [(text, cluster.index, False, "extracted") for text in cluster.members]
        rows += [(text, cluster.index, False, "diversified") for text in extra]
    return tuple(MinedTemplate(i, text, cluster, rep, origin) for i, (text, cluster, rep, origin) in enumerate(rows))


def mine_templates(
    sentences: Iterable[str],
    cfg: TemplatesConfig,
    seed: int,
    client: "ChatClient | None" = None,
    progress: bool = False,
    source: str = "captions",
) -> TemplateSet:
    """Extract, embed, cluster and select caption templates (SPEC 3.1-3.2).

    Args:
        sentences: the captions to mine.
        cfg: extractor, k, random members, diversification, embedder.
        seed: seeds the embedder's random init, k-means and member sampling.
        client: the LLM client for ``extractor: llm`` or ``diversify``; made
            from ``cfg.llm_url`` when None and needed.
        progress: show a progress bar while extracting.
        source: a description of the captions, recorded in the file.

    Returns:
        The selected templates with how they were made.

    Raises:
        DataError: no caption gave a template.
    """
    sentences = list(sentences)
    extracted = [t for t in _extract(sentences, cfg, seed, client, progress) if t is not None]
    if not extracted:
        raise DataError(f"{source}: none of {len(sentences)} captions gave a template (extractor {cfg.extractor})")
    unique = unique_in_order(extracted)
    logger.info("templates: %d captions -> %d templates, %d distinct", len(sentences), len(extracted), len(unique))
    clusters = cluster_templates(unique, embed_templates(unique, cfg, seed), cfg.clusters, cfg.random_members, seed)
    added: list[list[str]] = [[] for _ in clusters]
    if cfg.diversify:
        added = _diversify(clusters, _client(cfg, client), seed, set(unique))
    return TemplateSet(
        templates=_entries(clusters, added), extractor=cfg.extractor, clusters_requested=cfg.clusters,
        clusters=len(clusters), random_members=cfg.random_members, seed=seed, embedder=cfg.embedder,
        embedder_pretrained=cfg.embedder_pretrained, diversified=cfg.diversify, source=source,
        sentences=len(sentences), extracted=len(extracted), unique=len(unique),
    )  # fmt: skip


# ------------------------------------------------------------ file format


def template_set_json(template_set: TemplateSet) -> str:
    """The canonical JSON text of a template set (sorted keys, no timestamps, trailing newline).

    Args:
        template_set: the set to serialise.

    Returns:
        The text; equal sets give equal text.
    """
    doc: dict[str, Any] = {
        "format": FORMAT,
        "extractor": template_set.extractor,
        "clusters_requested": template_set.clusters_requested,
        "clusters": template_set.clusters,
        "random_members": template_set.random_members,
        "seed": template_set.seed,
        "embedder": template_set.embedder,
        "embedder_pretrained": template_set.embedder_pretrained,
        "diversified": template_set.diversified,
        "source": template_set.source,
        "sentences": template_set.sentences,
        "extracted": template_set.extracted,
        "unique": template_set.unique,
        "templates": [
            {"id": t.id, "text": t.text, "cluster": t.cluster, "representative": t.representative, "origin": t.origin}
            for t in template_set.templates
        ],
    }
    return json.dumps(doc, sort_keys=True, indent=1, ensure_ascii=False) + "\n"


def write_templates(path: Path | str, template_set: TemplateSet) -> Path:
    """Write a template set as canonical JSON (atomically: a temporary file, then a rename).

    Args:
        path: the file to write; its folder is created.
        template_set: what to write.

    Returns:
        The path written.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial")
    partial.write_text(template_set_json(template_set), encoding="utf-8")
    os.replace(partial, path)
    return path


def _parse_entry(index: int, entry: Any, where: str) -> Template:
    """One ``templates`` entry (an object with ``id`` and ``text``, or a bare string) as a Template."""
    if isinstance(entry, str):
        entry = {"id": index, "text": entry}
    if not isinstance(entry, dict):
        raise DataError(f"{where}: template {index} is a JSON {type(entry).__name__}, expected an object or a string")
    text, ident = entry.get("text"), entry.get("id", index)
    if not isinstance(text, str):
        raise DataError(f"{where}: template {index} has no 'text' string")
    if not isinstance(ident, int) or isinstance(ident, bool):
        raise DataError(f"{where}: template {index} has a non-integer 'id' {ident!r}")
    problem = template_problem(text)
    if problem is not None:
        raise DataError(f"{where}: template {index} ({text[:60]!r}): {problem}")
    return Template(ident, text)


def parse_templates(raw: Any, where: str) -> list[Template]:
    """Templates from a parsed templates document (the mined format, or a plain list of strings).

    Args:
        raw: the parsed JSON.
        where: the file name for error messages.

    Returns:
        The templates in file order.

    Raises:
        DataError: one line naming the file and the first bad entry.
    """
    entries = raw.get("templates") if isinstance(raw, dict) else raw
    if not isinstance(entries, list):
        raise DataError(f"{where}: expected a JSON object with a 'templates' list (or a list of template strings)")
    templates = [_parse_entry(i, e, where) for i, e in enumerate(entries)]
    ids = [t.id for t in templates]
    if len(set(ids)) != len(ids):
        raise DataError(f"{where}: template ids repeat (e.g. {next(i for i in ids if ids.count(i) > 1)})")
    return templates


def load_templates(path: Path | str) -> list[Template]:
    """Read a templates file written by :func:`write_templates` (or a JSON list of strings).

    Args:
        path: the file.

    Returns:
        The templates in file order.

    Raises:
        DataError: one line for a missing, unreadable or malformed file, or a
            template with an unknown placeholder.
    """
    path = Path(path)
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise DataError(f"templates file not found: {path}") from None
    except json.JSONDecodeError as err:
        raise DataError(f"{path}: invalid JSON at line {err.lineno}, column {err.colno}: {err.msg}") from None
    except (UnicodeDecodeError, IsADirectoryError, OSError) as err:
        raise DataError(f"{path}: cannot read templates file ({type(err).__name__})") from None
    return parse_templates(raw, str(path))


def default_templates() -> list[Template]:
    """The built-in templates shipped with the package (``default_templates.json``).

    Returns:
        The templates in file order.
    """
    text = resources.files("gadms.curation").joinpath(DEFAULT_TEMPLATES_FILE).read_text(encoding="utf-8")
    return parse_templates(json.loads(text), f"gadms/curation/{DEFAULT_TEMPLATES_FILE}")


# ----------------------------------------------------------- caption sources


def _benchmark_captions(root: Path) -> list[str]:
    """Train captions of every benchmark found at ``root`` (the folder itself or its benchmark folders)."""
    from gadms.data.benchmarks import FORMATS, load_benchmark

    found = [name for name, fmt in FORMATS.items() if (root / fmt.annotation).is_file() or (root / fmt.directory / fmt.annotation).is_file()]
    if not found:
        names = ", ".join(fmt.annotation for fmt in FORMATS.values())
        raise DataError(f"{root}: a folder but no benchmark annotation file ({names}) in it or its benchmark folders")
    return [c for name in found for c in load_benchmark(name, root, "train", check_images=False).captions]


def _json_captions(path: Path) -> list[str]:
    """A JSON list of caption strings."""
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise DataError(f"{path}: invalid JSON at line {err.lineno}, column {err.colno}: {err.msg}") from None
    if not isinstance(raw, list) or not all(isinstance(c, str) for c in raw):
        raise DataError(f"{path}: expected a JSON list of caption strings")
    return [c.strip() for c in raw if c.strip()]


def captions_from_source(source: Path | str) -> list[str]:
    """Captions to mine templates from.

    Args:
        source: a text file (one caption per line), a ``.json`` list of
            strings, or a benchmark root (CUHK-PEDES / ICFG-PEDES / RSTPReid
            layout; its train captions).

    Returns:
        The non-empty captions, in file order.

    Raises:
        DataError: one line when the source is missing, unreadable, of another
            shape, or holds no caption.
    """
    source = Path(source)
    if source.is_dir():
        captions = _benchmark_captions(source)
    elif not source.exists():
        raise DataError(f"caption source not found: {source}")
    elif source.suffix.lower() == ".json":
        captions = _json_captions(source)
    else:
        try:
            captions = [line.strip() for line in source.read_text(encoding="utf-8").splitlines() if line.strip()]
        except UnicodeDecodeError:
            raise DataError(f"{source}: not UTF-8 text (expected one caption per line)") from None
    if not captions:
        raise DataError(f"{source}: no captions found")
    return captions


# -------------------------------------------------------------- style examples

# CUHK-PEDES-style descriptions written for this project (lower-case, loose
# punctuation), mixed into the captions the built-in templates are mined from.
STYLE_EXAMPLES: tuple[str, ...] = (
    "the man is wearing a black jacket over a white t-shirt, blue jeans and white sneakers. he carries a black backpack on his back.",
    "a young woman with long black hair, wearing a white blouse and a dark blue skirt. she is carrying a red handbag.",
    "the lady has her hair in a ponytail and wears a pink coat, black leggings and brown boots.",
    "a man in a grey hoodie and black shorts is walking down the street.",
    "this guy has short hair and glasses. he wears a navy blue polo shirt, khaki pants and black shoes",
    "woman wearing a red and white striped t-shirt, denim shorts and white sandals, with a brown shoulder bag",
    "the pedestrian is a female with a black cap, a grey jacket and black trousers; she is talking on her phone.",
    "a male pedestrian in a black down jacket with a white logo on the chest, gray sweatpants and black sneakers.",
    "he is wearing a white shirt. his shirt is tucked into his black trousers.",
    "a woman walking with a white plastic bag in her right hand. she has a green sweater and light blue jeans on",
    "an older man with gray hair wearing a light brown coat and dark trousers , he is holding an umbrella",
    "the girl wears a yellow dress with black dots and red shoes. she has a small black purse over her shoulder.",
    "a man with a bald head wearing a green army jacket , black pants and brown leather boots .",
    "this woman has shoulder-length brown hair. she is dressed in a beige trench coat, black tights and black heels.",
    "a person in a dark blue jacket and black pants riding a bicycle. he wears a white helmet.",
    "the young man wears a red baseball cap, a white short-sleeved shirt and grey shorts. he has a blue backpack.",
    "a woman with her hair tied back in a bun. she wears a black leather jacket, a white top and blue ripped jeans.",
    "man with black hair wearing a checked shirt with the sleeves rolled up, beige trousers and brown shoes",
    "she is wearing sunglasses, a purple sweater, a black skirt and black boots, and carrying a white tote bag.",
    "the man has short black hair and wears a dark grey suit with a white shirt and black shoes. he carries a black briefcase.",
    "a woman in a long black coat, black pants and white sneakers is standing and looking at her phone.",
    "the boy is wearing an orange jersey with yellow stripes and black shorts. he has white sneakers on.",
    "a middle-aged woman in a floral blouse and dark trousers, carrying a brown handbag in her left hand.",
    "this man is wearing a blue t-shirt with white letters on the front, black jeans and grey sneakers.",
    "a lady wearing a white hat, a light pink cardigan over a white dress, and beige flat shoes.",
    "the pedestrian wears a black hoodie, black sweatpants and red sneakers; his hood is down and he has a black bag.",
    "a tall man in a navy blue windbreaker and blue jeans, with a black messenger bag across his body.",
    "the woman has long blonde hair and is wearing a red coat, blue jeans and black ankle boots.",
    "a man wearing black glasses, a white shirt, dark pants and black leather shoes walks with a phone in his hand.",
    "she has long curly hair and wears a green parka, grey leggings and white running shoes. she carries a pink backpack.",
)


def main(argv: list[str] | None = None) -> None:
    """Mine templates from a caption source into a templates file (regenerates the built-in set)."""
    parser = argparse.ArgumentParser(description="Mine caption templates into a canonical JSON file.")
    parser.add_argument("--source", type=Path, required=True, help="text file, JSON list, or benchmark root")
    parser.add_argument("--out", type=Path, required=True, help="templates file to write")
    parser.add_argument("--with-examples", action="store_true", help="also mine the built-in CUHK-style examples")
    parser.add_argument("--clusters", type=int, default=40)
    parser.add_argument("--random-members", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    sentences = captions_from_source(args.source)
    description = f"{args.source.name} ({len(sentences)} captions)"
    if args.with_examples:
        sentences += list(STYLE_EXAMPLES)
        description += f" + {len(STYLE_EXAMPLES)} style examples"
    cfg = TemplatesConfig(clusters=args.clusters, random_members=args.random_members)
    result = mine_templates(sentences, cfg, args.seed, source=description)
    write_templates(args.out, result)
    print(f"wrote {len(result.templates)} templates ({result.clusters} clusters, {result.unique} distinct) to {args.out}")


if __name__ == "__main__":
    main()
