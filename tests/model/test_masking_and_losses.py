"""Dual masking probabilities and sampling; SDM, ITC, MTP, ID and TIC against hand-computed references."""

import math

import numpy as np
import pytest
import torch

from gadms.model.backbone import EOT_TOKEN_ID, MASK_TOKEN_ID, SOT_TOKEN_ID
from gadms.model.gass import valid_token_mask
from gadms.model.losses import id_loss, itc_loss, mtp_loss, sdm_loss, tic_loss
from gadms.model.masking import apply_mask, informative_mask_probability, noise_mask_probability, sample_mask


@pytest.mark.parametrize("slope, midpoint", [(10.0, 0.5), (5.0, 0.3), (1.0, 0.0)])
def test_mask_probabilities_follow_the_formulas(slope, midpoint):
    s = torch.linspace(0, 1, 11)
    for i, si in enumerate(s.tolist()):
        noise = 0.2 / (1 + math.exp(-slope * ((1 - si) - midpoint)))
        informative = 0.3 / (1 + math.exp(-slope * (si - midpoint)))
        assert noise_mask_probability(s, 0.2, slope, midpoint)[i].item() == pytest.approx(noise, rel=1e-5)
        assert informative_mask_probability(s, 0.3, slope, midpoint)[i].item() == pytest.approx(informative, rel=1e-5)


def test_alpha_bounds_the_probability_and_direction_is_right():
    s = torch.linspace(0, 1, 101)
    pn = noise_mask_probability(s, 0.2, 10, 0.5)
    pi = informative_mask_probability(s, 0.3, 10, 0.5)
    assert pn.max() <= 0.2 and pi.max() <= 0.3
    assert torch.all(pn[1:] <= pn[:-1])  # noisy (low-score) tokens are masked more for alignment
    assert torch.all(pi[1:] >= pi[:-1])  # informative (high-score) tokens are masked more for MTP


def _tokens(lengths, n=16):
    rows = []
    for length in lengths:
        row = [SOT_TOKEN_ID] + list(range(100, 100 + length)) + [EOT_TOKEN_ID]
        rows.append(row + [0] * (n - len(row)))
    return torch.tensor(rows)


def test_special_tokens_are_never_masked_and_rates_match():
    tokens = _tokens([3, 14, 8, 1])
    valid = valid_token_mask(tokens)
    assert valid.sum() == 3 + 14 + 8 + 1
    g = torch.Generator().manual_seed(0)
    p = torch.full(tokens.shape, 0.999)
    for _ in range(20):
        mask = sample_mask(p, tokens, g)
        assert not mask[~valid].any()
    # empirical rate follows the probability on valid tokens
    p = torch.full(tokens.shape, 0.3)
    hits = sum(sample_mask(p, tokens, g)[valid].float().mean().item() for _ in range(400)) / 400
    assert hits == pytest.approx(0.3, abs=0.01)
    masked = apply_mask(tokens, valid)
    assert torch.all(masked[valid] == MASK_TOKEN_ID) and torch.equal(masked[~valid], tokens[~valid])


def test_masks_are_reproducible_from_the_seed():
    tokens = _tokens([10, 10])
    p = torch.full(tokens.shape, 0.5)
    a = sample_mask(p, tokens, torch.Generator().manual_seed(3))
    b = sample_mask(p, tokens, torch.Generator().manual_seed(3))
    c = sample_mask(p, tokens, torch.Generator().manual_seed(4))
    assert torch.equal(a, b) and not torch.equal(a, c)


def _sdm_reference(v, t, ids, tau, eps=1e-8):
    """SPEC 5.3 with explicit loops in numpy."""
    v = v / np.linalg.norm(v, axis=1, keepdims=True)
    t = t / np.linalg.norm(t, axis=1, keepdims=True)
    n = len(v)

    def direction(a, b):
        total = 0.0
        for i in range(n):
            logits = np.array([a[i] @ b[j] / tau for j in range(n)])
            p = np.exp(logits - logits.max())
            p /= p.sum()
            q = np.array([1.0 if ids[i] == ids[j] else 0.0 for j in range(n)])
            q /= q.sum()
            total += sum(p[j] * (np.log(p[j]) - np.log(q[j] + eps)) for j in range(n))
        return total / n

    return direction(v, t) + direction(t, v)


def test_sdm_matches_a_hand_computed_case():
    rng = np.random.default_rng(0)
    v, t = rng.normal(size=(5, 4)), rng.normal(size=(5, 4))
    ids = [0, 1, 0, 2, 1]
    got = sdm_loss(torch.tensor(v), torch.tensor(t), torch.tensor(ids), 0.02)
    assert got.item() == pytest.approx(_sdm_reference(v, t, ids, 0.02), rel=1e-6)
    # each pair its own identity
    got = sdm_loss(torch.tensor(v), torch.tensor(t), torch.arange(5), 0.5)
    assert got.item() == pytest.approx(_sdm_reference(v, t, list(range(5)), 0.5), rel=1e-6)


def test_sdm_is_small_for_perfectly_aligned_distinct_pairs():
    feats = torch.eye(4) * 3
    assert sdm_loss(feats, feats, torch.arange(4), 0.02).item() < 1e-6
    assert sdm_loss(feats, feats.roll(1, 0), torch.arange(4), 0.02).item() > 10


def test_itc_matches_cross_entropy_by_hand():
    v = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    t = torch.tensor([[1.0, 0.0], [1.0, 1.0]])
    tau = 0.5
    tn = t / t.norm(dim=1, keepdim=True)
    logits = (v @ tn.T / tau).numpy()

    def ce(rows):
        return float(np.mean([-(rows[i, i] - np.log(np.exp(rows[i]).sum())) for i in range(len(rows))]))

    assert itc_loss(v, t, tau).item() == pytest.approx((ce(logits) + ce(logits.T)) / 2, rel=1e-6)


def test_mtp_and_id_losses():
    logits = torch.tensor([[2.0, 0.0, -1.0], [0.0, 0.0, 3.0]])
    targets = torch.tensor([0, 2])
    expected = np.mean([-(2 - np.log(np.exp([2, 0, -1]).sum())), -(3 - np.log(np.exp([0, 0, 3]).sum()))])
    assert mtp_loss(logits, targets).item() == pytest.approx(expected, rel=1e-6)
    assert mtp_loss(torch.zeros(0, 3), torch.zeros(0, dtype=torch.long)).item() == 0.0
    assert id_loss(logits, logits, targets).item() == pytest.approx(expected, rel=1e-6)


def test_tic_prefers_own_image_captions_and_uses_hard_negatives():
    ids = torch.tensor([0, 1, 2])
    anchor = torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]])
    near_partner = anchor + 0.05
    far_partner = anchor.roll(1, 0)
    assert tic_loss(anchor, near_partner, ids, 0.1, 4) < tic_loss(anchor, far_partner, ids, 0.1, 4)
    # same identity captions from other images are neither positives nor negatives
    same_ids = torch.tensor([0, 0, 0])
    assert tic_loss(anchor, near_partner, same_ids, 0.1, 4).item() == 0.0
    # with one hard negative the loss only sees the most similar other-identity caption
    feats = torch.tensor([[1.0, 0.0], [0.9, 0.1], [-1.0, 0.0]])
    partner = torch.tensor([[1.0, 0.05], [0.8, 0.2], [-1.0, 0.1]])
    ids = torch.tensor([0, 1, 2])
    one, all_ = tic_loss(feats, partner, ids, 0.1, 1), tic_loss(feats, partner, ids, 0.1, 16)
    assert one.item() < all_.item()
