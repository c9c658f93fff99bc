"""`gadms synth benchmark`: a CUHK-PEDES-format benchmark with known caption noise."""

import hashlib
import json
from collections import defaultdict
from pathlib import Path

import pytest
from PIL import Image

from gadms.config import SynthConfig
from gadms.synth.attributes import VOCABULARY
from gadms.synth.benchmark import SynthError, write_benchmark
from gadms.synth.captions import GENDER_WORDS

NOISE = 0.3


def _tree_digest(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


@pytest.fixture(scope="module")
def bench(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench")
    summary = write_benchmark(out, 30, 3, SynthConfig(caption_noise=NOISE), progress=False)
    records = json.loads((summary.root / "reid_raw.json").read_text(encoding="utf-8"))
    truth = json.loads((summary.root / "synthetic_truth.json").read_text(encoding="utf-8"))["records"]
    return summary, records, truth


def test_real_cuhk_pedes_format(bench):
    summary, records, _ = bench
    assert summary.root.name == "CUHK-PEDES"
    for r in records:
        assert set(r) == {"id", "file_path", "captions", "split", "processed_tokens"}
        assert isinstance(r["id"], int) and r["id"] >= 1
        assert r["split"] in ("train", "val", "test")
        assert len(r["captions"]) == 2 and all(isinstance(c, str) and c for c in r["captions"])
        assert len(r["processed_tokens"]) == 2
        image = Image.open(summary.root / "imgs" / r["file_path"])
        assert image.format == "JPEG" and image.height > image.width


def test_identities_are_disjoint_across_splits_with_2_to_4_images(bench):
    _, records, _ = bench
    splits_of, images_of = defaultdict(set), defaultdict(int)
    for r in records:
        splits_of[r["id"]].add(r["split"])
        images_of[r["id"]] += 1
    assert sorted(splits_of) == list(range(1, 31))
    assert all(len(s) == 1 for s in splits_of.values())
    per_split = defaultdict(int)
    for s in splits_of.values():
        per_split[next(iter(s))] += 1
    assert dict(per_split) == {"train": 21, "val": 3, "test": 6}
    assert all(2 <= n <= 4 for n in images_of.values())


def test_same_seed_same_bytes(bench, tmp_path):
    summary, _, _ = bench
    again = write_benchmark(tmp_path / "a", 30, 3, SynthConfig(caption_noise=NOISE), progress=False)
    assert _tree_digest(summary.root) == _tree_digest(again.root)
    other = write_benchmark(tmp_path / "b", 30, 4, SynthConfig(caption_noise=NOISE), progress=False)
    assert _tree_digest(summary.root)["reid_raw.json"] != _tree_digest(other.root)["reid_raw.json"]


def test_noise_hits_the_requested_fraction_of_train_captions_only(bench):
    _, records, truth = bench
    train_captions = sum(len(r["captions"]) for r in records if r["split"] == "train")
    noisy = [(r, c) for r, t in zip(records, truth) for c, spans in enumerate(t["noise_spans"]) if spans]
    assert len(noisy) == round(NOISE * train_captions)
    assert all(r["split"] == "train" for r, _ in noisy)


def test_noise_spans_point_at_words_that_contradict_the_attributes(bench):
    _, records, truth = bench
    checked = 0
    for r, t in zip(records, truth):
        assert t["file_path"] == r["file_path"]
        for caption, spans in zip(r["captions"], t["noise_spans"]):
            for span in spans:
                word = caption[span["start"] : span["end"]].lower()
                name = span["attribute"]
                true_value = t["attributes"][name]
                assert span["true"] == true_value
                if name == "gender":
                    assert word in GENDER_WORDS["woman" if true_value == "man" else "man"]
                else:
                    assert word in VOCABULARY[name] and word != true_value
                # the wrong word is a whole word of the caption
                assert caption[span["end"] : span["end"] + 1] in ("", " ", ".", ",")
                assert span["start"] == 0 or caption[span["start"] - 1] == " "
                checked += 1
    assert checked > 0


def test_clean_captions_state_the_true_colours(bench):
    """Without noise, every colour named next to a garment is the identity's colour."""
    _, records, truth = bench
    for r, t in zip(records, truth):
        a = t["attributes"]
        for caption, spans in zip(r["captions"], t["noise_spans"]):
            if spans:
                continue
            text = caption.lower()
            assert f"{a['top_color']} " in text
            assert f"{a['bottom_color']} {a['bottom_type']}" in text


def test_too_few_identities_is_a_clear_error(tmp_path):
    with pytest.raises(SynthError, match="--identities 2: too few"):
        write_benchmark(tmp_path, 2, 0, SynthConfig(), progress=False)


def test_caption_noise_words_sets_how_many_words_each_noisy_caption_gets(tmp_path):
    counts = {}
    for words in (1, 2):
        synth = SynthConfig(caption_noise=0.5, caption_noise_words=words)
        root = write_benchmark(tmp_path / str(words), 10, 0, synth, progress=False).root
        truth = json.loads((root / "synthetic_truth.json").read_text(encoding="utf-8"))["records"]
        counts[words] = {len(spans) for r in truth for spans in r["noise_spans"] if spans}
    assert counts[1] == {1}
    assert counts[2] == {2}
