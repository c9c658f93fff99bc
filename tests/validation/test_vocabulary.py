"""The gate's word lists: what each regex flags, and what it must leave alone."""

import numpy as np
import pytest

from gadms.synth.attributes import sample_identity
from gadms.synth.captions import make_caption
from gadms.validation.vocabulary import (
    ATTRIBUTE,
    BACKGROUND,
    INVALID_CHARACTER,
    PERSON,
    PLACEHOLDER,
    SPECULATION,
    word_pattern,
)

from .corpus_builder import clean_samples


@pytest.mark.parametrize(
    "text",
    [
        "A man possibly in his thirties.",
        "Perhaps she is a nurse.",
        "He seems tired.",
        "She seems  to be waiting.",
        "The coat appears to be wool.",
        "It is likely a uniform.",
        "He is probably walking home.",
        "She MIGHT be carrying a laptop.",
        "It could be a scarf.",
        "The pattern suggests a sports team.",
        "Maybe a student.",
        "The bag looks like leather.",
    ],
)
def test_speculation_flags_hedging(text):
    assert SPECULATION.search(text)


@pytest.mark.parametrize(
    "text",
    [
        "A man in a red jacket is walking.",
        "She has a black handbag.",
        "He wears khaki trousers.",
        "A mighty tall man in a grey coat.",  # "mighty" is not "might"
    ],
)
def test_speculation_leaves_plain_descriptions(text):
    assert not SPECULATION.search(text)


@pytest.mark.parametrize(
    "text",
    [
        "He walks down the street.",
        "Buildings in the background.",
        "A clear blue sky above her.",
        "The atmosphere is relaxed.",
        "A sunny afternoon.",
        "The photo is slightly blurry.",
        "In the picture behind her there are cars.",
        "The mood is cheerful.",
        "A tall building.",
        "The scene is busy.",
        "The image style is vintage.",
        "SKY and clouds.",
    ],
)
def test_background_flags_scenery_and_atmosphere(text):
    assert BACKGROUND.search(text)


@pytest.mark.parametrize(
    "text",
    [
        "A woman in a sky blue shirt.",
        "A man in a sky-blue hoodie.",
        "She wears an evening dress.",
        "Platform shoes and a sun hat.",
        "Snow boots and an outdoor jacket.",
        "A light blue coat.",
        "He holds a wallet.",
        "A t-shirt with a cartoon print.",
        "The man in the picture wears a cap.",
        "He is holding a camera.",
        "She wears a streetwear jacket.",
        "A dark coat.",
    ],
)
def test_background_leaves_person_descriptions(text):
    assert not BACKGROUND.search(text)


@pytest.mark.parametrize(
    "text,person",
    [
        ("A pedestrian in a coat.", True),
        ("The lady carries a bag.", True),
        ("He wears jeans.", True),
        ("Her coat is red.", True),
        ("A GENTLEMAN in grey.", True),
        ("Red coat and blue jeans.", False),
        ("The shirt is white.", False),
        ("There is a hero print.", False),
    ],
)
def test_person_words_are_whole_words(text, person):
    assert bool(PERSON.search(text)) is person


@pytest.mark.parametrize(
    "text,attribute",
    [
        ("A man in a hoodie.", True),
        ("A man in navy.", True),
        ("She has a T-shirt on.", True),
        ("A woman with a greyish bag.", True),
        ("A man is walking.", False),
        ("She is standing still.", False),
        ("He is reddening.", False),
    ],
)
def test_attribute_needs_a_garment_or_colour(text, attribute):
    assert bool(ATTRIBUTE.search(text)) is attribute


@pytest.mark.parametrize(
    "text,left",
    [
        ("A [man] wearing a [colored top].", True),
        ("A man in a {top}.", True),
        ("A man in a red top.", False),
        ("A man (tall) in a coat.", False),
    ],
)
def test_placeholder_finds_unfilled_slots(text, left):
    assert bool(PLACEHOLDER.search(text)) is left


@pytest.mark.parametrize(
    "text,bad",
    [
        ("Plain ASCII caption.", False),
        ("Un homme en veste bleue, café, naïve.", False),
        ("bell\x07here", True),
        ("line\nbreak", True),
        ("decoded \ufffd junk", True),
        ("c1 \x85 char", True),
    ],
)
def test_invalid_character(text, bad):
    assert bool(INVALID_CHARACTER.search(text)) is bad


def test_phrases_allow_any_whitespace_and_any_case():
    pattern = word_pattern(["appears to be"])
    assert pattern.search("It APPEARS\tto  be new")
    assert not pattern.search("appears to bed")


def test_builder_captions_are_clean():
    captions = [c for s in clean_samples() for c in s["captions"]]
    assert not [c for c in captions if SPECULATION.search(c) or BACKGROUND.search(c) or PLACEHOLDER.search(c)]
    assert all(PERSON.search(c) and ATTRIBUTE.search(c) for c in captions)


def test_project_synthetic_captions_pass_the_vocabulary():
    rng = np.random.default_rng(0)
    captions = [make_caption(sample_identity(rng), "walk", rng)[0] for _ in range(300)]
    flagged = [c for c in captions if SPECULATION.search(c) or BACKGROUND.search(c) or PLACEHOLDER.search(c)]
    assert flagged == []
    assert all(PERSON.search(c) and ATTRIBUTE.search(c) for c in captions)
