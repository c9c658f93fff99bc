"""A run killed after an epoch and resumed ends with exactly the weights of an uninterrupted run."""

import torch
from _common import run_training


def test_two_epochs_equal_one_plus_resumed_one(tmp_path):
    straight = run_training(tmp_path / "a", world_batch=8, epochs=2)
    run_training(tmp_path / "b", world_batch=8, epochs=2, stop_after=1)
    assert (tmp_path / "b" / "checkpoint.pt").is_file() and not (tmp_path / "b" / "model.safetensors").exists()
    resumed = run_training(tmp_path / "b", world_batch=8, epochs=2, resume=True)
    for (name, a), (_, b) in zip(straight.state_dict().items(), resumed.state_dict().items()):
        assert torch.equal(a, b), name
    assert (tmp_path / "b" / "model.safetensors").is_file()


def test_without_resume_a_restart_differs(tmp_path):
    """The check above can fail: restarting from scratch for the second half gives other weights."""
    straight = run_training(tmp_path / "a", world_batch=8, epochs=2)
    restarted = run_training(tmp_path / "c", world_batch=8, epochs=2, stop_after=1)
    assert not torch.equal(straight.clip.text_projection, restarted.clip.text_projection)
