"""GASS on the synthetic world: known-wrong words score below correct attribute words."""

import pytest

from gadms.bench.gass_noise import noise_detection_auroc
from gadms.eval.metrics import auroc


def test_auroc_against_a_hand_count():
    # pairs (pos > neg): 3>1, 3>2, 2>1, 2=2 (half) of 2*2=4 pairs -> 3.5/4
    assert auroc([1.0, 2.0], [3.0, 2.0]) == pytest.approx(0.875)
    assert auroc([0.0], [0.0]) == 0.5


@pytest.mark.slow
def test_gass_ranks_wrong_words_below_correct_ones_after_short_training(tmp_path):
    results = noise_detection_auroc(identities=200, steps=400, batch=64, progress=False, workdir=tmp_path)
    fresh = results["train images, fresh noise"]
    # measured 0.61 here; chance is 0.5, the cosine baseline about 0.51
    assert fresh["gass"] > 0.56
    assert fresh["gass"] > fresh["cosine"] + 0.03
    assert fresh["gass"] > fresh["random"] + 0.03
    assert results["train captions seen (noisy)"]["gass"] > 0.5
