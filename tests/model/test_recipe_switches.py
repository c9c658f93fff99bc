"""The official code's masking, timing, replacement and MTP-encoder switches (issue 14, rows 1 and 6-8)."""

import math

import pytest
import torch

from gadms.config import LossConfig, ModelConfig
from gadms.model.backbone import MASK_TOKEN_ID
from gadms.model.gass import valid_token_mask
from gadms.model.interaction import IrraInteractionEncoder
from gadms.model.masking import ensure_one_masked, informative_mask_probability, noise_mask_probability, replace_tokens
from gadms.model.retrieval import Architecture, PersonRetrievalModel
from gadms.model.score_memory import ScoreMemory
from gadms.model.step import TrainingStep
from gadms.model.text_tower import encode_text


def _cfg(**masking) -> ModelConfig:
    return ModelConfig(masking=masking)


def test_official_midpoints_both_switch_at_s_one_tenth():
    """slope 20, gamma_n 0.9 on 1 - s, gamma_i 0.1 on s: both probabilities are alpha / 2 at s = 0.1."""
    s = torch.tensor([0.0, 0.1, 0.5, 1.0])
    noise = noise_mask_probability(s, 0.2, 20.0, 0.9)
    informative = informative_mask_probability(s, 0.3, 20.0, 0.1)
    for i, si in enumerate(s.tolist()):
        assert noise[i].item() == pytest.approx(0.2 / (1 + math.exp(-20 * ((1 - si) - 0.9))), rel=1e-5)
        assert informative[i].item() == pytest.approx(0.3 / (1 + math.exp(-20 * (si - 0.1))), rel=1e-5)
    assert noise[1].item() == pytest.approx(0.1) and informative[1].item() == pytest.approx(0.15)
    # at s = 0.5 the paper's single midpoint gives alpha / 2; the official curve has long switched
    assert noise[2].item() < 0.001 and informative[2].item() > 0.299


def test_midpoints_are_separate_switches(tiny_model, batch):
    images, tokens = batch

    def masks(**masking):
        step = TrainingStep(_cfg(score="random", **masking), LossConfig(), seed=3)
        out = step(tiny_model, images, tokens)
        return out.noise_mask, out.informative_mask

    noise, informative = masks()
    noise_moved, informative_same = masks(noise_midpoint=0.9)
    assert not torch.equal(noise, noise_moved) and torch.equal(informative, informative_same)
    noise_same, informative_moved = masks(informative_midpoint=0.1)
    assert torch.equal(noise, noise_same) and not torch.equal(informative, informative_moved)


def test_bert_replacement_is_80_10_10_and_mask_rule_is_the_mask_token():
    tokens = torch.randint(1, 40000, (200, 50))
    tokens[:, 0], tokens[:, -1] = 49406, 49407
    mask = valid_token_mask(tokens)
    g = torch.Generator().manual_seed(0)
    assert torch.equal(replace_tokens(tokens, mask, "mask", g)[mask], torch.full((int(mask.sum()),), MASK_TOKEN_ID))
    out = replace_tokens(tokens, mask, "bert", g)
    n = int(mask.sum())
    to_mask = (out == MASK_TOKEN_ID) & mask
    kept = (out == tokens) & mask
    random = mask & ~to_mask & ~kept
    assert to_mask.sum() / n == pytest.approx(0.8, abs=0.01)
    assert kept.sum() / n == pytest.approx(0.1, abs=0.01)  # (a random draw equal to the token counts as kept)
    assert random.sum() / n == pytest.approx(0.1, abs=0.01)
    assert out[random].min() >= 1 and out[random].max() < MASK_TOKEN_ID  # word tokens, [EOS] stays the argmax
    assert torch.equal(out[~mask], tokens[~mask])


def test_ensure_one_masked_picks_position_one_of_empty_captions_only():
    tokens = torch.tensor([[49406, 5, 6, 49407, 0], [49406, 5, 6, 7, 49407], [49406, 49407, 0, 0, 0]])
    mask = torch.tensor([[False] * 5, [False, False, False, True, False], [False] * 5])
    out = ensure_one_masked(mask, tokens)
    expected = torch.tensor([[False, True, False, False, False], [False, False, False, True, False], [False] * 5])
    assert torch.equal(out, expected)  # the empty caption (no words) gets nothing


def test_replacement_and_at_least_one_switches_change_the_step(tiny_model, batch):
    images, tokens = batch
    loss = LossConfig(itc={"enabled": False})

    def run(**masking):
        return TrainingStep(_cfg(score="random", **masking), loss, seed=5)(tiny_model, images, tokens)

    base, bert = run(), run(replacement="bert")
    assert torch.equal(base.noise_mask, bert.noise_mask)  # same masks, different replacement
    assert not torch.isclose(base.total, bert.total)
    none = run(alpha_informative=0.0)
    forced = run(alpha_informative=0.0, mtp_at_least_one=True)
    assert "mtp_loss" not in none.losses and "mtp_loss" in forced.losses
    assert forced.informative_mask.sum(dim=1).tolist() == [1, 1, 1, 1]
    assert forced.informative_mask[:, 1].all()


def test_previous_epoch_timing_uses_initial_then_stored_scores(tiny_model, batch):
    images, tokens = batch
    valid = valid_token_mask(tokens)
    indices = torch.tensor([7, 3, 9, 1])
    step = TrainingStep(_cfg(score_timing="previous_epoch", initial_score=0.85), LossConfig(), seed=0)
    first = step(tiny_model, images, tokens, indices=indices, epoch=0)
    torch.testing.assert_close(first.scores, 0.85 * valid.float())  # epoch 1: every word scores 0.85
    fresh = step.token_scores(tiny_model, tokens, tiny_model.encode_image(images)[0])
    again = step(tiny_model, images, tokens, indices=indices, epoch=0)  # same epoch: still not readable
    torch.testing.assert_close(again.scores, 0.85 * valid.float())
    second = step(tiny_model, images.flip(0), tokens.flip(0), indices=indices.flip(0), epoch=1)
    # stored per caption: row r now shows caption indices.flip(0)[r]'s epoch-0 scores (float16)
    torch.testing.assert_close(second.scores, fresh.flip(0), atol=1e-3, rtol=0)
    fresh_step = TrainingStep(_cfg(), LossConfig(), seed=0)(tiny_model, images, tokens, indices=indices, epoch=0)
    masked_fresh = fresh_step.noise_mask | fresh_step.informative_mask
    assert not torch.equal(masked_fresh, first.noise_mask | first.informative_mask)
    with pytest.raises(ValueError, match="score_timing previous_epoch"):
        step(tiny_model, images, tokens)


def test_score_memory_round_trips_through_its_state():
    memory = ScoreMemory(0.5)
    tokens = torch.tensor([[49406, 5, 6, 49407], [49406, 8, 49407, 0]])
    memory.store(torch.tensor([4, 2]), torch.tensor([[0, 0.25, 1.0, 0], [0, 0.75, 0, 0]]))
    memory.start_epoch(1)
    memory.store(torch.tensor([4]), torch.tensor([[0, 1.0, 1.0, 0]]))
    copy = ScoreMemory(0.5)
    copy.load_state_dict(memory.state_dict())
    # caption 4: epoch 0's scores (epoch 1's are not readable in epoch 1); caption 11: nothing stored
    for m in (memory, copy):
        torch.testing.assert_close(
            m.lookup(torch.tensor([2, 4, 11]), tokens[[1, 0, 0]]),
            torch.tensor([[0, 0.75, 0, 0], [0, 0.25, 1.0, 0], [0, 0.5, 0.5, 0]]),
        )


def test_irra_encoder_sees_projected_tokens_with_cls_and_has_no_residual(batch):
    images, tokens = batch
    torch.manual_seed(0)
    irra = PersonRetrievalModel(Architecture.from_config(ModelConfig(interaction={"variant": "irra"})))
    torch.manual_seed(0)
    project = PersonRetrievalModel(Architecture.from_config(ModelConfig()))
    assert isinstance(irra.interaction, IrraInteractionEncoder) and irra.interaction.ln_query.normalized_shape == (64,)
    with torch.no_grad():
        feats, patches = irra.encode_image(images)
        states = encode_text(irra.clip, tokens).tokens
        other_cls = torch.randn_like(feats)
        # the image's CLS feature is part of the IRRA encoder's memory, not of the project's
        assert not torch.allclose(irra.fuse(states, feats, patches), irra.fuse(states, other_cls, patches))
        assert torch.equal(project.fuse(states, feats, patches), project.fuse(states, other_cls, patches))
        # no residual: with the cross-attention's output zeroed, the text cannot reach the prediction
        irra.interaction.cross_attention.out_proj.weight.zero_()
        fused = irra.fuse(states, feats, patches)
        torch.testing.assert_close(fused, fused[:1, :1].expand_as(fused))
        project.interaction.cross_attention.out_proj.weight.zero_()
        kept = project.fuse(states, feats, patches)
        assert not torch.allclose(kept[0, 1], kept[0, 2])


def test_irra_initialisation_scales():
    enc = IrraInteractionEncoder(width=256, heads=4, layers=4, vocab_size=100)
    attn_std, proj_std, fc_std = 256**-0.5, 256**-0.5 * 8**-0.5, 512**-0.5
    assert enc.cross_attention.in_proj_weight.std().item() == pytest.approx(attn_std, rel=0.05)
    assert enc.transformer.layers[0].linear1.weight.std().item() == pytest.approx(fc_std, rel=0.05)
    assert enc.transformer.layers[0].linear2.weight.std().item() == pytest.approx(proj_std, rel=0.05)


def test_interaction_variant_changes_the_mtp_loss(batch):
    images, tokens = batch
    losses = {}
    for variant in ("project", "irra"):
        cfg = ModelConfig(interaction={"variant": variant}, masking={"score": "random"})
        torch.manual_seed(0)
        model = PersonRetrievalModel(Architecture.from_config(cfg))
        losses[variant] = TrainingStep(cfg, LossConfig(), seed=1)(model, images, tokens).losses["mtp_loss"]
    assert not torch.isclose(losses["project"], losses["irra"])


def test_tic_enabled_changes_the_step_loss_and_gradients(tiny_model, batch, tok):
    images, tokens = batch
    partners = tok(["", "A woman in a green coat.", "Someone with a yellow bag.", "A guy in a gray hoodie."])
    partners[0] = tokens[0]  # caption 0 has no partner: left out of TIC
    grads, totals = {}, {}
    for enabled in (False, True):
        cfg = LossConfig(tic={"enabled": enabled, "weight": 0.5})
        tiny_model.zero_grad(set_to_none=True)
        step = TrainingStep(ModelConfig(masking={"score": "none"}), cfg, seed=0)
        out = step(tiny_model, images, tokens, partner_tokens=partners)
        out.total.backward()
        totals[enabled], grads[enabled] = out, tiny_model.clip.text_projection.grad.clone()
    tiny_model.zero_grad(set_to_none=True)
    assert "tic_loss" not in totals[False].losses and totals[True].losses["tic_loss"] > 0
    torch.testing.assert_close(totals[True].total, totals[False].total + 0.5 * totals[True].losses["tic_loss"])
    assert not torch.allclose(grads[True], grads[False])
