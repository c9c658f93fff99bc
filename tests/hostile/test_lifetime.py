"""No process outlives its command: real SIGKILL, SIGTERM and SIGINT to running ``gadms`` commands.

Each test starts a command as a subprocess, waits until its child processes exist (DataLoader workers, the
Prefect ephemeral API server), records them, signals the command and asserts that every recorded process is gone
within a few seconds. Whatever happens, the test ends every process it started.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from gadms import lifetime
from gadms.config import SynthConfig
from gadms.synth.benchmark import write_benchmark

REPO = Path(__file__).resolve().parents[2]
GONE_WITHIN_S = 6.0  # the watchdog looks every 0.5 s, then allows 2 s of grace (twice when nested)
START_WITHIN_S = 120.0


@pytest.fixture(scope="module")
def bench(tmp_path_factory) -> Path:
    """A tiny synthetic CUHK-PEDES-format benchmark (its train split is the pre-training corpus)."""
    out = tmp_path_factory.mktemp("bench")
    write_benchmark(out, 6, 0, SynthConfig(), progress=False)
    return out


def _environment(tmp: Path) -> dict[str, str]:
    """The command's environment: nothing written to the user's Prefect home."""
    return {**os.environ, "PREFECT_HOME": str(tmp / "prefect"), "PYTHONUNBUFFERED": "1"}


def _start(args: list[str], tmp: Path) -> subprocess.Popen:
    """Start ``python -m gadms ARGS`` in ``tmp``, its output in files there."""
    with open(tmp / "out.txt", "wb") as out, open(tmp / "err.txt", "wb") as err:
        return subprocess.Popen(
            [sys.executable, "-m", "gadms", *args], cwd=tmp, env=_environment(tmp), stdout=out, stderr=err
        )


def _children(proc: subprocess.Popen) -> list[psutil.Process]:
    """The command's running descendants (empty once it is gone)."""
    try:
        return psutil.Process(proc.pid).children(recursive=True)
    except psutil.Error:
        return []


def _wait_for(proc: subprocess.Popen, tmp: Path, ready) -> list[psutil.Process]:
    """Wait until ``ready(descendants)`` holds; return the descendants then (fail if the command ends first)."""
    deadline = time.monotonic() + START_WITHIN_S
    while time.monotonic() < deadline:
        assert proc.poll() is None, (tmp / "err.txt").read_text()[-2000:]
        children = _children(proc)
        if ready(children):
            time.sleep(0.6)  # one more record by the watchdog
            return _children(proc)
        time.sleep(0.2)
    pytest.fail(f"no child processes after {START_WITHIN_S} s: {(tmp / 'err.txt').read_text()[-2000:]}")


def _names(processes: list[psutil.Process]) -> list[str]:
    """A readable list of processes for an assertion message."""
    shown = []
    for process in processes:
        try:
            shown.append(f"{process.pid} {' '.join(process.cmdline())[:100]}")
        except psutil.Error:
            shown.append(f"{process.pid} (gone)")
    return shown


def _running(process: psutil.Process) -> bool:
    """Whether ``process`` still runs (a zombie, ended but not yet reaped by its new parent, does not)."""
    try:
        return process.is_running() and process.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def _running_after(processes: list[psutil.Process], seconds: float) -> list[psutil.Process]:
    """Those of ``processes`` still running after ``seconds`` (a zombie, ended but not yet reaped, is not)."""
    deadline = time.monotonic() + seconds
    while True:
        alive = [p for p in processes if _running(p)]
        if not alive or time.monotonic() > deadline:
            return alive
        time.sleep(0.1)


def _stop_and_check(proc: subprocess.Popen, children: list[psutil.Process], signum: int) -> None:
    """Send ``signum`` to the command; assert it and every recorded child are gone within GONE_WITHIN_S."""
    try:
        proc.send_signal(signum)
        proc.wait(timeout=60)
        alive = _running_after(children, GONE_WITHIN_S)
        assert not alive, f"still running {GONE_WITHIN_S} s after {signal.Signals(signum).name}: {_names(alive)}"
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        lifetime.end_processes(children, grace_s=1.0)
        if proc.stdout is not None:
            proc.stdout.close()


PARENT = """
import subprocess, sys, time
from gadms import lifetime
{setup}
child = subprocess.Popen([sys.executable, "-c", {child!r}])
print("ready", flush=True)
time.sleep(600)
"""


def _parent_with_a_child(tmp: Path, setup: str, child: str) -> tuple[subprocess.Popen, list[psutil.Process]]:
    """A Python process that runs ``setup`` and then starts a child running ``child``; both running."""
    code = PARENT.format(setup=setup, child=child)
    proc = subprocess.Popen([sys.executable, "-c", code], cwd=REPO, stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None and proc.stdout.readline() == "ready\n"
    return proc, _wait_for(proc, tmp, lambda found: len(found) >= (2 if "guard" in setup else 1))


@pytest.mark.parametrize("signum", [signal.SIGKILL, signal.SIGTERM, signal.SIGINT], ids=lambda s: s.name)
def test_a_guarded_process_takes_its_children_along(tmp_path, signum):
    (tmp_path / "err.txt").write_text("")
    proc, children = _parent_with_a_child(tmp_path, "lifetime.guard('demo')", "import time; time.sleep(600)")
    _stop_and_check(proc, children, signum)


def test_a_child_asking_for_its_parent_death_signal_ends_with_its_parent(tmp_path):
    (tmp_path / "err.txt").write_text("")
    child = "import time; from gadms import lifetime; lifetime.die_with_parent(); time.sleep(600)"
    proc, children = _parent_with_a_child(tmp_path, "", child)
    time.sleep(1.0)  # the child has made its request
    _stop_and_check(proc, children, signal.SIGKILL)


def test_prefect_reads_the_start_up_waits_sized_for_a_busy_machine(monkeypatch):
    from prefect.settings import Settings

    for key in lifetime.BUSY_MACHINE_WAITS:
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("PREFECT_API_REQUEST_TIMEOUT", "7")  # a user's own choice is kept
    lifetime.allow_for_busy_machine()
    settings = Settings()
    assert settings.server.ephemeral.startup_timeout_seconds == 180  # Prefect's default: 20
    assert settings.server.database.timeout == 60 and settings.server.database.connection_timeout == 30
    assert settings.api.request_timeout == 7


def _pretrain(bench: Path, tmp: Path) -> list[str]:
    """``gadms train pretrain`` on the tiny benchmark with two DataLoader workers, for far longer than a test."""
    sets = ["train.num_workers=2", "train.epochs=500", "train.batch_size=4", "model.context_length=32"]
    args = ["train", "pretrain", "--data", str(bench), "--format", "cuhk-pedes", "--out", str(tmp / "run")]
    args += ["--no-track", "--device", "cpu", "--params", str(REPO / "params.yaml")]
    return args + [arg for s in sets for arg in ("--set", s)]


def _with_workers(children: list[psutil.Process]) -> bool:
    """At least the watchdog and two loader workers."""
    return len(children) >= 3


@pytest.mark.slow
@pytest.mark.parametrize("signum", [signal.SIGKILL, signal.SIGTERM, signal.SIGINT], ids=lambda s: s.name)
def test_a_stopped_training_run_leaves_no_loader_worker(bench, tmp_path, signum):
    proc = _start(_pretrain(bench, tmp_path), tmp_path)
    children = _wait_for(proc, tmp_path, _with_workers)
    _stop_and_check(proc, children, signum)
    if signum != signal.SIGKILL:
        assert proc.returncode == lifetime.EXIT_CODES[signum]
        last = (tmp_path / "err.txt").read_text().strip().splitlines()[-1]
        assert last.startswith(f"gadms train pretrain: stopped by {signal.Signals(signum).name}; "), last


def _with_prefect_server(children: list[psutil.Process]) -> bool:
    """The Prefect ephemeral API server (uvicorn serving prefect.server) is among the children."""
    for process in children:
        try:
            if "prefect.server.api.server:create_app" in process.cmdline():
                return True
        except psutil.Error:
            continue
    return False


@pytest.mark.slow
@pytest.mark.parametrize("signum", [signal.SIGKILL, signal.SIGTERM], ids=lambda s: s.name)
def test_a_stopped_pipeline_leaves_no_prefect_server(tmp_path, signum):
    proc = _start(["pipeline", "--params", str(REPO / "params.yaml")], tmp_path)
    children = _wait_for(proc, tmp_path, _with_prefect_server)
    _stop_and_check(proc, children, signum)
    if signum == signal.SIGTERM:
        assert proc.returncode == lifetime.EXIT_CODES[signum], (tmp_path / "err.txt").read_text()[-2000:]


@pytest.fixture(scope="module")
def index_dir(bench, tmp_path_factory) -> Path:
    """A search index of the tiny benchmark's images, built by ``gadms index`` with a tiny model."""
    import torch

    from gadms.config import ModelConfig
    from gadms.model.retrieval import Architecture, PersonRetrievalModel, save_model

    tmp = tmp_path_factory.mktemp("index")
    torch.manual_seed(0)
    tiny = PersonRetrievalModel(Architecture.from_config(ModelConfig(context_length=32)))
    model = save_model(tiny, tmp / "model.safetensors")
    out = tmp / "index"
    args = ["index", "--images", str(bench), "--model", str(model), "--out", str(out), "--device", "cpu", "--quiet"]
    done = subprocess.run([sys.executable, "-m", "gadms", *args], cwd=tmp, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    return out


def _free_port() -> int:
    """A TCP port free on 127.0.0.1 now."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.mark.slow
@pytest.mark.parametrize("signum", [signal.SIGKILL, signal.SIGTERM, signal.SIGINT], ids=lambda s: s.name)
def test_a_stopped_server_leaves_no_process(index_dir, tmp_path, signum):
    proc = _start(["serve", str(index_dir), "--port", str(_free_port()), "--device", "cpu"], tmp_path)
    children = _wait_for(proc, tmp_path, lambda found: "serving " in (tmp_path / "out.txt").read_text())
    assert children, "the watchdog runs beside the server"
    _stop_and_check(proc, children, signum)
    if signum != signal.SIGKILL:
        assert proc.returncode == lifetime.EXIT_CODES[signum], (tmp_path / "err.txt").read_text()[-2000:]


def _ranks(children: list[psutil.Process]) -> list[psutil.Process]:
    """The torchrun ranks among the children: ``gadms train`` processes whose parent is the torchrun agent."""
    found = []
    for process in children:
        try:
            if "gadms" in process.cmdline() and "torch.distributed.run" in process.parent().cmdline():
                found.append(process)
        except psutil.Error:
            continue
    return found


def _ranks_with_workers(children: list[psutil.Process]) -> bool:
    """Two ranks, each with its watchdog and loader workers running."""
    ranks = _ranks(children)
    return len(ranks) == 2 and all(len(_descendants_of(rank)) >= 3 for rank in ranks)


def _descendants_of(process: psutil.Process) -> list[psutil.Process]:
    """``process``'s running descendants."""
    try:
        return process.children(recursive=True)
    except psutil.Error:
        return []


@pytest.mark.slow
@pytest.mark.parametrize("target", ["rank", "launcher"])
def test_a_killed_ddp_process_leaves_no_child(bench, tmp_path, target):
    """SIGKILL of one torchrun rank ends its loader workers; SIGKILL of the command ends torchrun and every rank."""
    proc = _start([*_pretrain(bench, tmp_path), "--set", "train.gpus=2", "--set", "train.stream.slots=4"], tmp_path)
    children = _wait_for(proc, tmp_path, _ranks_with_workers)
    if target == "launcher":
        _stop_and_check(proc, children, signal.SIGKILL)
        return
    rank = _ranks(children)[0]
    its_children = _descendants_of(rank)
    try:
        rank.kill()
        alive = _running_after(its_children, GONE_WITHIN_S)
        assert not alive, f"still running {GONE_WITHIN_S} s after SIGKILL of a rank: {_names(alive)}"
    finally:
        _stop_and_check(proc, children, signal.SIGTERM)
