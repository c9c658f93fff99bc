"""python -m gadms.bench.scale: the paper-scale table, measured where it fits and marked where extrapolated."""

from __future__ import annotations

import pytest

from gadms.bench import scale


def test_a_line_through_two_measured_sizes_gives_the_estimate():
    assert scale.line_at([(1_000_000, 30.0), (100_000, 12.0)], 5_000_000) == pytest.approx(110.0)
    assert scale.line_at([(10, 4.0), (10, 4.0)], 99) == 4.0


def test_targets_not_measured_are_fitted_and_marked_extrapolated():
    measured = [(100, {"mb": 10.0, "rate": 50.0}), (1000, {"mb": 19.0, "rate": 80.0})]
    figures = {"memory": ("MB", lambda r: r["mb"]), "rate": ("captions/s", lambda r: r["rate"])}
    rows = scale._rows_over("thing", "captions", measured, figures, (1000, 10_000))
    kinds = {(r.size, r.figure): (r.kind, r.value) for r in rows}
    assert kinds["1,000 captions", "memory"] == ("measured", 19.0)  # measured sizes are never re-fitted
    assert kinds["10,000 captions", "memory"] == ("extrapolated", pytest.approx(109.0))
    assert kinds["10,000 captions", "rate"] == ("extrapolated", 80.0)  # a rate keeps the largest run's value
    assert not [
        r
        for r in scale._rows_over("t", "c", measured, figures, (10_000,), extrapolate=False)
        if r.kind == "extrapolated"
    ]


@pytest.mark.slow
def test_the_quick_table_measures_every_structure(capsys):
    scale.main(["--quick", "--only", "planning", "manifest", "scores"])
    table = capsys.readouterr().out
    for structure in ("epoch planning", "manifest merge", "score memory (previous_epoch)"):
        assert f"| {structure} |" in table
    assert "extrapolated" not in table and "| measured |" in table
