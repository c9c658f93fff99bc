"""The offline captioner: templates filled from a synthetic person's attributes."""

from __future__ import annotations

import re

import numpy as np
import pytest

from gadms.config import CaptioningConfig
from gadms.curation.attribute_captions import NOUNS, AttributeCaptioner, fill_template, limit_words
from gadms.curation.records import CaptionRequest, Template
from gadms.curation.templates import default_templates
from gadms.synth.attributes import sample_identity
from gadms.synth.figure import POSES

MAX_WORDS = CaptioningConfig().max_words
OTHER_PRONOUNS = {"man": {"she", "her", "herself"}, "woman": {"he", "his", "him", "himself"}}


def _people(count: int, seed: int) -> list[dict]:
    rng = np.random.default_rng(seed)
    return [{**sample_identity(rng).to_dict(), "pose": str(rng.choice(POSES))} for _ in range(count)]


def _words(caption: str) -> list[str]:
    return re.findall(r"[a-z'-]+", caption.lower())


def _person(**changes) -> dict:
    base = {
        "gender": "man",
        "skin_tone": 1,
        "hair_color": "black",
        "hair_style": "short",
        "top_type": "jacket",
        "top_color": "orange",
        "top_pattern": "plain",
        "bottom_type": "jeans",
        "bottom_color": "blue",
        "shoe_color": "white",
        "bag_type": "none",
        "bag_color": "none",
        "hat_type": "none",
        "hat_color": "none",
        "pose": "walk",
    }
    return {**base, **changes}


def test_every_default_template_fills_cleanly_for_many_people():
    templates = default_templates()
    for person in _people(40, seed=7):
        for template in templates:
            caption = fill_template(template.text, person, np.random.default_rng(0))
            words = _words(caption)
            assert "[" not in caption and "]" not in caption, (template.text, caption)
            assert 3 <= len(caption.split()) <= MAX_WORDS
            assert caption[0].isupper() and caption.endswith("."), caption
            assert not re.search(r"\b(a|an) (a|an|the)\b|\s[,.]|,,|\.\.", caption), caption
            assert not set(words) & OTHER_PRONOUNS[person["gender"]], (template.text, caption)
            if "[colored top]" in template.text:
                assert f"{person['top_color']} " in caption and person["top_type"] in caption, (template.text, caption)
            if "[man]" in template.text:
                assert set(words) & set(NOUNS[person["gender"]]), (template.text, caption)
            if "[colored bag]" in template.text and person["bag_type"] != "none":
                assert person["bag_type"] in caption, (template.text, caption)
            if person["bag_type"] == "none":
                assert not set(words) & {"backpack", "handbag", "bag", "carrying", "carries"}, (template.text, caption)


def test_articles_agree_with_what_fills_the_placeholder():
    template = "[he] wears a [colored top] and a [colored bottom]. [he] carries a [colored bag]."
    rng = np.random.default_rng(0)
    jeans = fill_template(template, _person(bag_type="backpack", bag_color="orange"), rng)
    assert jeans == "He wears an orange jacket and blue jeans. He carries an orange backpack."
    skirt = fill_template(
        "[he] has [colored bottom] on.", _person(gender="woman", bottom_type="skirt", bottom_color="gray"), rng
    )
    assert skirt == "She has a gray skirt on."
    bald = fill_template("[he] has [hair].", _person(hair_style="bald", hair_color="none"), rng)
    assert bald == "He has a shaved head."


@pytest.mark.parametrize(
    ("template", "expected"),
    [
        (
            "[he] wears a [colored top] with [color pattern] and [colored bottom].",
            "He wears an orange jacket and blue jeans.",
        ),
        ("[he] wears a [colored top]. [he] has a [colored bag] on [his] back.", "He wears an orange jacket."),
        (
            "[he] wears a [colored headwear], a [colored top] and [colored bottom].",
            "He wears an orange jacket and blue jeans.",
        ),
        ("[he] wears a [colored top], [colored bottom] and [colored footwear], carrying a [colored bag].", None),
        ("[he] wears [glasses], a [colored top] and [colored bottom].", "He wears an orange jacket and blue jeans."),
        (
            "[he] wears a [colored top] over a [colored inner top], [colored bottom] and [colored headwear].",
            "He wears an orange jacket and blue jeans.",
        ),
        (
            "[he] is a [age] person in a [colored top] and [colored bottom], holding an [accessory].",
            "He is a person in an orange jacket and blue jeans.",
        ),
    ],
)
def test_absent_items_are_removed_with_their_clause(template, expected):
    caption = fill_template(template, _person(), np.random.default_rng(0))
    if expected is None:  # footwear wording is random: check the removal only
        assert re.fullmatch(r"He wears an orange jacket, blue jeans and white \w+\.", caption), caption
    else:
        assert caption == expected


def test_pattern_is_named_once():
    person = _person(top_pattern="striped")
    with_slot = fill_template("[he] wears a [colored top] with [color pattern].", person, np.random.default_rng(0))
    without_slot = fill_template("[he] wears a [colored top].", person, np.random.default_rng(0))
    assert with_slot == "He wears an orange jacket with stripes."
    assert without_slot == "He wears an orange striped jacket."


def test_unknown_placeholder_is_an_error():
    with pytest.raises(ValueError, match=r"unknown placeholder \[shiny top\]"):
        fill_template("[he] wears a [shiny top].", _person(), np.random.default_rng(0))


def _request(person, seed=5, key="k", templates=None):
    templates = templates or tuple(default_templates()[:2])
    return CaptionRequest(key=key, image=b"", templates=templates, attributes=person, seed=seed)


def test_captioner_is_deterministic_and_templates_give_different_captions():
    captioner = AttributeCaptioner(CaptioningConfig())
    people = _people(6, seed=3)
    first = captioner.caption([_request(p) for p in people])
    again = captioner.caption([_request(p) for p in people])
    assert first == again
    for result in first:
        assert result.error is None and len(result.captions) == 2
        assert result.captions[0] != result.captions[1]


def test_captioner_reports_missing_attributes_in_order():
    captioner = AttributeCaptioner(CaptioningConfig())
    results = captioner.caption([_request(None), _request(_person()), _request({"pose": "walk"})])
    assert (results[0].captions, results[0].error) == (None, "no_attributes")
    assert results[1].error is None and results[1].captions
    assert results[2].error == "no_attributes"


def test_captioner_keeps_captions_within_max_words():
    captioner = AttributeCaptioner(CaptioningConfig(max_words=8))
    long = Template(
        0, "A [man] with [hair] wears a [colored top], [colored bottom] and [colored footwear]. [he] is [action]."
    )
    (result,) = captioner.caption([_request(_person(), templates=(long,))])
    assert len(result.captions[0].split()) <= 8 and result.captions[0].endswith(".")


def test_limit_words_cuts_at_sentence_ends_first():
    caption = "He wears a red jacket. He has blue jeans on. He is walking."
    assert limit_words(caption, 12) == "He wears a red jacket. He has blue jeans on."
    assert limit_words(caption, 3) == "He wears."  # no dangling article
    assert limit_words(caption, 100) == caption
