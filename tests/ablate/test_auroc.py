"""The AUROC mode: within-caption pairing by hand, and a run over the tiny testbed's caption sets."""

import math

import pytest

from gadms.ablate.auroc import SCORERS, base_model, measure, paired_auroc
from gadms.ablate.base import ensure_base
from tests.ablate.conftest import tiny_params


def test_paired_auroc_compares_words_of_the_same_caption_only():
    # caption 1: the wrong word (0.1) is below one correct word, above the other -> 0.5; caption 2: below both -> 1
    assert paired_auroc([([0.1], [0.5, 0.0]), ([0.2], [0.9, 0.3])]) == pytest.approx(0.75)
    assert paired_auroc([([0.4], [0.4])]) == pytest.approx(0.5)  # a tie counts half
    assert math.isnan(paired_auroc([([], [0.3]), ([0.2], [])]))  # no caption with both


def test_measure_scores_every_caption_set_with_every_scorer(tmp_path):
    params = tiny_params(tmp_path)
    rows = measure(params, {"base": base_model(params, ensure_base(params).weights)}, limit=20)
    assert [set_name for _, set_name, _ in rows] == [
        "train captions (noisy, seen)",
        "train images, fresh noise",
        "held-out identities, fresh noise",
    ]
    for _, _, values in rows:
        for scorer in SCORERS:
            assert 0.0 <= values[scorer] <= 1.0 and 0.0 <= values[f"{scorer}/paired"] <= 1.0
