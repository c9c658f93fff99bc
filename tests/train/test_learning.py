"""Proof of learning: pre-training the tiny model from scratch on synthetic captions beats chance on unseen
identities.
"""

import pytest

from gadms.config import SynthConfig, load_params
from gadms.data.benchmarks import load_benchmark
from gadms.eval.evaluate import evaluate_split
from gadms.synth.benchmark import write_benchmark
from gadms.train.recipes import run_pretrain


def _chance_r1(split) -> float:
    """Expected R1 of a random ranking: mean share of the gallery that matches the query."""
    _, gallery_ids = split.gallery()
    _, query_ids = split.queries()
    share = [sum(g == q for g in gallery_ids) / len(gallery_ids) for q in query_ids]
    return 100 * sum(share) / len(share)


@pytest.mark.slow
def test_pretraining_from_scratch_learns_retrieval(tmp_path):
    write_benchmark(tmp_path / "corpus", 100, 1, SynthConfig(), progress=False)
    write_benchmark(tmp_path / "eval", 150, 2, SynthConfig(), progress=False)
    params = load_params(
        None,
        [
            "model.context_length=32",
            "train.num_workers=0",
            "augment.pad_crop=false",
            "augment.random_erasing=false",
            "augment.color_jitter=false",
        ],
    )
    model, history = run_pretrain(
        params, tmp_path / "corpus", "cuhk-pedes", tmp_path / "run", device="cpu", progress=False
    )
    assert history[-1].losses["itc_loss"] < history[0].losses["itc_loss"]
    split = load_benchmark("cuhk-pedes", tmp_path / "eval", "test")
    metrics = evaluate_split(model, split)
    chance = _chance_r1(split)
    # a model that learned nothing scores about `chance`; measured here: R1 10.4 vs chance 3.6
    assert metrics["R1"] > 2 * chance, (metrics, chance)
    print(f"R1 {metrics['R1']:.2f} mAP {metrics['mAP']:.2f} chance R1 {chance:.2f}")
