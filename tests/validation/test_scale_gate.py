"""The gate's scaling benchmark: a reproducible synthetic corpus, and a measurement that reports what it promises."""

import pytest

from gadms.bench.scale_gate import measure, write_corpus


def test_synthetic_corpus_is_reproducible(tmp_path):
    first = write_corpus(tmp_path / "a", 30)
    second = write_corpus(tmp_path / "b", 30)
    assert [p.read_bytes() for p in sorted(first.iterdir())] == [p.read_bytes() for p in sorted(second.iterdir())]


@pytest.mark.slow
def test_measure_runs_the_gate_in_a_child_and_reports_memory_and_speed(tmp_path):
    (row,) = measure([400], batch_captions=150, tmp=tmp_path)
    assert row["captions"] == 400
    assert row["failed_checks"] == ["no_background"]  # 1.5% of captions talk about the scene, 1% allowed
    assert 50 < row["peak_rss_mb"] < 2000 and row["captions_per_s"] > 0
    assert list(tmp_path.iterdir()) == []  # the corpus and reports are removed
