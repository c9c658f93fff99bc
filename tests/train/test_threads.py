"""Training computes with no more threads than the cores it may use; loader workers compute on one thread."""

import os
import subprocess
import sys

import pytest
import torch
from _common import run_training

from gadms.train import threads

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CORES = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def _python(code: str, **env: str) -> str:
    """Run ``code`` in a fresh interpreter (torch's thread pool as at start-up); its stdout."""
    clean = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "LOCAL_WORLD_SIZE")}
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, env={**clean, **env}, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    return done.stdout + done.stderr


@pytest.mark.skipif(not hasattr(os, "sched_setaffinity") or CORES < 2, reason="needs 2 cores and CPU affinity")
def test_a_process_pinned_to_one_core_computes_on_one_thread():
    code = (  # a pool of 2 sized before the pinning (torch does not follow affinity set later)
        "import os, torch; torch.set_num_threads(2); os.sched_setaffinity(0, {min(os.sched_getaffinity(0))}); "
        "print('before', torch.get_num_threads()); "
        "from gadms.train.threads import use_cores; print('after', use_cores())"
    )
    out = _python(code)
    assert "before 2" in out
    assert "after 1" in out
    assert "torch computes with 1 thread (1 core usable by this process; torch's default was" in out


def test_ranks_of_a_node_share_its_cores():
    out = _python("from gadms.train.threads import use_cores; print('after', use_cores())", LOCAL_WORLD_SIZE="64")
    assert "after 1" in out
    assert "shared by 64 processes" in out


def test_omp_num_threads_set_by_the_user_wins():
    out = _python("from gadms.train.threads import use_cores; print('after', use_cores())", OMP_NUM_THREADS="3")
    assert "after 3" in out
    assert "OMP_NUM_THREADS=3 set in the environment" in out


def test_a_bad_omp_num_threads_is_one_line_naming_it(monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "many")
    with pytest.raises(ValueError, match=r"^OMP_NUM_THREADS='many': not a positive whole number") as caught:
        threads.choose_threads()
    assert "\n" not in str(caught.value)


def test_never_more_threads_than_torch_chose(monkeypatch):
    """Where torch's own count fits the cores (this machine's demo), it stays: the trained bytes do not change."""
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.delenv("LOCAL_WORLD_SIZE", raising=False)
    monkeypatch.setattr(threads, "usable_cores", lambda: 512)
    before = torch.get_num_threads()
    assert threads.choose_threads() == (before, "512 cores usable by this process")


def test_training_keeps_torchs_thread_count_where_it_fits_the_cores(tmp_path, monkeypatch):
    """Thread counts change float rounding (1 and 2 threads train different bytes), so the demo's count must stay."""
    default = torch.get_num_threads()
    if default > CORES:
        pytest.skip("torch's default exceeds this process's cores here: training lowers it on purpose")
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    run_training(tmp_path / "a", world_batch=8, epochs=1)
    assert torch.get_num_threads() == default


def test_a_loader_worker_computes_on_one_thread():
    code = (
        "import torch; torch.set_num_threads(2); from gadms.lifetime import loader_worker_init; "
        "loader_worker_init(0); print('worker', torch.get_num_threads())"
    )
    assert "worker 1" in _python(code)


def test_a_container_cpu_quota_caps_the_usable_cores(tmp_path):
    """``docker --cpus 1.5`` shows no smaller affinity, only a quota: cgroup v2, then v1."""
    v2 = tmp_path / "v2"
    v2.mkdir()
    (v2 / "cpu.max").write_text("150000 100000\n")
    assert threads.quota_cores(v2) == 2
    (v2 / "cpu.max").write_text("max 100000\n")
    assert threads.quota_cores(v2) is None
    v1 = tmp_path / "v1" / "cpu"
    v1.mkdir(parents=True)
    (v1 / "cpu.cfs_quota_us").write_text("100000\n")
    (v1 / "cpu.cfs_period_us").write_text("100000\n")
    assert threads.quota_cores(tmp_path / "v1") == 1
    (v1 / "cpu.cfs_quota_us").write_text("-1\n")
    assert threads.quota_cores(tmp_path / "v1") is None
    assert threads.quota_cores(tmp_path / "nothing") is None


def test_every_gadms_command_lets_idle_openmp_threads_sleep_unless_the_user_chose(monkeypatch):
    """OMP_WAIT_POLICY=PASSIVE is set before torch loads OpenMP (a busy machine slows training in proportion, not
    tenfold: see gadms.cli.SHARE_CORES); a user's own setting is kept."""
    code = "import os, sys; from gadms.cli import main\ntry:\n    main(['--help'])\nexcept SystemExit:\n    pass\n"
    code += "import torch; print(os.environ.get('OMP_WAIT_POLICY'))"
    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    chosen = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert chosen.stdout.strip().splitlines()[-1] == "PASSIVE", chosen.stdout + chosen.stderr
    env["OMP_WAIT_POLICY"] = "ACTIVE"
    kept = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert kept.stdout.strip().splitlines()[-1] == "ACTIVE", kept.stdout + kept.stderr
