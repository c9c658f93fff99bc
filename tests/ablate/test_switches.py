"""Each ablation row is a different training step: masking score none/random/cosine/gass, GASS variant, MTP on/off."""

import itertools

import pytest
import torch

from gadms.ablate.rows import ROWS, row_params
from gadms.config import Params
from gadms.model.backbone import tokenizer
from gadms.model.retrieval import Architecture, PersonRetrievalModel
from gadms.model.step import TrainingStep

CAPTIONS = [
    "A woman with long black hair wearing a red coat and blue jeans.",
    "A man in a green shirt, grey trousers and white shoes carrying a black bag.",
    "A man with short brown hair in a yellow jacket and black shorts.",
    "A woman wearing a purple dress and pink shoes, holding a phone.",
]


@pytest.fixture(scope="module")
def batch():
    torch.manual_seed(0)
    params = Params.model_validate({"model": {"context_length": 32}})
    model = PersonRetrievalModel(Architecture.from_config(params.model))
    images = torch.randn(len(CAPTIONS), 3, params.model.image_height, params.model.image_width)
    return params, model, images, tokenizer(32)(CAPTIONS)


def _step(batch, row):
    params, model, images, tokens = batch
    p = row_params(params, row, seed=0, pretrained=None)
    out = TrainingStep(p.model, p.loss, "gadms", seed=p.seed)(model, images, tokens)
    return p, out


def test_each_row_sets_its_switches(batch):
    expected = {
        "none": ("none", "paper", False),
        "random": ("random", "paper", True),
        "cosine": ("cosine", "paper", True),
        "gass": ("gass", "paper", True),
        "gass-official": ("gass", "official", True),
        "gass-no-mtp": ("gass", "paper", False),
        "random-no-mtp": ("random", "paper", False),
    }
    assert set(expected) == set(ROWS)
    for row, (score, variant, mtp) in expected.items():
        p = row_params(batch[0], row, seed=3, pretrained="base.safetensors")
        assert (p.model.masking.score, p.model.gass.variant, p.loss.mtp.enabled) == (score, variant, mtp)
        assert p.seed == 3 and p.model.pretrained == "base.safetensors"


def test_every_row_changes_the_step(batch):
    outs = {row: _step(batch, row)[1] for row in ROWS}
    assert "mtp_loss" not in outs["none"].losses and outs["none"].scores is None
    assert not outs["none"].noise_mask.any()
    for row in ("random", "cosine", "gass", "gass-official"):
        assert "mtp_loss" in outs[row].losses, row
    for row in ("gass-no-mtp", "random-no-mtp"):
        assert "mtp_loss" not in outs[row].losses and outs[row].noise_mask.any(), row
    scores = {row: outs[row].scores for row in ("random", "cosine", "gass", "gass-official")}
    for a, b in itertools.combinations(scores, 2):
        assert not torch.allclose(scores[a], scores[b]), (a, b)
    totals = {row: round(out.total.item(), 6) for row, out in outs.items()}
    assert len(set(totals.values())) == len(totals), totals
