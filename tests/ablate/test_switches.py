"""Each ablation row is a different training step: masking score none/random/cosine/gass, GASS variant, MTP on/off."""

import itertools

import pytest
import torch

from gadms.ablate.rows import ROWS, row_params
from gadms.config import Params, load_params
from gadms.model.backbone import tokenizer
from gadms.model.retrieval import Architecture, PersonRetrievalModel
from gadms.model.step import TrainingStep
from tests.test_config import REPO

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
        "clean": ("none", "paper", False),  # differs from none by its corpus (tests/ablate/test_checkable_testbed.py)
    }
    assert set(expected) == set(ROWS)
    for row, (score, variant, mtp) in expected.items():
        p = row_params(batch[0], row, seed=3, pretrained="base.safetensors")
        assert (p.model.masking.score, p.model.gass.variant, p.loss.mtp.enabled) == (score, variant, mtp)
        assert p.seed == 3 and p.model.pretrained == "base.safetensors"


def test_gass_official_row_is_the_whole_official_masking_setting(batch):
    """Issue 22: the released formulas with the released slope, midpoints and at-least-one rule, not the paper's."""
    p = row_params(batch[0], "gass-official", seed=0, pretrained=None)
    m = p.model.masking
    assert (p.model.gass.variant, m.score, p.loss.mtp.enabled) == ("official", "gass", True)
    assert (m.slope, m.noise_midpoint, m.informative_midpoint) == (20.0, 0.9, 0.1)
    assert (m.mtp_at_least_one, m.noise_at_least_one) == (True, True)
    official = load_params(REPO / "params.full.yaml").model.masking
    keys = ("slope", "noise_midpoint", "informative_midpoint", "mtp_at_least_one", "noise_at_least_one")
    assert {k: getattr(m, k) for k in keys} == {k: getattr(official, k) for k in keys}
    paper = row_params(batch[0], "gass", seed=0, pretrained=None).model.masking  # the paper row keeps the defaults
    assert (paper.slope, paper.noise_midpoint, paper.noise_at_least_one) == (10.0, 0.5, False)
    # on params.ablate.yaml too, whatever its own masking values
    q = row_params(load_params(REPO / "params.ablate.yaml"), "gass-official", seed=1, pretrained=None).model.masking
    assert (q.slope, q.noise_midpoint, q.informative_midpoint, q.noise_at_least_one) == (20.0, 0.9, 0.1, True)


def test_every_row_changes_the_step(batch):
    outs = {row: _step(batch, row)[1] for row in ROWS if row != "clean"}  # clean: none's step, another corpus
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
