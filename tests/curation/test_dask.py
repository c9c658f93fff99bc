"""Curation on a real Dask cluster (a separate scheduler and worker processes on 127.0.0.1).

The same bytes as a one-process run, and no Prefect server started by any worker, with Prefect's embedded
default (no PREFECT_API_URL) for the CLI and for the flow.
"""

import hashlib
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from gadms.config import load_params
from gadms.curation.cluster import finished_reports
from gadms.curation.output import CurationError
from gadms.curation.report import ShardReport
from gadms.curation.run import curate
from gadms.synth.web import write_web_shards

REPO = Path(__file__).resolve().parents[2]
DASK = Path(sys.executable).with_name("dask")


def _tree(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _env(tmp: Path) -> dict[str, str]:
    """The environment of every process started here: Prefect's embedded default, its home in ``tmp``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_API")}
    env.update(PREFECT_HOME=str(tmp / "prefect-home"), PREFECT_SERVER_ANALYTICS_ENABLED="false", DO_NOT_TRACK="true")
    return env


@pytest.fixture(scope="module")
def params():
    return load_params(REPO / "params.yaml")


@pytest.fixture(scope="module")
def web(tmp_path_factory, params) -> Path:
    out = tmp_path_factory.mktemp("web")
    synth = params.synth.model_copy(update={"shard_size": 15})
    write_web_shards(out, scenes=45, seed=3, synth=synth, rules=params.curation.filter, progress=False)
    return out


@pytest.fixture(scope="module")
def single(tmp_path_factory, web, params) -> Path:
    """The one-process reference run."""
    out = tmp_path_factory.mktemp("single") / "out"
    curate(web, out, params, progress=False)
    return out


def _stop(procs: list[subprocess.Popen]) -> None:
    """Terminate the processes started here and whatever they spawned, then kill what is left."""
    family = []
    for proc in procs:
        try:
            family += [psutil.Process(proc.pid), *psutil.Process(proc.pid).children(recursive=True)]
        except psutil.NoSuchProcess:
            pass
    for proc in procs:
        if proc.poll() is None:
            proc.terminate()
    _, alive = psutil.wait_procs(family, timeout=20)
    for proc in alive:
        proc.kill()
    psutil.wait_procs(alive, timeout=5)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    """``dask scheduler`` and ``dask worker`` (2 processes) on free ports of 127.0.0.1: (address, worker process)."""
    from distributed import Client

    tmp = tmp_path_factory.mktemp("cluster")
    address = f"tcp://127.0.0.1:{_free_port()}"
    common = ["--no-dashboard", "--host", "127.0.0.1"]
    logs = [open(tmp / name, "wb") for name in ("scheduler.log", "worker.log")]
    procs: list[subprocess.Popen] = []
    try:
        procs.append(
            subprocess.Popen(
                [str(DASK), "scheduler", "--port", address.rsplit(":", 1)[1], *common],
                env=_env(tmp),
                stdout=logs[0],
                stderr=subprocess.STDOUT,
            )
        )
        worker = [str(DASK), "worker", address, "--nworkers", "2", "--nthreads", "1", *common]
        worker += ["--local-directory", str(tmp / "worker-space")]
        procs.append(subprocess.Popen(worker, env=_env(tmp), cwd=tmp, stdout=logs[1], stderr=subprocess.STDOUT))
        with Client(address, timeout=60) as client:
            client.wait_for_workers(2, timeout=120)
        yield address, psutil.Process(procs[1].pid)
    finally:
        _stop(procs)
        for log in logs:
            log.close()


def _servers_under(process: psutil.Process) -> list[str]:
    """Command lines of Prefect or uvicorn servers among the descendants of ``process``."""
    found = []
    for child in process.children(recursive=True):
        try:
            line = " ".join(child.cmdline())
        except psutil.NoSuchProcess:
            continue
        if "uvicorn" in line or "prefect" in line:
            found.append(line)
    return found


def _stages_built_on_workers(address: str) -> int:
    """How many worker processes hold curation stages, i.e. curated a shard themselves."""
    from distributed import Client

    def built() -> int:
        module = sys.modules.get("gadms.curation.stages")
        return len(module._STAGES) if module is not None else 0

    with Client(address, timeout=30) as client:
        return sum(client.run(built).values())


@pytest.mark.slow
def test_the_cli_on_a_dask_cluster_writes_the_one_process_bytes(cluster, web, single, tmp_path):
    address, worker = cluster
    out = tmp_path / "dask"
    cmd = [sys.executable, "-m", "gadms", "curate", "run", "--input", str(web), "--out", str(out), "--quiet"]
    cmd += ["--params", str(REPO / "params.yaml"), "--dask-address", address]
    done = subprocess.run(cmd, cwd=tmp_path, env=_env(tmp_path), capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert f"on the Dask cluster at {address}" in done.stdout
    assert _tree(out) == _tree(single)
    assert {"manifest.parquet", "report.json", "meta/00002.report.json", "00002.tar"} <= set(_tree(out))
    assert _stages_built_on_workers(address) >= 1  # the shards were curated on the workers, not in the CLI
    assert _servers_under(worker) == []


@pytest.mark.parametrize("address", ["tcp://127.0.0.1:{port}", "no-port-here"])
def test_an_unreachable_scheduler_is_a_one_line_error(web, tmp_path, address):
    address = address.format(port=_free_port())
    env = _env(tmp_path) | {"DASK_DISTRIBUTED__COMM__TIMEOUTS__CONNECT": "1s"}
    cmd = [sys.executable, "-m", "gadms", "curate", "run", "--input", str(web), "--out", str(tmp_path / "out")]
    cmd += ["--quiet", "--params", str(REPO / "params.yaml"), "--dask-address", address]
    started = time.monotonic()
    done = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2
    assert done.stderr.startswith(f"error: cannot reach the Dask scheduler at {address} (")
    assert len(done.stderr.strip().splitlines()) == 1 and "Traceback" not in done.stderr
    assert time.monotonic() - started < 60


def _slow_report(name: str) -> ShardReport:
    time.sleep(0.5)
    return ShardReport(name)


def _broken_shard() -> ShardReport:
    raise CurationError("shard 00001: broken")


def test_a_failed_shard_is_raised_once_every_other_shard_has_ended():
    """OUT stays locked while any worker may still write to it; the finished shards count for the rerun."""
    from distributed import Client

    seen: list[str] = []
    with Client(processes=False, n_workers=1, threads_per_worker=3, dashboard_address=None) as client:
        futures = [client.submit(_slow_report, "00000"), client.submit(_broken_shard), client.submit(_slow_report, "2")]
        with pytest.raises(CurationError, match="shard 00001: broken"):
            finished_reports(futures, lambda report: seen.append(report.shard))
        assert sorted(seen) == ["00000", "2"]
        assert finished_reports([]) == []


FLOW = """
import sys
from flows.curate import run_curation
result = run_curation(sys.argv[1], sys.argv[2:4], input_dir=sys.argv[4], out_dir=sys.argv[5])
print("seen", result.totals["seen"])
"""


@pytest.mark.slow
def test_the_flow_on_a_dask_cluster_starts_no_prefect_server_on_the_workers(cluster, web, single, tmp_path):
    """The embedded default: the flow's process starts its one temporary server, the workers none of their own."""
    address, worker = cluster
    out = tmp_path / "flow"
    dask = ["orchestration.task_runner=dask", f"orchestration.dask_address={address}"]
    cmd = [sys.executable, "-c", FLOW, str(REPO / "params.yaml"), *dask, str(web), str(out)]
    env = _env(tmp_path) | {"PYTHONPATH": str(REPO)}
    done = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=400)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "seen 45" in done.stdout
    assert _tree(out) == _tree(single)
    assert _servers_under(worker) == []
