"""Two CPU processes with gloo under torchrun: SDM over the global batch, same result as one process."""

import subprocess
import sys
from pathlib import Path

import pytest
import torch
from _common import MODEL, run_training, stream_corpus

from gadms.model.retrieval import Architecture, PersonRetrievalModel

WORKER = Path(__file__).with_name("_ddp_worker.py")


@pytest.mark.slow
def test_two_gloo_processes_match_one_process_with_the_global_batch(tmp_path):
    ddp_out = tmp_path / "ddp"
    ddp_out.mkdir()
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node=2",
        str(WORKER),
        str(ddp_out),
    ]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=600, check=False)
    assert result.returncode == 0, result.stderr[-3000:]
    rank0 = torch.load(ddp_out / "rank0.pt", weights_only=True)
    rank1 = torch.load(ddp_out / "rank1.pt", weights_only=True)
    for name in rank0:
        assert torch.equal(rank0[name], rank1[name]), f"ranks disagree on {name}"
    single = run_training(tmp_path / "single", world_batch=8, epochs=1, mode="sdm").state_dict()
    torch.manual_seed(0)
    initial = PersonRetrievalModel(Architecture.from_config(MODEL)).state_dict()
    for name, value in single.items():
        torch.testing.assert_close(rank0[name], value, rtol=1e-4, atol=1e-5, msg=name)
    # training moved the weights, so agreeing is not trivial
    assert not torch.allclose(rank0["clip.text_projection"], initial["clip.text_projection"], atol=1e-5)


STREAM_WORKER = Path(__file__).with_name("_ddp_stream_worker.py")


def _torchrun(script: Path, *args: str) -> None:
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", str(script), *args]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=600, check=False)
    assert result.returncode == 0, result.stderr[-3000:]


@pytest.mark.slow
def test_streamed_ddp_resumed_mid_epoch_equals_straight(tmp_path):
    """2 gloo ranks x 2 loader workers: kill at step 8 (epoch 2 of 5-step epochs), resume, same weights bit for bit."""
    stream_corpus(tmp_path)  # written once, before the ranks start
    straight, broken = tmp_path / "straight", tmp_path / "broken"
    straight.mkdir()
    broken.mkdir()
    _torchrun(STREAM_WORKER, str(straight), "straight")
    _torchrun(STREAM_WORKER, str(broken), "stop")
    state = torch.load(broken / "checkpoint.pt", weights_only=True)
    assert (state["epoch"], state["batch"], len(state["ranks"])) == (1, 3, 2)
    assert state["ranks"][0]["feed"] != state["ranks"][1]["feed"]  # each rank's own stream position
    _torchrun(STREAM_WORKER, str(broken), "resume")
    a = torch.load(straight / "straight-rank0.pt", weights_only=True)
    b = torch.load(broken / "resume-rank0.pt", weights_only=True)
    for name in a:
        assert torch.equal(a[name], b[name]), name
