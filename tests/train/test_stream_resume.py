"""Streamed pre-training killed in the middle of an epoch and resumed ends bit for bit where a straight run does."""

import pytest
import torch
from _common import run_streaming

from gadms.model.score_memory import ScoreMemory
from gadms.train.loop import CHECKPOINT, FINAL_MODEL


@pytest.mark.slow
def test_resumed_mid_epoch_with_two_workers_equals_straight(tmp_path):
    straight, trainer = run_streaming(tmp_path / "a", epochs=2)
    assert trainer.steps_per_epoch == 5  # 46 pairs // global batch 8, known before reading any image
    run_streaming(tmp_path / "b", epochs=2, stop_after_steps=8)  # killed at step 8, in the middle of epoch 2
    state = torch.load(tmp_path / "b" / CHECKPOINT, weights_only=True)
    assert (state["epoch"], state["batch"]) == (1, 3) and state["ranks"][0]["feed"]
    assert not (tmp_path / "b" / FINAL_MODEL).exists()
    resumed, _ = run_streaming(tmp_path / "b", epochs=2, resume=True)
    for (name, a), (_, b) in zip(straight.state_dict().items(), resumed.state_dict().items()):
        assert torch.equal(a, b), name


@pytest.mark.slow
def test_restarting_the_epoch_instead_differs(tmp_path):
    """The check above can fail: resuming at the epoch's start (losing the stream position) gives other weights."""
    straight, _ = run_streaming(tmp_path / "a", epochs=2)
    run_streaming(tmp_path / "b", epochs=2, stop_after_steps=8)
    state = torch.load(tmp_path / "b" / CHECKPOINT, weights_only=True)
    state["batch"], state["ranks"][0]["feed"] = 0, {}
    torch.save(state, tmp_path / "b" / CHECKPOINT)
    resumed, _ = run_streaming(tmp_path / "b", epochs=2, resume=True)
    assert not torch.equal(straight.clip.text_projection, resumed.clip.text_projection)


@pytest.mark.slow
def test_official_recipe_streamed_resumes_mid_epoch_bit_exact(tmp_path):
    """Scores kept per caption id from the previous epoch (official timing) and TIC partners from the stream
    survive a mid-epoch kill: the resumed run ends where the straight one does, and TIC changes the result."""
    from gadms.config import LossConfig, ModelConfig

    official = ModelConfig(context_length=32, gass={"variant": "official"}, masking={"score_timing": "previous_epoch"})
    loss = LossConfig(itc={"enabled": False}, tic={"enabled": True})
    straight, trainer = run_streaming(tmp_path / "a", epochs=2, model_cfg=official, loss_cfg=loss, partners=True)
    entry = torch.load(tmp_path / "a" / CHECKPOINT, weights_only=True)["score_memory"]
    copy = ScoreMemory(width=32)  # the final checkpoint's copy of the score store
    copy.open(tmp_path / "a" / entry["file"])
    copy.start_epoch(1)
    assert copy.readable_count() == 40  # epoch 1's scores, keyed by stable caption ids (5 steps x 8)
    run_streaming(tmp_path / "b", epochs=2, stop_after_steps=8, model_cfg=official, loss_cfg=loss, partners=True)
    resumed, _ = run_streaming(tmp_path / "b", epochs=2, resume=True, model_cfg=official, loss_cfg=loss, partners=True)
    for (name, a), (_, b) in zip(straight.state_dict().items(), resumed.state_dict().items()):
        assert torch.equal(a, b), name
    no_tic = LossConfig(itc={"enabled": False}, tic={"enabled": False})
    other, _ = run_streaming(tmp_path / "c", epochs=2, model_cfg=official, loss_cfg=no_tic)
    assert not torch.equal(other.clip.text_projection, straight.clip.text_projection)
