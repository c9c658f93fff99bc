"""Issue 22, fidelity: the official variant against hand-written references of the released formulas.

GASS's importance normalisation over every position, at least one masked token in both captions,
QuickGELU in the interaction encoder, random erasing filled with the mean, IRRA's learning-rate groups,
and TIC without the anchor's own image's captions as negatives.
"""

import math

import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from gadms.config import AugmentConfig, LossConfig, ModelConfig, OptimizerConfig, load_params
from gadms.data.pipeline import CLIP_MEAN, Pair, PairDataset, image_transform
from gadms.model.backbone import tokenizer
from gadms.model.gass import GassScorer, valid_token_mask
from gadms.model.interaction import QuickGELU
from gadms.model.losses import same_image_pairs, tic_loss
from gadms.model.retrieval import Architecture, PersonRetrievalModel, load_model, save_model
from gadms.model.step import TrainingStep
from gadms.model.text_tower import LayerInternals
from gadms.train.loop import Trainer
from gadms.train.param_groups import GroupRule
from gadms.train.recipes import finetune_settings
from gadms.train.settings import RunSettings
from tests.test_config import REPO

# -- 1. importance normalisation -------------------------------------------------------------------------------


def _padded_layer():
    """One caption [SOT, w1, w2, EOS, pad, pad], D = 2, one head; every position has a non-zero value."""
    key = torch.tensor([[0.5, 1.0], [1.0, 0.0], [0.5, 1.0], [2.0, 0.5], [-1.0, 0.2], [0.3, -1.0]])
    query = torch.zeros(6, 2)
    query[3] = torch.tensor([1.0, 0.0])
    value = torch.tensor([[1.0, 2.0], [1.0, 0.0], [0.0, 1.0], [2.0, -1.0], [0.5, 0.5], [-1.0, 1.0]])
    attention = torch.zeros(1, 1, 6, 6)
    attention[0, 0, 3] = torch.tensor([0.4, 0.2, 0.3, 0.1, 0.0, 0.0])
    layer = LayerInternals(query[None], key[None], value[None], attention, torch.zeros(1, 6, 2), torch.eye(2))
    grad = torch.zeros(1, 6, 2)
    grad[0, 3] = torch.tensor([1.0, 0.5])
    tokens = torch.tensor([[49406, 10, 11, 49407, 0, 0]])
    return grad, layer, tokens


def _released_layer_term(query, keys, values, attention_row, g, words):
    """The released formula written out position by position (plain floats, no vectorised code).

    w_n = min-max over all positions of cos(q_eos, k_n); s_n = w_n * <g, v_n>;
    term_n = s_n * a_n / (sum of s over EVERY position), on words only.
    """
    cosines = []
    for k in keys:
        dot = sum(qi * ki for qi, ki in zip(query, k))
        cosines.append(dot / (math.hypot(*query) * math.hypot(*k)))
    lo, hi = min(cosines), max(cosines)
    importance = [(c - lo) / (hi - lo) * sum(gi * vi for gi, vi in zip(g, v)) for c, v in zip(cosines, values)]
    total = sum(importance)
    return [imp * a / total if word else 0.0 for imp, a, word in zip(importance, attention_row, words)]


def test_official_importance_is_normalised_over_every_position():
    grad, layer, tokens = _padded_layer()
    valid = valid_token_mask(tokens)
    term = GassScorer(layers=1, scales=(1,), variant="official").layer_score(grad, layer, torch.tensor([3]), valid)
    expected = _released_layer_term(
        [1.0, 0.0], layer.key[0].tolist(), layer.value[0].tolist(), [0.4, 0.2, 0.3, 0.1, 0.0, 0.0], [1.0, 0.5],
        valid[0].tolist(),
    )  # fmt: skip
    torch.testing.assert_close(term[0], torch.tensor(expected))
    # over the words alone (the earlier reading) the terms would differ: the start, end and padding count
    cos = F.cosine_similarity(torch.tensor([[1.0, 0.0]]), layer.key[0], dim=-1)
    weight = (cos - cos.min()) / (cos.max() - cos.min())
    importance = weight * (layer.value[0] @ torch.tensor([1.0, 0.5]))
    words_only = importance * layer.attention[0, 0, 3] * valid[0] / (importance * valid[0]).sum()
    assert not torch.allclose(term[0], words_only)


def test_paper_variant_still_divides_the_attention_row_by_its_own_sum():
    grad, layer, tokens = _padded_layer()
    valid = valid_token_mask(tokens)
    term = GassScorer(layers=1, scales=(1,), variant="paper").layer_score(grad, layer, torch.tensor([3]), valid)
    dots = layer.key[0] @ torch.tensor([1.0, 0.0])  # q.k min-maxed over the words w1, w2 only
    lo, hi = dots[1:3].min(), dots[1:3].max()
    weight = torch.where(valid[0], (dots - lo) / (hi - lo), 0.0)
    importance = weight * (layer.value[0] @ torch.tensor([1.0, 0.5]))
    attn = layer.attention[0, 0, 3] * valid[0]
    torch.testing.assert_close(term[0], importance * attn / attn.sum())


# -- 2. at least one masked token in both captions --------------------------------------------------------------


@pytest.mark.parametrize("noise_too", [False, True])
def test_noise_at_least_one_masks_position_one_of_the_noise_caption(tiny_model, batch, noise_too):
    images, tokens = batch
    masking = {"score": "random", "alpha_noise": 0.0, "alpha_informative": 0.0, "mtp_at_least_one": True}
    cfg = ModelConfig(masking={**masking, "noise_at_least_one": noise_too})
    out = TrainingStep(cfg, LossConfig(), seed=0)(tiny_model, images, tokens)
    first_word = torch.zeros_like(tokens, dtype=torch.bool)
    first_word[:, 1] = True
    assert torch.equal(out.informative_mask, first_word)  # alpha 0: only the at-least-one rule masks
    assert torch.equal(out.noise_mask, first_word if noise_too else torch.zeros_like(first_word))


def test_official_file_masks_at_least_one_token_in_both_captions_and_defaults_in_none():
    full, demo = load_params(REPO / "params.full.yaml").model.masking, load_params(REPO / "params.yaml").model.masking
    assert (full.mtp_at_least_one, full.noise_at_least_one) == (True, True)
    assert (demo.mtp_at_least_one, demo.noise_at_least_one) == (False, False)


# -- 4. QuickGELU and the erasing fill ------------------------------------------------------------------------


def test_quick_gelu_is_clips_formula():
    x = torch.linspace(-4, 4, 9)
    torch.testing.assert_close(QuickGELU()(x), x * torch.sigmoid(1.702 * x))
    assert not torch.allclose(QuickGELU()(x), F.gelu(x))


@pytest.mark.parametrize("variant", ["project", "irra"])
def test_interaction_activation_switch_changes_the_mtp_loss_not_the_weights(batch, variant):
    images, tokens = batch
    losses, states = {}, {}
    for activation in ("gelu", "quick_gelu"):
        cfg = ModelConfig(interaction={"variant": variant, "activation": activation})
        torch.manual_seed(0)
        model = PersonRetrievalModel(Architecture.from_config(cfg))
        states[activation] = model.state_dict()
        out = TrainingStep(cfg, LossConfig(), seed=1)(model, images, tokens)
        losses[activation] = out.losses["mtp_loss"]
    assert states["gelu"].keys() == states["quick_gelu"].keys()
    assert all(torch.equal(states["gelu"][k], states["quick_gelu"][k]) for k in states["gelu"])
    assert not torch.isclose(losses["gelu"], losses["quick_gelu"])


def test_model_files_record_the_activation_only_when_it_is_not_gelu(tmp_path):
    assert "interaction_activation" not in Architecture().to_json()  # files of the default keep their bytes
    arch = Architecture(interaction_activation="quick_gelu", interaction_variant="irra")
    assert '"interaction_activation": "quick_gelu"' in arch.to_json()
    model = PersonRetrievalModel(arch)
    loaded = load_model(save_model(model, tmp_path / "m.safetensors"))
    assert loaded.arch == arch and isinstance(loaded.interaction.head[1], QuickGELU)
    assert Architecture.from_json(Architecture().to_json(), "x") == Architecture()


def _erased(fill: str, seed: int) -> torch.Tensor:
    augment = AugmentConfig(horizontal_flip=False, pad_crop=False, color_jitter=False, erasing_fill=fill)
    image = Image.new("RGB", (64, 128), (200, 30, 90))
    torch.manual_seed(seed)
    return image_transform(128, 64, augment)(image)


def test_erasing_fill_zero_or_clips_mean_after_normalisation():
    plain = image_transform(128, 64)(Image.new("RGB", (64, 128), (200, 30, 90)))
    seed = next(s for s in range(50) if not torch.equal(_erased("zero", s), plain))  # p = 0.5: a seed that erases
    zero, mean = _erased("zero", seed), _erased("mean", seed)
    erased = (zero != plain).any(dim=0)
    assert erased.any() and torch.equal(erased, (mean != plain).any(dim=0))  # the same region
    assert torch.all(zero[:, erased] == 0)
    torch.testing.assert_close(mean[:, erased], torch.tensor(CLIP_MEAN)[:, None].expand(3, int(erased.sum())))
    assert load_params(REPO / "params.full.yaml").augment.erasing_fill == "mean"
    assert load_params(REPO / "params.yaml").augment.erasing_fill == "zero"


# -- 6. IRRA's learning-rate groups ---------------------------------------------------------------------------


def _finetune_optimizer(tmp_path, params_file: str) -> tuple[PersonRetrievalModel, torch.optim.Optimizer, float]:
    params = load_params(REPO / params_file)
    settings = finetune_settings(params)
    model = PersonRetrievalModel(Architecture.from_config(params.model, num_identities=4))
    pairs = [Pair(tmp_path / f"{i}.jpg", "a man in a red coat", i % 4) for i in range(8)]
    dataset = PairDataset(pairs, image_transform(128, 64), tokenizer(params.model.context_length), seed=0)
    trainer = Trainer(
        model, dataset, settings, params.model, LossConfig(), tmp_path / "run", device="cpu", progress=False
    )
    return model, trainer.optimizer, params.finetune.lr


def _lr_and_decay(model, optimizer) -> dict[str, tuple[float, float]]:
    where = {id(p): g for g in optimizer.param_groups for p in g["params"]}
    return {n: (where[id(p)]["initial_lr"], where[id(p)]["weight_decay"]) for n, p in model.named_parameters()}


def test_irra_recipe_sets_the_optimizer_groups(tmp_path):
    model, optimizer, lr = _finetune_optimizer(tmp_path, "params.irra.yaml")
    got = _lr_and_decay(model, optimizer)
    wd = load_params(REPO / "params.irra.yaml").train.optimizer.weight_decay
    expected = {
        "interaction.cross_attention.in_proj_weight": (5 * lr, wd),  # the cross-modal encoder: 5x
        "interaction.transformer.layers.0.linear1.weight": (5 * lr, wd),
        "interaction.cross_attention.in_proj_bias": (2 * lr, 0.0),  # its biases: 2x, no decay
        "interaction.ln_query.weight": (lr, wd),  # IRRA's ln_pre/ln_post: the base rate
        "interaction.ln_query.bias": (2 * lr, 0.0),
        "interaction.head.3.weight": (5 * lr, wd),  # MLM head: 5x
        "interaction.head.3.bias": (5 * lr, 0.0),  # ... its bias too, without decay
        "classifier.weight": (5 * lr, wd),
        "classifier.bias": (5 * lr, 0.0),
        "clip.text_projection": (lr, wd),  # the towers: the base rate
    }
    for name, value in expected.items():
        assert got[name] == pytest.approx(value), name
    towers = {v for n, v in got.items() if n.startswith("clip.") and not n.endswith("bias")}
    assert towers == {(lr, wd)}
    assert {v for n, v in got.items() if n.startswith("clip.") and n.endswith("bias")} == {(2 * lr, 0.0)}
    p = load_params(REPO / "params.irra.yaml").finetune
    assert (p.id_loss, p.mlm_weight, p.sampler) == (True, 1.0, "random")


def test_default_finetuning_keeps_one_group(tmp_path):
    model, optimizer, lr = _finetune_optimizer(tmp_path, "params.yaml")
    assert len(optimizer.param_groups) == 1 and optimizer.param_groups[0]["initial_lr"] == lr
    assert finetune_settings(load_params(REPO / "params.yaml")).groups == GroupRule()
    assert RunSettings("gadms", 1, 2, OptimizerConfig(), 0).groups.uniform


# -- 7. TIC with one identity per caption ------------------------------------------------------------------------


def _perfect_caption_batch(images: int = 4):
    """Two captions per image, each pair its own identity; a caption's feature is its image's (one-hot)."""
    feats = torch.eye(images).repeat_interleave(2, dim=0)  # rows 2i, 2i + 1: the captions of image i
    partner = feats.clone()  # each caption's partner: the other caption of its image, the same feature
    tokens = torch.arange(2 * images)[:, None].repeat(1, 3)  # caption 2i + j's token ids
    partner_tokens = tokens.view(images, 2, 3).flip(1).reshape(2 * images, 3)
    return feats, partner, torch.arange(2 * images), tokens, partner_tokens


def test_tic_with_perfect_features_goes_to_zero_once_the_images_own_captions_are_not_negatives():
    feats, partner, ids, tokens, partner_tokens = _perfect_caption_batch()
    same = same_image_pairs(tokens, partner_tokens)
    assert torch.equal(same, torch.eye(4, dtype=torch.bool).repeat_interleave(2, 0).repeat_interleave(2, 1))
    before = tic_loss(feats, partner, ids, 0.02, 16)
    after = tic_loss(feats, partner, ids, 0.02, 16, same_image=same)
    assert before.item() >= math.log(3) - 1e-4  # the other caption of the image, twice, as a negative
    assert after.item() < 1e-6


def test_same_image_pairs_follow_partners_round_images_of_more_captions():
    # image A: captions 0, 1, 2, 3 (cyclic partners), image B: captions 4, 5
    tokens = torch.arange(6)[:, None].repeat(1, 3)
    partner_tokens = tokens[[1, 2, 3, 0, 5, 4]]
    same = same_image_pairs(tokens, partner_tokens)
    image = torch.tensor([0, 0, 0, 0, 1, 1])
    assert torch.equal(same, image[:, None] == image[None, :])  # 0 and 2 share no caption: linked through 1


def test_tic_step_with_one_identity_per_caption_leaves_the_image_out(tiny_model, batch, tok):
    """In the step: captions 0 and 1 of one image, 2 and 3 of another; identities per caption."""
    images, tokens = batch
    partners = tokens[[1, 0, 3, 2]]
    cfg = LossConfig(tic={"enabled": True, "weight": 1.0})
    step = TrainingStep(ModelConfig(masking={"score": "none"}), cfg, seed=0)
    out = step(tiny_model, images, tokens, identities=torch.arange(4), partner_tokens=partners)
    with torch.no_grad():
        text, partner = tiny_model.encode_text(tokens), tiny_model.encode_text(partners)
    same = torch.tensor([[1, 1, 0, 0], [1, 1, 0, 0], [0, 0, 1, 1], [0, 0, 1, 1]], dtype=torch.bool)
    expected = tic_loss(text, partner, torch.arange(4), cfg.temperature, 16, same_image=same)
    torch.testing.assert_close(out.losses["tic_loss"].detach(), expected)
