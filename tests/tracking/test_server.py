"""Through a real tracking server: the UI command starts one on the local store; a run and a registered
version logged over HTTP land in that store."""

import shlex
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from mlflow import MlflowClient

from gadms.tracking.mlflow_run import tracked_run
from gadms.tracking.registry import register_and_maybe_promote
from gadms.tracking.store import tracking_uri, ui_command


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_healthy(url: str, server: subprocess.Popen, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise RuntimeError(f"mlflow server exited with {server.returncode}")
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            time.sleep(0.5)
    raise TimeoutError(f"{url}/health did not answer within {timeout:.0f}s")


@pytest.fixture()
def server(new_params, tmp_path):
    """``ui_command`` run as printed (with this venv's mlflow) on a fresh store; yields (params, url)."""
    params = new_params(paths={"mlruns_dir": str(tmp_path / "mlruns")})
    port = _free_port()
    command = shlex.split(ui_command(params, port=port))
    command[0] = str(Path(sys.executable).with_name("mlflow"))
    log = (tmp_path / "server.log").open("w")
    process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, cwd=tmp_path)
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_healthy(url, process)
        yield params, url
    finally:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
        log.close()


@pytest.mark.slow
def test_run_and_registered_version_go_through_the_server(server, monkeypatch, tiny_model):
    params, url = server
    local_store = tracking_uri(params)  # the sqlite file the server was started on
    monkeypatch.setenv("MLFLOW_TRACKING_URI", url)  # the environment wins over params
    with tracked_run(params, "via server", "finetune", "md5:feed") as run:
        run.log_metrics("cuhk-pedes", {"R1": 33.0}, "finetuned")
        run.log_text("gate passed", "quality/gate_summary.md")
        run.log_model(tiny_model)
    result = register_and_maybe_promote(run.run_id, "model", params, "cuhk-pedes", 33.0)
    assert result.promoted and result.version == 1

    for client in (MlflowClient(url), MlflowClient(local_store)):  # over HTTP, and straight from the file it wrote
        logged = client.get_run(run.run_id)
        assert logged.data.metrics["finetuned/cuhk-pedes/R1"] == 33.0
        assert logged.data.tags["dvc.data_hash"] == "md5:feed"
        champion = client.get_model_version_by_alias(params.tracking.registered_model, params.tracking.champion_alias)
        assert int(champion.version) == 1 and champion.tags["R1"].startswith("33.0")
    with urllib.request.urlopen(
        f"{url}/get-artifact?path=quality/gate_summary.md&run_uuid={run.run_id}", timeout=10
    ) as response:
        assert response.read() == b"gate passed"
