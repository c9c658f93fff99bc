"""GASS: one-pass gradients, untouched .grad, determinism, scaling, MSP."""

import pytest
import torch
import torch.nn.functional as F

from gadms.model.gass import (
    GassScorer,
    cosine_token_scores,
    minmax,
    multiscale_pool,
    random_token_scores,
    valid_token_mask,
)
from gadms.model.text_tower import encode_text


def test_one_backward_gives_the_same_gradients_as_one_per_layer(tiny_model, batch):
    images, tokens = batch
    image_features = tiny_model.encode_image(images)[0]
    scorer = GassScorer(layers=8, scales=(1, 2))
    one_pass, _ = scorer.gradients(tiny_model.clip, tokens, image_features)
    per_layer = scorer.gradients_per_layer(tiny_model.clip, tokens, image_features)
    assert len(one_pass) == len(per_layer) == 8
    for a, b in zip(one_pass, per_layer):
        assert a.shape == (len(tokens), tokens.shape[1], 64)
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-7)
        assert a.abs().sum() > 0


def test_gradient_is_that_of_each_pairs_own_similarity(tiny_model, batch):
    """Pair 0's gradient does not change when pair 1's image changes (per-pair SIM, images constant)."""
    images, tokens = batch
    feats = tiny_model.encode_image(images)[0]
    scorer = GassScorer(layers=2)
    g1, _ = scorer.gradients(tiny_model.clip, tokens, feats)
    other = feats.clone()
    other[1] = torch.randn_like(other[1])
    g2, _ = scorer.gradients(tiny_model.clip, tokens, other)
    torch.testing.assert_close(g1[0][0], g2[0][0])
    assert not torch.allclose(g1[0][1], g2[0][1])


def test_scoring_leaves_parameter_grads_untouched_and_frees_the_graph(tiny_model, batch):
    images, tokens = batch
    feats, _ = tiny_model.encode_image(images)
    loss = feats.pow(2).sum() + tiny_model.encode_text(tokens).pow(2).sum()
    loss.backward()
    before = {n: p.grad.clone() for n, p in tiny_model.named_parameters() if p.grad is not None}
    none_before = {n for n, p in tiny_model.named_parameters() if p.grad is None}
    scores = GassScorer()(tiny_model.clip, tokens, feats)
    after = {n: p.grad for n, p in tiny_model.named_parameters() if p.grad is not None}
    assert set(after) == set(before) and none_before == {n for n, p in tiny_model.named_parameters() if p.grad is None}
    for name in before:
        assert torch.equal(before[name], after[name]), name
    assert scores.grad_fn is None and not scores.requires_grad
    tiny_model.zero_grad(set_to_none=True)


def test_scores_are_deterministic_scaled_and_zero_on_special_tokens(tiny_model, batch):
    images, tokens = batch
    feats = tiny_model.encode_image(images)[0]
    scorer = GassScorer()
    a = scorer(tiny_model.clip, tokens, feats)
    b = scorer(tiny_model.clip, tokens, feats)
    assert torch.equal(a, b)
    valid = valid_token_mask(tokens)
    assert torch.all(a[~valid] == 0)
    assert torch.all((a >= 0) & (a <= 1))
    for row, ok in zip(a, valid):
        assert row[ok].max() == pytest.approx(1.0)  # scaled to [0, 1] over valid tokens


def test_one_pass_and_per_layer_scores_agree(tiny_model, batch):
    images, tokens = batch
    feats = tiny_model.encode_image(images)[0]
    scorer = GassScorer()
    torch.testing.assert_close(
        scorer(tiny_model.clip, tokens, feats), scorer(tiny_model.clip, tokens, feats, one_pass=False)
    )


def test_scores_follow_the_formula_for_a_single_layer(tiny_model, batch):
    """S = minmax(ReLU(S_g * S_a)) for L = 1, C = [1], written out from the internals."""
    images, tokens = batch
    feats = tiny_model.encode_image(images)[0]
    scorer = GassScorer(layers=1, scales=(1,))
    (grad,), out = scorer.gradients(tiny_model.clip, tokens, feats)
    layer = out.layers[0]
    valid = valid_token_mask(tokens)
    expected = torch.zeros(tokens.shape)
    for b in range(len(tokens)):
        e = int(out.eos_index[b])
        idx = valid[b].nonzero().flatten()
        q, k = layer.query[b, e], layer.key[b, idx]
        w = k @ q
        w = (w - w.min()) / (w.max() - w.min())
        v = layer.value[b, idx] @ layer.out_proj_weight.T
        s_g = w * (v @ grad[b, e])
        att = layer.attention[b, :, e, idx].mean(dim=0)
        s = F.relu(s_g * att / att.sum())
        spread = s.max() - s.min()
        expected[b, idx] = (s - s.min()) / spread if spread > 0 else torch.zeros_like(s)
    torch.testing.assert_close(scorer(tiny_model.clip, tokens, feats), expected, rtol=1e-4, atol=1e-5)


def test_multiscale_pooling():
    x = torch.arange(6, dtype=torch.float32).view(1, 6, 1)
    torch.testing.assert_close(multiscale_pool(x, (1,)), x)
    pooled2 = multiscale_pool(x, (2,))
    # windows [0,1],[2,3],[4,5] -> 0.5, 2.5, 4.5 at window centres 0.5, 2.5, 4.5;
    # linear interpolation back to positions 0..5 (clamped at the ends)
    torch.testing.assert_close(pooled2.flatten(), torch.tensor([0.5, 1.0, 2.0, 3.0, 4.0, 4.5]))
    torch.testing.assert_close(multiscale_pool(x, (1, 2)), (x + pooled2) / 2)


def test_minmax_only_over_valid_positions():
    x = torch.tensor([[5.0, 1.0, 3.0, 100.0]])
    valid = torch.tensor([[False, True, True, False]])
    torch.testing.assert_close(minmax(x, valid), torch.tensor([[0.0, 0.0, 1.0, 0.0]]))


def test_baseline_scores(tiny_model, batch):
    images, tokens = batch
    with torch.no_grad():
        feats = tiny_model.encode_image(images)[0]
    valid = valid_token_mask(tokens)
    css = cosine_token_scores(tiny_model.clip, tokens, feats)
    assert torch.all(css[~valid] == 0) and css.max() <= 1
    # CSS of a token is the cosine of its projected state with the image feature
    with torch.no_grad():
        out = encode_text(tiny_model.clip, tokens)
        proj = out.tokens @ tiny_model.clip.text_projection
    raw = F.cosine_similarity(proj[0, 1], feats[0], dim=0)
    raw_all = F.cosine_similarity(proj[0], feats[0][None], dim=-1)[valid[0]]
    assert css[0, 1] == pytest.approx(float((raw - raw_all.min()) / (raw_all.max() - raw_all.min())), abs=1e-5)
    g = torch.Generator().manual_seed(0)
    rnd = random_token_scores(tokens, g)
    assert torch.all(rnd[~valid] == 0) and rnd[valid].min() >= 0
