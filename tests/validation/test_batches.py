"""The batched gate gives the single-table gate's verdict, shares, examples and report bytes at any batch size."""

import html
import json
import re
from collections import Counter
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from gadms.config import ValidationConfig
from gadms.validation import duplicates, run_quality_gate, vocabulary
from gadms.validation.corpus import CorpusReader
from gadms.validation.duplicates import DuplicateCounter, first_copies
from gadms.validation.results import GateError

from . import corpus_builder as cb
from .one_shot import one_shot_gate

CFG = ValidationConfig()
REPORTS = ("summary.txt", "gate.json", "report.html")
SHARD = 10  # samples per shard: examples and duplicate groups span shards


def _broken(samples):
    """Cut-off JSON, no captions, an empty caption list, bytes that are not UTF-8."""
    broken = list(samples)
    broken[3] = b'{"captions": ["A man in a red coat.", '
    broken[7] = {k: v for k, v in samples[7].items() if k != "captions"}
    broken[9] = dict(samples[9], captions=[])
    not_utf8 = '{"captions": ["A man in a red \xff coat and black jeans."], "crop_size": [120, 300]}'
    broken[11] = not_utf8.encode("latin-1")
    return broken


CORPORA = {
    "mixed": lambda: cb.mixed_defects(cb.clean_samples(48, 2)),
    "broken": lambda: _broken(cb.clean_samples(16, 2)),
    "clean": lambda: cb.clean_samples(30, 3),
}


@pytest.fixture
def small_partitions(monkeypatch):
    """Duplicate counting in partitions of 8 records, read 5 at a time, so tiny corpora are partitioned."""
    monkeypatch.setattr(duplicates, "PARTITION_RECORDS", 8)
    monkeypatch.setattr(duplicates, "CHUNK_RECORDS", 5)


@pytest.mark.parametrize("corpus,batch", [("mixed", 4), ("mixed", 50), ("broken", 1), ("clean", 7)])
def test_batched_gate_equals_the_single_table_gate(tmp_path, monkeypatch, small_partitions, corpus, batch):
    monkeypatch.chdir(tmp_path)  # relative paths, so that the two runs' reports can be compared byte for byte
    data = cb.write_corpus(Path("corpus"), CORPORA[corpus](), shard_size=SHARD)
    assert len(list(CorpusReader(data, batch).batches())) > 1, "the corpus is really read in several batches"
    reference = one_shot_gate(data, CFG, Path("one-shot"))
    batched = run_quality_gate(data, CFG.model_copy(update={"batch_captions": batch}), Path("batched"))
    assert batched.checks == reference.checks
    for field in ("passed", "captions", "samples", "fingerprint"):
        assert getattr(batched, field) == getattr(reference, field), field
    for name in REPORTS:
        assert (tmp_path / "batched" / name).read_bytes() == (tmp_path / "one-shot" / name).read_bytes(), name
    if corpus == "mixed":
        assert set(batched.failed_checks) == {"non_empty", "no_speculation", "no_background", "duplicates"} | {
            "crop_size",
            "crop_aspect",
        }


def test_data_docs_hold_one_combined_validation_per_suite(tmp_path):
    data = cb.write_corpus(tmp_path / "corpus", cb.mixed_defects(cb.clean_samples(48, 2)), shard_size=SHARD)
    result = run_quality_gate(data, CFG.model_copy(update={"batch_captions": 20}), tmp_path / "report")
    pages = sorted((tmp_path / "report" / "data_docs" / "validations").rglob("*.html"))
    assert [p.parent.parent.parent.name for p in pages] == ["captions", "crops"]  # not one per batch
    text = re.sub(r"\s+", " ", html.unescape(re.sub(r"<[^>]+>", " ", pages[0].read_text(encoding="utf-8"))))
    assert "Evaluated Expectations 9" in text  # the uniqueness expectation is shown with the row-wise ones
    assert hand_counts(cb.mixed_defects(cb.clean_samples(48, 2)), CFG)["duplicates"][0] == 11
    assert "11 unexpected values found" in text  # the duplicates' whole-corpus count, not one batch's
    assert not result.passed


def _where(index: int) -> str:
    return f"{index // SHARD:05d}.tar/{index:06d}"


def hand_counts(samples: list[dict], cfg: ValidationConfig) -> dict[str, tuple[int, int, list[str]]]:
    """Per check, straight from the sample dicts: (failing rows, rows it applies to, where the first three are)."""
    captions = [(_where(i), c.strip() or None) for i, s in enumerate(samples) for c in s["captions"]]
    texts = [(w, t) for w, t in captions if t is not None]
    v = vocabulary
    rules = {
        "valid_text": lambda t: not v.INVALID_CHARACTER.search(t),
        "word_count": lambda t: cfg.min_words <= len(t.split()) <= cfg.max_words,
        "no_speculation": lambda t: not v.SPECULATION.search(t),
        "no_background": lambda t: not v.BACKGROUND.search(t),
        "mentions_person": lambda t: bool(v.PERSON.search(t)),
        "mentions_attribute": lambda t: bool(v.ATTRIBUTE.search(t)),
        "no_placeholder": lambda t: not v.PLACEHOLDER.search(t),
    }
    out = {"non_empty": _tally([(w, t is not None) for w, t in captions])}
    out |= {name: _tally([(w, rule(t)) for w, t in texts]) for name, rule in rules.items()}
    copies = Counter(t for _, t in texts)
    out["duplicates"] = (sum(n for n in copies.values() if n > 1), len(texts), [])
    crops = [(_where(i), s["crop_size"]) for i, s in enumerate(samples)]
    out["crop_size"] = _tally([(w, min(c) >= cfg.min_crop_short_side) for w, c in crops])
    out["crop_aspect"] = _tally([(w, cfg.min_crop_aspect <= c[0] / c[1] <= cfg.max_crop_aspect) for w, c in crops])
    return out


def _tally(rows: list[tuple[str, bool]]) -> tuple[int, int, list[str]]:
    failing = [w for w, ok in rows if not ok]
    return len(failing), len(rows), failing[:3]


def hand_duplicates(samples: list[dict]) -> list[str]:
    """The most copied texts, most copies first, ties by first appearance, as the reports quote them."""
    texts = [(_where(i), c.strip()) for i, s in enumerate(samples) for c in s["captions"] if c.strip()]
    copies = Counter(t for _, t in texts)
    first = {}
    for position, (where, text) in enumerate(texts):
        first.setdefault(text, (position, where))
    top = sorted((t for t in copies if copies[t] > 1), key=lambda t: (-copies[t], first[t][0]))[:3]
    return [f"{copies[t]} copies, first at {first[t][1]}: {json.dumps(t)}" for t in top]


def test_shares_and_examples_match_a_hand_count(tmp_path, small_partitions):
    samples = cb.mixed_defects(cb.clean_samples(48, 2))
    data = cb.write_corpus(tmp_path / "corpus", samples, shard_size=SHARD)
    result = run_quality_gate(data, CFG.model_copy(update={"batch_captions": 5}), tmp_path / "report")
    expected = hand_counts(samples, CFG)
    for check in result.checks:
        failing, rows, wheres = expected[check.name]
        assert check.unexpected_share == pytest.approx(failing / rows, abs=1e-6), check.name
        assert check.passed == ((rows - failing) / rows >= check.mostly), check.name
        if check.name != "duplicates":
            assert [e.split(": ")[0].split(" ")[0] for e in check.examples] == wheres, check.name
    duplicated = next(c for c in result.checks if c.name == "duplicates")
    assert duplicated.examples == hand_duplicates(samples)
    assert duplicated.examples[0].startswith("4 copies, first at 00000.tar/000002: ")  # tie with the red coat: earlier
    assert not duplicated.passed and expected["duplicates"][0] == 11


def _batches(texts: list[str | None], size: int) -> list[pd.DataFrame]:
    rows = pd.DataFrame({"row": range(len(texts)), "text": texts})
    return [rows.iloc[i : i + size] for i in range(0, len(texts), size)]


@pytest.mark.parametrize("partition_records,chunk", [(10**6, 10**6), (7, 3), (1, 2)])
def test_duplicate_counter_equals_counting_in_memory(monkeypatch, partition_records, chunk):
    monkeypatch.setattr(duplicates, "CHUNK_RECORDS", chunk)
    rng = np.random.default_rng(0)
    texts = [None if k % 13 == 0 else f"caption {k}" for k in rng.integers(0, 60, 400)]
    with DuplicateCounter(partition_records) as counter:
        for batch in _batches(texts, 9):
            counter.add(batch)
        counted = counter.count()
    present = [(row, t) for row, t in enumerate(texts) if t is not None]
    copies = Counter(t for _, t in present)
    first = {}
    for row, text in present:
        first.setdefault(text, row)
    top = sorted((t for t in copies if copies[t] > 1), key=lambda t: (-copies[t], first[t]))[:3]
    assert counted.texts == len(present)
    assert counted.duplicated == sum(n for n in copies.values() if n > 1)
    assert [(g.copies, g.first) for g in counted.top] == [(copies[t], first[t]) for t in top]
    assert (counted.partitions > 1) == (partition_records < len(present))


def test_one_text_everywhere_is_counted_in_bounded_chunks(monkeypatch):
    monkeypatch.setattr(duplicates, "CHUNK_RECORDS", 4)
    texts = ["A man in a black coat."] * 500 + [f"caption {k}" for k in range(50)]
    with DuplicateCounter(partition_records=4) as counter:
        for batch in _batches(texts, 1):  # one record per caption: nothing merges within a batch
            counter.add(batch)
        counted = counter.count()
    assert (counted.duplicated, counted.texts) == (500, 550)
    assert [(g.copies, g.first) for g in counted.top] == [(500, 0)]
    assert counted.partitions > 1


def test_a_corpus_changed_during_the_gate_is_an_error(tmp_path):
    samples = cb.edit_captions(cb.clean_samples(30, 2), 5, cb.make_duplicate)
    data = cb.write_corpus(tmp_path / "corpus", samples, shard_size=SHARD)
    reader = CorpusReader(data, batch_captions=8)
    with DuplicateCounter() as counter:
        for batch in reader.batches():
            counter.add(batch.captions)
        counted = counter.count()
    assert first_copies(counted, reader) == [("00000.tar/000000", cb.make_duplicate("", 0))]
    changed = cb.edit_captions(samples, 5, lambda caption, n: f"A woman in a red coat number {n}.")
    cb.write_corpus(data, changed, shard_size=SHARD)
    with pytest.raises(GateError, match="changed while the gate read it") as err:
        first_copies(counted, reader)
    assert "\n" not in str(err.value)
