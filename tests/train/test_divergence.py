"""A run whose loss or gradients stop being finite stops at that step with one line naming the step and the
term; the last good checkpoint stays as it was and no model with non-finite weights is written."""

import math
import re

import pytest
import torch
from _common import MODEL, pairs
from typer.testing import CliRunner

from gadms.cli import app
from gadms.config import AugmentConfig, LossConfig, OptimizerConfig, SynthConfig
from gadms.data.pipeline import PairDataset, image_transform
from gadms.model.backbone import tokenizer
from gadms.model.retrieval import Architecture, PersonRetrievalModel, save_model
from gadms.synth.benchmark import write_benchmark
from gadms.train.divergence import TrainingDiverged
from gadms.train.loop import CHECKPOINT, FINAL_MODEL, Trainer
from gadms.train.settings import RunSettings


def _trainer(
    tmp_path, grad_clip: float = 5.0, epochs: int = 2, on_epoch=None, lr: float = 1e-4, every: int = 0
) -> Trainer:
    torch.manual_seed(0)
    model = PersonRetrievalModel(Architecture.from_config(MODEL))
    dataset = PairDataset(pairs(tmp_path)[:24], image_transform(128, 64, AugmentConfig()), tokenizer(32), seed=0)
    settings = RunSettings(
        "sdm", epochs, 8, OptimizerConfig(lr=lr), 0, grad_clip=grad_clip, checkpoint_every_steps=every
    )
    return Trainer(
        model,
        dataset,
        settings,
        MODEL,
        LossConfig(itc={"enabled": False}, mtp={"enabled": False}),
        tmp_path / "run",
        device="cpu",
        progress=False,
        on_epoch=on_epoch,
    )


def test_overflow_in_a_later_epoch_stops_there_and_keeps_the_last_good_checkpoint(tmp_path):
    saved = {}

    def blow_up_after_first_epoch(log):
        saved["checkpoint"] = (tmp_path / "run" / CHECKPOINT).read_bytes()
        trainer.scheduler.base_lrs = [1e30]  # from now on every step overflows the weights

    trainer = _trainer(tmp_path, on_epoch=blow_up_after_first_epoch)
    batches = trainer.feed.batches
    with pytest.raises(TrainingDiverged) as info:
        trainer.fit()
    message = str(info.value)
    assert "\n" not in message
    # the first step at 1e30 leaves a finite loss but broken weights; a following batch's loss shows it
    found = re.match(r"training diverged at epoch 2, batch (\d+) \(step (\d+)\): sdm_loss is nan", message)
    assert found and int(found.group(1)) > 1 and int(found.group(2)) == batches + int(found.group(1)), message
    assert f"last good checkpoint kept: {tmp_path / 'run' / CHECKPOINT}" in message
    assert (tmp_path / "run" / CHECKPOINT).read_bytes() == saved["checkpoint"]
    assert not (tmp_path / "run" / FINAL_MODEL).exists()
    assert torch.load(tmp_path / "run" / CHECKPOINT, weights_only=True)["epoch"] == 0


@pytest.mark.parametrize("grad_clip", [5.0, 0.0], ids=["clipped", "unclipped"])
def test_non_finite_gradient_stops_at_the_first_step(tmp_path, grad_clip):
    trainer = _trainer(tmp_path, grad_clip=grad_clip)
    before = trainer.model.clip.text_projection.detach().clone()
    trainer.model.clip.text_projection.register_hook(lambda grad: grad * math.inf)  # the loss stays finite
    expected = r"^training diverged at epoch 1, batch 1 \(step 1\): gradient norm of the total loss is (inf|nan)"
    with pytest.raises(TrainingDiverged, match=expected + "; stopped, no checkpoint was written"):
        trainer.fit()
    assert torch.equal(trainer.model.clip.text_projection.detach(), before)  # the step was not applied
    assert not (tmp_path / "run").exists() or not any((tmp_path / "run").iterdir())


def test_a_model_with_non_finite_weights_is_never_written(tmp_path):
    model = PersonRetrievalModel(Architecture.from_config(MODEL))
    with torch.no_grad():
        model.clip.logit_scale.fill_(math.nan)
    with pytest.raises(ValueError, match=r"not written: 1 weight tensor\(s\) are not finite, e\.g\. clip\.logit_scale"):
        save_model(model, tmp_path / "m.safetensors")
    assert not (tmp_path / "m.safetensors").exists()


def test_cli_huge_learning_rate_is_one_line_and_writes_no_model(tmp_path):
    write_benchmark(tmp_path / "bench", 6, 0, SynthConfig(), progress=False)
    out = tmp_path / "run"
    sets = [
        "train.optimizer.lr=1e30",
        "train.batch_size=2",
        "train.epochs=1",
        "model.context_length=32",
        "train.num_workers=0",
    ]
    args = [
        "train",
        "pretrain",
        "--data",
        str(tmp_path / "bench"),
        "--format",
        "cuhk-pedes",
        "--out",
        str(out),
        "--no-track",
        "--device",
        "cpu",
    ]
    result = CliRunner().invoke(app, args + [arg for s in sets for arg in ("--set", s)])
    assert result.exit_code == 2, result.output
    last = result.output.strip().splitlines()[-1]
    assert re.match(r"error: training diverged at epoch 1, batch (\d+) \(step \1\): \w+ is nan; stopped", last), last
    assert not (out / FINAL_MODEL).exists()
    result = CliRunner().invoke(app, ["params", "show", "--set", "train.optimizer.lr=inf"])
    assert result.exit_code == 2 and "finite number" in result.output


def test_a_step_that_leaves_overflowing_weights_writes_no_checkpoint(tmp_path):
    """At lr 1e30 the first step's loss is finite but its update leaves weights of 1e30: the checkpoint of that
    step is refused (nothing written), not kept as the 'last good' one."""
    trainer = _trainer(tmp_path, epochs=1, lr=1e30, every=1)
    expected = r"^training diverged at epoch 1, batch 1 \(step 1\): weights are not finite \(\d+ tensor\(s\) hold inf"
    with pytest.raises(TrainingDiverged, match=expected + r".*; stopped, no checkpoint was written") as info:
        trainer.fit()
    assert "\n" not in str(info.value)
    assert not (tmp_path / "run" / CHECKPOINT).exists() and not (tmp_path / "run" / FINAL_MODEL).exists()


def test_mid_epoch_checkpoints_keep_the_last_good_one_when_weights_overflow(tmp_path):
    saved = {}

    def blow_up_after_first_epoch(log):
        saved["checkpoint"] = (tmp_path / "run" / CHECKPOINT).read_bytes()
        trainer.scheduler.base_lrs = [1e30]  # from now on every update overflows the weights
        trainer.optimizer.param_groups[0]["lr"] = 1e30

    trainer = _trainer(tmp_path, on_epoch=blow_up_after_first_epoch, every=1)
    batches = trainer.feed.batches
    with pytest.raises(TrainingDiverged) as info:
        trainer.fit()
    message = str(info.value)
    assert message.startswith(f"training diverged at epoch 2, batch 1 (step {batches + 1}): weights are not finite")
    assert f"last good checkpoint kept: {tmp_path / 'run' / CHECKPOINT}" in message
    assert (tmp_path / "run" / CHECKPOINT).read_bytes() == saved["checkpoint"]
    kept = torch.load(tmp_path / "run" / CHECKPOINT, weights_only=True)
    assert (kept["epoch"], kept["batch"]) == (0, None)
    assert max(float(t.abs().max()) for t in kept["model"].values() if t.is_floating_point()) < 1e3
    resumed = _trainer(tmp_path, every=1)  # the kept checkpoint trains on at a sane learning rate
    resumed.fit(resume=True)
    assert (tmp_path / "run" / FINAL_MODEL).is_file()
