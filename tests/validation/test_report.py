"""The gate's own HTML report: self-contained (no network needed), checks under their names, one kept per corpus."""

import html
import json
import re

import pytest

from gadms.config import ValidationConfig
from gadms.validation import run_quality_gate, vocabulary
from gadms.validation.report import HISTORY_DIR, REPORT_FILE, history_name

from . import corpus_builder as cb
from .test_gate import CHECKS

CFG = ValidationConfig()
REMOTE = re.compile(r"(?i)<link\b|<script\b|<img\b|<iframe\b|\b(?:src|href)\s*=|url\(|@import|https?://")


@pytest.fixture(scope="module")
def samples():
    return cb.clean_samples(120, captions_per_sample=2)


def test_report_is_self_contained_and_names_every_check(tmp_path, samples):
    data = cb.write_corpus(tmp_path / "corpus", samples)
    result = run_quality_gate(data, CFG, tmp_path / "gate")
    page = (tmp_path / "gate" / REPORT_FILE).read_text(encoding="utf-8")
    assert REMOTE.search(page) is None, REMOTE.search(page)  # nothing is fetched: it renders offline as it is
    assert "<style>" in page and "Caption quality gate" in page and "PASSED" in page
    for check in CHECKS:
        assert f"<code>{check}</code>" in page
    assert "between 5 and 80 words" in page and "no hedging word: possibly, possible, perhaps" in page
    for pattern in (vocabulary.SPECULATION, vocabulary.PLACEHOLDER):  # rules in words, not raw regexes
        assert pattern.pattern not in page and html.escape(pattern.pattern) not in page
    kept = tmp_path / "gate" / HISTORY_DIR / history_name(result.fingerprint, CFG)
    assert kept.read_bytes() == (tmp_path / "gate" / REPORT_FILE).read_bytes()
    assert f"kept as {HISTORY_DIR}/{kept.name}" in result.summary


def test_a_failing_check_shows_its_examples_and_every_gated_corpus_keeps_its_report(tmp_path, samples):
    clean = cb.write_corpus(tmp_path / "clean", samples)
    run_quality_gate(clean, CFG, tmp_path / "gate")
    edited = cb.edit_captions(samples, 10, cb.add_speculation)
    bad = run_quality_gate(cb.write_corpus(tmp_path / "bad", edited), CFG, tmp_path / "gate")
    page = (tmp_path / "gate" / REPORT_FILE).read_text(encoding="utf-8")
    assert "FAILED (no_speculation)" in page and page.count('class="verdict fail"') == 2  # verdict + its row
    assert html.escape(json.dumps(edited[0]["captions"][0])) in page  # an offending caption, escaped
    assert REMOTE.search(page) is None
    assert len(list((tmp_path / "gate" / HISTORY_DIR).glob("*.html"))) == 2  # the clean run's report is kept
    stricter = ValidationConfig(min_words=6)
    assert history_name(bad.fingerprint, stricter) != history_name(bad.fingerprint, CFG)
