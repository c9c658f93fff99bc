"""Issue 14 in training: TIC really runs, and the official recipe's run-level switches (rows 6, 9-11) act."""

from pathlib import Path

import pytest
import torch

from gadms.config import AugmentConfig, LossConfig, ModelConfig, OptimizerConfig, params_from_dict
from gadms.data.pipeline import Pair, PairDataset, image_transform, open_image, with_partners
from gadms.model.backbone import tokenizer
from gadms.model.retrieval import Architecture, PersonRetrievalModel
from gadms.model.score_memory import ScoreMemory
from gadms.train.loop import CHECKPOINT, Trainer
from gadms.train.recipes import finetune_loss, finetune_settings, pretrain_pairs
from gadms.train.settings import RunSettings

MODEL = ModelConfig(context_length=32)
NO_ITC = {"itc": {"enabled": False}}


def _fit(
    out: Path,
    pairs,
    loss: LossConfig,
    model_cfg: ModelConfig = MODEL,
    epochs: int = 1,
    partners: bool = False,
    resume: bool = False,
    stop_after=None,
    **settings,
):
    """A tiny seeded run: returns the model, its trainer and the epoch logs."""
    torch.manual_seed(0)
    model = PersonRetrievalModel(Architecture.from_config(model_cfg))
    dataset = PairDataset(pairs, image_transform(128, 64, AugmentConfig()), tokenizer(32), seed=0, partners=partners)
    optimizer = OptimizerConfig(lr=1e-4, eps=1e-3)
    run = RunSettings(mode="gadms", epochs=epochs, batch_size=8, optimizer=optimizer, warmup_epochs=1, **settings)
    trainer = Trainer(model, dataset, run, model_cfg, loss, out, device="cpu", progress=False)
    return model, trainer, trainer.fit(resume=resume, stop_after=stop_after)


def _partnered(synth_pairs):
    return with_partners(synth_pairs[:24], [p.identity for p in synth_pairs[:24]])


def test_with_partners_gives_the_other_caption_of_the_same_image():
    pairs = [Pair(b"a", "one", 0), Pair(b"b", "alone", 1), Pair(b"a", "two", 0), Pair(b"a", "three", 0)]
    out = with_partners(pairs, [0, 1, 0, 0])
    assert [p.partner for p in out] == ["two", None, "three", "one"]
    assert [(p.caption, p.identity) for p in out] == [(p.caption, p.identity) for p in pairs]


def test_trainer_feeds_partner_captions_so_tic_runs_and_changes_the_weights(tmp_path, synth_pairs):
    pairs = _partnered(synth_pairs)
    off, _, logs_off = _fit(tmp_path / "off", pairs, LossConfig(**NO_ITC))
    on, _, logs_on = _fit(tmp_path / "on", pairs, LossConfig(tic={"enabled": True}, **NO_ITC), partners=True)
    assert "tic_loss" not in logs_off[0].losses and logs_on[0].losses["tic_loss"] > 0
    assert not torch.equal(off.clip.text_projection, on.clip.text_projection)


def test_pretrain_pairs_identity_per_caption_or_per_image(synth_pairs):
    by_image = params_from_dict({})
    by_caption = params_from_dict({"train": {"identity": "caption"}})
    image_ids = [p.identity for p in pretrain_pairs(by_image, synth_pairs)]
    caption_ids = [p.identity for p in pretrain_pairs(by_caption, synth_pairs)]
    assert image_ids == [p.identity for p in synth_pairs] and len(set(image_ids)) < len(image_ids)
    assert caption_ids == list(range(len(synth_pairs)))
    assert all(p.partner for p in pretrain_pairs(by_caption, synth_pairs))  # every synthetic image has two captions


def test_lr_steps_per_epoch_or_per_step(tmp_path, synth_pairs):
    pairs = synth_pairs[:24]
    _, per_step, logs_step = _fit(tmp_path / "s", pairs, LossConfig(**NO_ITC), epochs=2, lr_step="step")
    _, per_epoch, logs_epoch = _fit(tmp_path / "e", pairs, LossConfig(**NO_ITC), epochs=2, lr_step="epoch")
    # warm-up factor 0.1 -> 1 over one epoch: per epoch, epoch 1 runs at 0.1 lr throughout and epoch 2 at the full lr
    assert per_epoch.scheduler.last_epoch == 2 and per_step.scheduler.last_epoch == 2 * 3
    assert logs_epoch[0].lr == pytest.approx(1e-5) and logs_epoch[1].lr == pytest.approx(1e-4)
    assert logs_step[0].lr != pytest.approx(logs_epoch[0].lr)


def test_previous_epoch_scores_resume_exactly(tmp_path, synth_pairs):
    pairs = synth_pairs[:16]
    cfg = ModelConfig(context_length=32, masking={"score_timing": "previous_epoch"})
    straight, _, _ = _fit(tmp_path / "a", pairs, LossConfig(**NO_ITC), cfg, epochs=2)
    _fit(tmp_path / "b", pairs, LossConfig(**NO_ITC), cfg, epochs=2, stop_after=1)
    resumed, trainer, _ = _fit(tmp_path / "b", pairs, LossConfig(**NO_ITC), cfg, epochs=2, resume=True)
    entry = torch.load(tmp_path / "b" / CHECKPOINT, weights_only=True)["score_memory"]
    copy = ScoreMemory(width=32)  # the final checkpoint's copy of the score store
    copy.open(tmp_path / "b" / entry["file"])
    copy.start_epoch(1)
    assert copy.readable_count() == 16  # epoch 1's scores, restored from the checkpoint
    for (name, a), (_, b) in zip(straight.state_dict().items(), resumed.state_dict().items()):
        assert torch.equal(a, b), name
    fresh, _, _ = _fit(tmp_path / "c", pairs, LossConfig(**NO_ITC), epochs=2)
    assert not torch.equal(fresh.clip.text_projection, straight.clip.text_projection)


def test_finetune_recipe_switches():
    official = params_from_dict({"finetune": {"sampler": "random", "mlm_weight": 1.0, "id_loss": True}})
    default = params_from_dict({})
    assert finetune_settings(official).sampler == "random" and finetune_settings(default).sampler == "identity"
    assert (finetune_loss(official).mtp.weight, finetune_loss(official).id.enabled) == (1.0, True)
    assert (finetune_loss(default).mtp.weight, finetune_loss(default).id.enabled) == (0.4, False)


def test_erasing_area_bound_changes_the_augmented_image(synth_pairs):
    image = open_image(synth_pairs[0].image)
    erasing_only = {"horizontal_flip": False, "pad_crop": False, "color_jitter": False}
    small = image_transform(128, 64, AugmentConfig(**erasing_only))
    large = image_transform(128, 64, AugmentConfig(**erasing_only, erasing_max_area=0.4))
    erased_small, erased_large = [], []
    for seed in range(20):
        torch.manual_seed(seed)
        erased_small.append(float((small(image) == 0).float().mean()))
        torch.manual_seed(seed)
        erased_large.append(float((large(image) == 0).float().mean()))
    assert max(erased_small) <= 0.2 + 1e-6 and max(erased_large) > 0.2
    assert sum(erased_large) > sum(erased_small)
