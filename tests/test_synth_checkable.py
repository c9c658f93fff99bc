"""The checkable corpus (issue 22): colour words only on slots the tiny model sees, wrong words recorded."""

import hashlib
import json

import numpy as np
import pytest

from gadms.config import SynthConfig
from gadms.synth.benchmark import SynthError, write_benchmark
from gadms.synth.checkable import (
    CHECKABLE_COLORS,
    SLOTS,
    checkable_caption,
    inject_checkable_noise,
    sample_checkable_identity,
    swap_one,
)


def _write(tmp_path, name="a", noise=0.5, words=2):
    synth = SynthConfig(caption_noise=noise, caption_noise_words=words)
    write_benchmark(tmp_path / name, 12, 4, synth, progress=False, vocabulary="checkable")
    bench = tmp_path / name / "CUHK-PEDES"
    records = json.loads((bench / "reid_raw.json").read_text())
    truth = json.loads((bench / "synthetic_truth.json").read_text())["records"]
    return bench, records, truth


def test_captions_state_only_the_four_colour_slots_and_record_every_wrong_word(tmp_path):
    _, records, truth = _write(tmp_path)
    noisy = hallucinated = 0
    for record, t in zip(records, truth):
        attributes = t["attributes"]
        assert attributes["bag_type"] != "backpack" and attributes["hat_type"] == "none"
        for caption, spans, slots in zip(record["captions"], t["noise_spans"], t["slots"]):
            assert len(caption.split()) <= 14
            stated = {slot: caption[s:e].lower() for s, e, slot in slots}
            assert set(stated) <= set(SLOTS) and set(stated.values()) <= set(CHECKABLE_COLORS)
            wrong = {span["attribute"]: span for span in spans}
            for slot, word in stated.items():
                if slot in wrong:
                    assert word == wrong[slot]["wrong"].lower() != wrong[slot]["true"]
                else:  # every word noise left alone is the truth
                    assert word == attributes[slot]
            for span in spans:
                assert caption[span["start"] : span["end"]] == span["wrong"]
                if span["attribute"] == "bag_color" and span["true"] == "none":
                    hallucinated += 1
                    assert attributes["bag_type"] == "none"
            noisy += bool(spans)
            if record["split"] != "train":
                assert not spans
    assert noisy > 0 and hallucinated > 0


def test_same_seed_same_bytes_and_the_vocabulary_is_checked(tmp_path):
    def digest(bench):
        return [hashlib.sha256((bench / f).read_bytes()).hexdigest() for f in ("reid_raw.json", "synthetic_truth.json")]

    a, _, _ = _write(tmp_path, "a")
    b, _, _ = _write(tmp_path, "b")
    assert digest(a) == digest(b)
    full = tmp_path / "full"
    write_benchmark(full, 12, 4, SynthConfig(caption_noise=0.5, caption_noise_words=2), progress=False)
    assert digest(full / "CUHK-PEDES") != digest(a)  # the mode changes the corpus
    with pytest.raises(SynthError, match="vocabulary"):
        write_benchmark(tmp_path / "bad", 12, 4, SynthConfig(), progress=False, vocabulary="nope")


def test_noise_and_swaps_change_exactly_the_chosen_slots():
    rng = np.random.default_rng(0)
    for _ in range(50):
        identity = sample_checkable_identity(rng)
        template = int(rng.integers(3))
        clean, spans = checkable_caption(identity, template)
        assert {slot for *_, slot in spans} == {s for s in SLOTS if getattr(identity, s) != "none"}
        caption, wrong, where = inject_checkable_noise(identity, template, rng, 2)
        assert len(wrong) == 2 and len({w.attribute for w in wrong}) == 2
        assert {slot for *_, slot in where} >= {w.attribute for w in wrong}
        for slot in SLOTS:
            swapped, _ = swap_one(identity, template, slot, "white" if getattr(identity, slot) != "white" else "red")
            assert swapped != clean


def test_one_slot_gallery_holds_families_differing_in_exactly_one_colour(tmp_path):
    from collections import defaultdict

    synth = SynthConfig(split_fractions={"train": 0.25, "val": 0.25, "test": 0.5})
    write_benchmark(tmp_path, 40, 5, synth, progress=False, vocabulary="checkable", gallery="one-slot")
    truth = json.loads((tmp_path / "CUHK-PEDES" / "synthetic_truth.json").read_text())["records"]
    records = json.loads((tmp_path / "CUHK-PEDES" / "reid_raw.json").read_text())
    people = {t["id"]: t["attributes"] for t in truth}
    split = {r["id"]: r["split"] for r in records}
    colours = {i: tuple(a[s] for s in SLOTS) for i, a in people.items()}
    assert len(set(colours.values())) == len(people) == 40  # every caption names one identity
    families = defaultdict(list)
    for i in sorted(people):
        families[(i - 1) // 5].append(i)
    for members in families.values():
        root, *variants = members
        assert len({split[i] for i in members}) == 1  # a family is never cut by a split
        for slot, i in zip(SLOTS, variants):
            differs = [k for k in people[root] if people[root][k] != people[i][k]]
            assert differs == [slot] or (slot == "bag_color" and set(differs) == {"bag_type", "bag_color"}), differs
    with pytest.raises(SynthError, match="gallery"):
        write_benchmark(tmp_path / "b", 10, 5, synth, progress=False, vocabulary="full", gallery="one-slot")
