"""model.gass.variant: the official code's GASS (issue 14, rows 2-5) against references written out by hand."""

import math

import pytest
import torch
import torch.nn.functional as F

from gadms.model.gass import GassScorer, valid_token_mask
from gadms.model.text_tower import LayerInternals, encode_text, tower_parts

SQRT_HALF = 1 / math.sqrt(2)


def _three_token_layer() -> tuple[list[torch.Tensor], LayerInternals, torch.Tensor, torch.Tensor]:
    """Two captions [SOT, w1, w2, w3, EOS] through one hand-made layer with D = 2 and one head.

    Keys k0..k4 = [0,1], [1,0], [1,1], [-1,0], [2,0]; the [EOS] query is [1,0]; values
    v1, v2, v3 = [1,0], [0,1], [1,1] (out_proj = identity); [EOS]'s attention row is
    [0.1, 0.2, 0.3, 0.1, 0.3]. The gradient at [EOS] is [2,-1] for caption 0 and [1,-3] for caption 1.
    """
    key = torch.tensor([[0.0, 1.0], [1.0, 0.0], [1.0, 1.0], [-1.0, 0.0], [2.0, 0.0]])
    query = torch.zeros(5, 2)
    query[4] = torch.tensor([1.0, 0.0])
    value = torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0], [1.0, 1.0], [0.0, 0.0]])
    attention = torch.zeros(1, 5, 5)
    attention[0, 4] = torch.tensor([0.1, 0.2, 0.3, 0.1, 0.3])
    twice = lambda t: torch.stack([t, t])  # noqa: E731
    layer = LayerInternals(twice(query), twice(key), twice(value), twice(attention), torch.zeros(2, 5, 2), torch.eye(2))
    grad = torch.zeros(2, 5, 2)
    grad[0, 4] = torch.tensor([2.0, -1.0])
    grad[1, 4] = torch.tensor([1.0, -3.0])
    tokens = torch.tensor([[49406, 10, 11, 12, 49407], [49406, 10, 11, 12, 49407]])
    return [grad], layer, torch.tensor([4, 4]), tokens


def test_paper_variant_by_hand():
    grads, layer, eos, tokens = _three_token_layer()
    scorer = GassScorer(layers=1, scales=(1,), variant="paper")
    valid = valid_token_mask(tokens)
    # q.k over w1..w3 = 1, 1, -1 -> min-max 1, 1, 0; g.v = 2, -1, 1 (caption 0) and 1, -3, -2 (caption 1)
    # attention over its valid sum 0.6: 1/3, 1/2, 1/6
    term = scorer.layer_score(grads[0], layer, eos, valid)
    torch.testing.assert_close(term[0, 1:4], torch.tensor([2 / 3, -1 / 2, 0.0]))
    torch.testing.assert_close(term[1, 1:4], torch.tensor([1 / 3, -3 / 2, 0.0]))
    # ReLU, then min-max per caption: both captions' best token reaches 1
    final = scorer.finalise(term, valid)
    torch.testing.assert_close(final, torch.tensor([[0.0, 1, 0, 0, 0], [0.0, 1, 0, 0, 0]]))


def test_official_variant_by_hand():
    grads, layer, eos, tokens = _three_token_layer()
    scorer = GassScorer(layers=1, scales=(1,), variant="official")
    valid = valid_token_mask(tokens)
    # cos(q, k) over ALL positions = 0, 1, 1/sqrt2, -1, 1 -> min-max (c + 1) / 2
    w2 = (SQRT_HALF + 1) / 2
    # importance s_g = w * g.v on w1..w3: caption 0: 2, -w2, 0 (sum 2 - w2); caption 1: 1, -3 w2, 0 (sum 1 - 3 w2 < 0)
    # the attention row (0.2, 0.3, 0.1) is divided by the importance sum, not by its own sum
    sum0, sum1 = 2 - w2, 1 - 3 * w2
    expected0 = torch.tensor([2 * 0.2 / sum0, -w2 * 0.3 / sum0, 0.0])
    expected1 = torch.tensor([1 * 0.2 / sum1, -3 * w2 * 0.3 / sum1, 0.0])
    term = scorer.layer_score(grads[0], layer, eos, valid)
    torch.testing.assert_close(term[0, 1:4], expected0)
    torch.testing.assert_close(term[1, 1:4], expected1)
    assert term[1, 1] < 0 < term[1, 2]  # the negative sum flips caption 1's signs
    # ReLU, then divided by the whole batch's maximum: caption 0's best stays below 1
    final = scorer.finalise(term, valid)
    top = max(expected0[0], expected1[1])
    torch.testing.assert_close(final[0, 1:4], torch.tensor([float(expected0[0] / top), 0.0, 0.0]))
    torch.testing.assert_close(final[1, 1:4], torch.tensor([0.0, float(expected1[1] / top), 0.0]))
    assert final[0].max() < 1 and final.max() == pytest.approx(1.0)


def test_official_cosine_weight_is_min_maxed_over_padding_too():
    """A padding key far from the query sets the minimum: only the official variant notices it."""
    grads, layer, eos, tokens = _three_token_layer()
    key = layer.key.clone()
    key[:, 0] = torch.tensor([-1.0, -0.01])  # SOT: cosine with the query ~ -1
    key[:, 3] = torch.tensor([0.0, 1.0])  # w3: cosine 0 -> min over words would be 0
    moved = LayerInternals(layer.query, key, layer.value, layer.attention, layer.output, layer.out_proj_weight)
    valid = valid_token_mask(tokens)
    official = GassScorer(layers=1, scales=(1,), variant="official").layer_score(grads[0], moved, eos, valid)
    # w3's weight is (0 - cos_min) / (1 - cos_min) ~ 0.5, not 0; its importance is w3 * g.v3 = w3 * 1
    cos_min = F.cosine_similarity(torch.tensor([1.0, 0.0]), torch.tensor([-1.0, -0.01]), dim=0)
    w3 = (0 - cos_min) / (1 - cos_min)
    w2 = (SQRT_HALF - cos_min) / (1 - cos_min)
    total = 2 * 1.0 - w2 + w3
    torch.testing.assert_close(official[0, 3], w3 * 0.1 / total)


def test_single_head_rerun_matches_a_hand_written_block(tiny_model, batch):
    """The official variant re-runs the last layer as one head of the full width: checked from the block's weights."""
    _, tokens = batch
    clip = tiny_model.clip
    tower = tower_parts(clip)
    with torch.no_grad():
        out = encode_text(clip, tokens, internals=1, single_head=True)
        x = tower.token_embedding(tokens) + tower.positional_embedding[: tokens.shape[1]]
        for block in tower.transformer.resblocks[:-1]:
            x = block(x, attn_mask=tower.attn_mask)
        block = tower.transformer.resblocks[-1]
        q, k, v = F.linear(block.ln_1(x), block.attn.in_proj_weight, block.attn.in_proj_bias).chunk(3, dim=-1)
        weights = (q @ k.transpose(1, 2) / math.sqrt(q.shape[-1]) + tower.attn_mask).softmax(dim=-1)
        attended = block.attn.out_proj(weights @ v)
        x = x + attended
        x = tower.ln_final(x + block.mlp(block.ln_2(x)))
        features = x[torch.arange(len(tokens)), tokens.argmax(-1)] @ tower.text_projection
        multi_head = encode_text(clip, tokens, internals=1).features
    assert out.layers[0].attention.shape == (4, 1, 77, 77)
    torch.testing.assert_close(out.layers[0].attention[:, 0], weights)
    torch.testing.assert_close(out.layers[0].output, attended)
    torch.testing.assert_close(out.features, features, rtol=1e-4, atol=1e-5)
    assert not torch.allclose(out.features, multi_head, atol=1e-4)  # the re-run is not the model's own forward


def test_variant_switch_changes_the_scores(tiny_model, batch):
    images, tokens = batch
    feats = tiny_model.encode_image(images)[0]
    paper = GassScorer(variant="paper")(tiny_model.clip, tokens, feats)
    official = GassScorer(variant="official")(tiny_model.clip, tokens, feats)
    valid = valid_token_mask(tokens)
    assert not torch.allclose(paper, official)
    assert torch.all(official[~valid] == 0) and official.max() == pytest.approx(1.0)
    torch.testing.assert_close(official, GassScorer(variant="official")(tiny_model.clip, tokens, feats, one_pass=False))


def test_unknown_variant_is_refused():
    with pytest.raises(ValueError, match="model.gass.variant"):
        GassScorer(variant="grad-eclip")
