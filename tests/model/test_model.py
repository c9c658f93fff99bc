"""Backbones, text-tower internals, weights I/O, the training step and the token-score figure."""

import pickle

import pytest
import torch
from PIL import Image

from gadms.config import LossConfig, ModelConfig
from gadms.model.backbone import BackboneError, build_clip, load_pretrained
from gadms.model.figures import token_score_figure, word_scores
from gadms.model.retrieval import Architecture, PersonRetrievalModel, load_model, save_model
from gadms.model.step import TrainingStep, count_valid
from gadms.model.text_tower import encode_text, text_layers


def test_shapes(tiny_model, batch):
    images, tokens = batch
    feats, patches = tiny_model.encode_image(images)
    assert feats.shape == (4, 64) and patches.shape == (4, 8 * 4, 64)
    assert tiny_model.encode_text(tokens).shape == (4, 64)
    fused = tiny_model.interaction(encode_text(tiny_model.clip, tokens).tokens, patches)
    assert fused.shape == (4, 77, 64)
    mask = torch.zeros(4, 77, dtype=torch.bool)
    mask[0, 2] = mask[3, 5] = True
    assert tiny_model.interaction.predict(fused, mask).shape == (2, 49408)


def test_internals_reproduce_open_clips_own_forward(tiny_model, batch):
    _, tokens = batch
    with torch.no_grad():
        reference = tiny_model.clip.encode_text(tokens)
        out = encode_text(tiny_model.clip, tokens, internals=text_layers(tiny_model.clip))
    torch.testing.assert_close(out.features, reference, rtol=1e-5, atol=1e-5)
    assert len(out.layers) == 8
    for layer in out.layers:
        attn = layer.attention
        assert attn.shape == (4, 4, 77, 77)
        torch.testing.assert_close(attn.sum(-1), torch.ones(4, 4, 77))
        assert torch.all(attn.triu(diagonal=1) == 0)  # causal: no token looks ahead
    # the attention output equals the block's own nn.MultiheadAttention on the block's input
    block = tiny_model.clip.transformer.resblocks[-1]
    seen = {}
    handle = block.register_forward_pre_hook(lambda module, args: seen.update(x=args[0]))
    with torch.no_grad():
        tiny_model.clip.encode_text(tokens)
        handle.remove()
        own = block.attention(block.ln_1(seen["x"]), attn_mask=tiny_model.clip.attn_mask)
    torch.testing.assert_close(out.layers[-1].output, own, rtol=1e-5, atol=1e-5)


def test_too_many_gass_layers_is_a_clear_error(tiny_model, batch):
    with pytest.raises(ValueError, match="model.gass.layers: 9 exceeds the text tower.s 8 layers"):
        encode_text(tiny_model.clip, batch[1], internals=9)


def test_weights_round_trip_through_save_and_load(tiny_model, batch, tmp_path):
    path = save_model(tiny_model, tmp_path / "model.safetensors")
    loaded = load_model(path)
    assert loaded.arch == tiny_model.arch
    for (name, a), (_, b) in zip(tiny_model.state_dict().items(), loaded.state_dict().items()):
        assert torch.equal(a, b), name
    images, tokens = batch
    torch.testing.assert_close(loaded.embed_images(images), tiny_model.embed_images(images))
    torch.testing.assert_close(loaded.embed_texts(tokens), tiny_model.embed_texts(tokens))


def test_pretrained_open_clip_checkpoint_with_position_embedding_resize(tmp_path):
    source = build_clip("tiny", image_size=(224, 224))  # 14x14 grid, like CLIP at 224
    torch.save({"state_dict": {"module." + k: v for k, v in source.state_dict().items()}}, tmp_path / "ckpt.pt")
    target = build_clip("tiny", image_size=(128, 64))  # 8x4 grid
    load_pretrained(target, str(tmp_path / "ckpt.pt"), arch="tiny")
    assert target.visual.positional_embedding.shape == (8 * 4 + 1, 64)
    torch.testing.assert_close(target.visual.positional_embedding[0], source.visual.positional_embedding[0])
    torch.testing.assert_close(target.token_embedding.weight, source.token_embedding.weight)


def test_pretrained_safetensors_and_torchscript(tmp_path):
    from safetensors.torch import save_file

    source = build_clip("tiny")
    save_file({k: v.contiguous() for k, v in source.state_dict().items()}, str(tmp_path / "w.safetensors"))
    target = build_clip("tiny")
    load_pretrained(target, str(tmp_path / "w.safetensors"), arch="tiny")
    torch.testing.assert_close(target.text_projection, source.text_projection)

    class Holder(torch.nn.Module):  # a TorchScript archive with CLIP's parameter names, like OpenAI's .pt
        def __init__(self, clip):
            super().__init__()
            for name, child in clip.named_children():
                self.add_module(name, child)
            for name, param in clip.named_parameters(recurse=False):
                self.register_parameter(name, param)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x

    torch.jit.script(Holder(build_clip("tiny"))).save(str(tmp_path / "openai.pt"))
    scripted = torch.jit.load(str(tmp_path / "openai.pt"))
    target = build_clip("tiny")
    load_pretrained(target, str(tmp_path / "openai.pt"), arch="tiny")
    torch.testing.assert_close(target.positional_embedding, scripted.state_dict()["positional_embedding"])


class _Payload:
    def __reduce__(self):
        return (print, ("this must never run",))


def test_checkpoints_that_need_arbitrary_pickle_are_refused(tmp_path):
    with open(tmp_path / "evil.pt", "wb") as f:
        pickle.dump({"state_dict": _Payload()}, f)
    with pytest.raises(BackboneError, match=r"evil\.pt: refused: loading it would run code \(it calls builtins\.print"):
        load_pretrained(build_clip("tiny"), str(tmp_path / "evil.pt"), arch="tiny")


def test_missing_or_mismatched_weights_are_clear_errors(tmp_path):
    with pytest.raises(BackboneError, match="file .*missing.pt not found"):
        load_pretrained(build_clip("tiny"), str(tmp_path / "missing.pt"))
    with pytest.raises(BackboneError, match="neither a file nor an open_clip tag"):
        load_pretrained(build_clip("tiny"), "no-such-tag", arch="ViT-B-16")
    torch.save({"foo": torch.zeros(1)}, tmp_path / "other.pt")
    with pytest.raises(BackboneError, match="weights do not fit this backbone"):
        load_pretrained(build_clip("tiny"), str(tmp_path / "other.pt"))


@pytest.mark.slow
def test_vit_b_16_is_the_papers_shape():
    model = build_clip("ViT-B-16")
    assert model.visual.grid_size == (24, 8)
    assert text_layers(model) == 12 and model.context_length == 77
    assert model.visual.positional_embedding.shape == (24 * 8 + 1, 768)


@pytest.mark.parametrize("score", ["none", "random", "cosine", "gass"])
def test_every_ablation_row_runs(tiny_model, batch, score):
    images, tokens = batch
    step = TrainingStep(ModelConfig(masking={"score": score}), LossConfig(), seed=0)
    out = step(tiny_model, images, tokens)
    assert "sdm_loss" in out.losses and torch.isfinite(out.total)
    if score == "none":
        assert out.scores is None and not out.noise_mask.any() and "mtp_loss" not in out.losses
    else:
        assert out.scores.shape == tokens.shape
    out.total.backward()
    tiny_model.zero_grad(set_to_none=True)


def test_gadms_step_total_and_switches(tiny_model, batch):
    images, tokens = batch
    cfg = ModelConfig(masking={"alpha_informative": 1.0, "alpha_noise": 1.0, "slope": 1.0})
    out = TrainingStep(cfg, LossConfig(itc={"enabled": False}), seed=0)(tiny_model, images, tokens)
    assert set(out.losses) == {"sdm_loss", "mtp_loss"}
    torch.testing.assert_close(out.total, out.losses["sdm_loss"] + 0.4 * out.losses["mtp_loss"])
    valid = out.scores > -1
    assert not (out.noise_mask & ~valid).any()
    loss_cfg = LossConfig(mtp={"enabled": False}, itc={"enabled": True, "weight": 0.5}, tic={"enabled": True})
    out = TrainingStep(cfg, loss_cfg, seed=0)(
        tiny_model, images, tokens, identities=torch.tensor([0, 1, 2, 3]), partner_tokens=tokens.flip(0)
    )
    assert set(out.losses) == {"sdm_loss", "itc_loss", "tic_loss"}
    with pytest.raises(ValueError, match="every loss term is disabled"):
        TrainingStep(cfg, LossConfig(sdm={"enabled": False}, mtp={"enabled": False}, itc={"enabled": False}))(
            tiny_model, images, tokens
        )


def test_identity_loss_needs_a_classifier(batch):
    model = PersonRetrievalModel(Architecture(num_identities=7))
    images, tokens = batch
    out = TrainingStep(ModelConfig(), LossConfig(id={"enabled": True}), mode="irra")(
        model, images, tokens, identities=torch.tensor([0, 3, 6, 3])
    )
    assert "id_loss" in out.losses and out.losses["id_loss"].item() > 0


def test_steps_are_reproducible_from_the_seed(tiny_model, batch):
    images, tokens = batch
    a = TrainingStep(ModelConfig(), LossConfig(), seed=5)(tiny_model, images, tokens)
    b = TrainingStep(ModelConfig(), LossConfig(), seed=5)(tiny_model, images, tokens)
    assert torch.equal(a.noise_mask, b.noise_mask) and torch.equal(a.informative_mask, b.informative_mask)
    torch.testing.assert_close(a.total, b.total)


def test_irra_mode_masks_about_fifteen_percent(tiny_model, batch):
    images, tokens = batch
    step = TrainingStep(ModelConfig(), LossConfig(), mode="irra", seed=0)
    rates = []
    for _ in range(30):
        out = step(tiny_model, images, tokens)
        rates.append(out.informative_mask.sum().item() / count_valid(tokens))
    assert sum(rates) / len(rates) == pytest.approx(0.15, abs=0.04)


def test_token_score_figure(tok, tmp_path):
    tokens = tok(["A man in a red t-shirt.", "A woman with blue jeans."])
    scores = torch.linspace(0, 1, 77).repeat(2, 1)
    words = word_scores(tokens[0].tolist(), scores[0].tolist(), tok.decoder)
    assert [w for w, _ in words] == ["a", "man", "in", "a", "red", "t", "-", "shirt", "."]
    path = token_score_figure(tokens, scores, tok.decoder, tmp_path / "scores.png", wrong_words=[{4}, set()])
    image = Image.open(path)
    assert image.format == "PNG" and image.width > 400
