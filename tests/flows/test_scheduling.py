"""Scheduled retraining against a real Prefect server: the scheduler creates runs on the cron and they start.

A `prefect server start` on 127.0.0.1 (free port, temporary PREFECT_HOME) schedules the deployment that
`gadms deploy` serves with a cron firing every minute; the test polls the server's REST API until a scheduled
run has left the Scheduled/Pending states, and checks that the `--set` overrides travelled into its parameters.
Everything started here is stopped at the end.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
EVERY_MINUTE = 'orchestration.schedule_cron="* * * * *"'
# The run that starts has nothing to curate, so it ends quickly (no synthetic world, an empty web folder).
CHEAP = ["pipeline.synthesize=false", "paths.web_dir=empty-web"]
# A credential in an endpoint URL: Prefect only ever sees a placeholder, the served runs still get the value.
KEY = "sk-live-0123456789abcdef"
URL_SET = f"curation.captioning.vlm_url=http://user:{KEY}@127.0.0.1:8001/v1"
STARTED = {"RUNNING", "COMPLETED", "FAILED", "CRASHED", "CANCELLED", "CANCELLING"}


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start(command: list[str], env: dict[str, str], cwd: Path, log: Path) -> subprocess.Popen:
    """Start ``command`` in its own process group (so it and its children can be stopped together)."""
    return subprocess.Popen(
        command, env=env, cwd=cwd, stdout=log.open("wb"), stderr=subprocess.STDOUT, start_new_session=True
    )


def stop(process: subprocess.Popen) -> None:
    """Stop a process started by :func:`start` and its children: SIGTERM, then SIGKILL after 20 s."""
    if process.poll() is not None:
        return
    os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(20)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(10)


def wait_for(what: str, check, timeout: float, logs: list[Path], every: float = 1.0):
    """Poll ``check()`` until it returns something truthy; fail with the logs' tails after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(every)
    tails = "\n".join(f"--- {p.name}\n{p.read_text(errors='replace')[-3000:]}" for p in logs if p.exists())
    pytest.fail(f"timed out after {timeout:.0f}s waiting for {what}\n{tails}")


@pytest.fixture(scope="module")
def prefect_server(tmp_path_factory) -> Iterator[tuple[str, dict[str, str], Path]]:
    """A real Prefect server on a free loopback port with its own PREFECT_HOME; yields (api url, env, its log)."""
    tmp_path = tmp_path_factory.mktemp("prefect-server")
    port = free_port()
    api = f"http://127.0.0.1:{port}/api"
    env = {
        **os.environ,
        "PREFECT_HOME": str(tmp_path / "prefect-home"),
        "PREFECT_API_URL": api,
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "DO_NOT_TRACK": "true",
        "MLFLOW_DISABLE_TELEMETRY": "true",
        "PREFECT_SERVER_SERVICES_SCHEDULER_LOOP_SECONDS": "2",
        "PREFECT_RUNNER_POLL_FREQUENCY": "2",
        "PREFECT_WORKER_QUERY_SECONDS": "2",
        "PREFECT_SERVER_UI_ENABLED": "false",
        "PREFECT_CLI_PROMPT": "false",
        "PYTHONPATH": os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH", "")) if p),
    }
    for key in ("PREFECT_API_KEY", "PREFECT_PROFILE"):
        env.pop(key, None)
    log = tmp_path / "server.log"
    server = start(
        [str(BIN / "prefect"), "server", "start", "--host", "127.0.0.1", "--port", str(port)], env, tmp_path, log
    )
    try:
        wait_for("the Prefect server", lambda: healthy(api), 120, [log])
        yield api, env, log
    finally:
        stop(server)


def healthy(api: str) -> bool:
    """Whether the server answers its health check."""
    try:
        return httpx.get(f"{api}/health", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def runs_of(api: str, deployment: str) -> list[dict]:
    """The flow runs of the deployment named ``deployment`` (any flow), as the API returns them."""
    body = {"deployments": {"name": {"any_": [deployment]}}, "sort": "EXPECTED_START_TIME_ASC"}
    response = httpx.post(f"{api}/flow_runs/filter", json=body, timeout=10)
    response.raise_for_status()
    return response.json()


def project_copy(where: Path) -> Path:
    """A directory laid out like a checkout for the scheduled runs: params.yaml, an empty web folder, ``flows``."""
    where.mkdir()
    (where / "params.yaml").write_text((REPO / "params.yaml").read_text())
    (where / "empty-web").mkdir()
    (where / "flows").symlink_to(REPO / "flows")
    return where


def wait_until_started(api: str, deployment: str, logs: list[Path]) -> dict:
    """Wait for the server to schedule a run of ``deployment`` and for that run to start; returns the started run."""
    wait_for(f"the scheduler to create a run of {deployment}", lambda: runs_of(api, deployment), 90, logs)

    def started() -> dict | None:
        return next((r for r in runs_of(api, deployment) if r["state_type"] in STARTED), None)

    began = wait_for(f"a scheduled run of {deployment} to start", started, 150, logs, every=2)
    assert began["auto_scheduled"] is True, "the server's scheduler made the run, not a manual trigger"
    history = httpx.get(f"{api}/flow_run_states/", params={"flow_run_id": began["id"]}, timeout=10).json()
    assert "RUNNING" in {s["type"] for s in history}, "the run reached Running (its flow code was loaded)"

    def pipeline_started() -> list[str]:
        return [m for m in logs_of(api, began["id"]) if m.startswith("pipeline: params.yaml")]

    (line,) = wait_for("the pipeline's first log line", pipeline_started, 120, logs, every=2)
    assert "paths.web_dir=empty-web" in line, "the pipeline runs with the deployment's overrides"
    return began


def logs_of(api: str, flow_run_id: str) -> list[str]:
    """The log messages of a flow run (its own and its tasks'), oldest first."""
    body = {"logs": {"flow_run_id": {"any_": [flow_run_id]}}, "sort": "TIMESTAMP_ASC"}
    response = httpx.post(f"{api}/logs/filter", json=body, timeout=10)
    response.raise_for_status()
    return [entry["message"] for entry in response.json()]


@pytest.mark.slow
def test_served_deployment_is_scheduled_by_the_server_and_its_run_starts(prefect_server, tmp_path):
    api, env, server_log = prefect_server
    work = project_copy(tmp_path / "repo")
    sets = [arg for value in [EVERY_MINUTE, *CHEAP, URL_SET] for arg in ("--set", value)]
    log = tmp_path / "deploy.log"
    served = start(
        [str(BIN / "gadms"), "deploy", "--params", "params.yaml", "--name", "every-minute", *sets], env, work, log
    )
    try:
        run = wait_until_started(api, "every-minute", [log, server_log])
        hidden = URL_SET.replace(KEY, "[REDACTED:GADMS_SET_SECRET_1]")
        assert run["parameters"]["overrides"] == [EVERY_MINUTE, *CHEAP, hidden], "--set reaches the scheduled runs"
        assert run["parameters"]["params_file"] == "params.yaml"
        stored = str(runs_of(api, "every-minute")) + " ".join(logs_of(api, run["id"]))
        assert KEY not in stored, "the credential never reaches Prefect"
    finally:
        stop(served)


@pytest.mark.slow
def test_prefect_yaml_deployment_is_scheduled_and_a_process_worker_runs_it(prefect_server, tmp_path):
    api, env, server_log = prefect_server
    work = project_copy(tmp_path / "repo")
    spec = yaml.safe_load((REPO / "prefect.yaml").read_text())
    (deployment,) = spec["deployments"]
    deployment["schedules"][0]["cron"] = "* * * * *"  # the shipped file, firing every minute
    deployment["parameters"]["overrides"] = CHEAP
    (work / "prefect.yaml").write_text(yaml.safe_dump(spec, sort_keys=False))
    env = {**env, "GADMS_REPO": str(work)}
    prefect = str(BIN / "prefect")
    pool = deployment["work_pool"]["name"]
    for command in (["work-pool", "create", pool, "--type", "process"], ["deploy", "--all"]):
        done = subprocess.run([prefect, *command], env=env, cwd=work, capture_output=True, text=True, timeout=180)
        assert done.returncode == 0, (
            f"prefect {' '.join(command)} failed:\n{done.stdout[-2000:]}\n{done.stderr[-2000:]}"
        )
    log = tmp_path / "worker.log"
    worker = start([prefect, "worker", "start", "--pool", pool], env, tmp_path, log)
    try:
        run = wait_until_started(api, deployment["name"], [log, server_log])
        assert run["parameters"]["overrides"] == CHEAP
        assert run["work_pool_name"] == pool
        registered = httpx.get(f"{api}/deployments/{run['deployment_id']}", timeout=10).json()
        assert registered["global_concurrency_limit"]["limit"] == 1  # one run at a time, as prefect.yaml says
        assert registered["concurrency_options"]["collision_strategy"] == "CANCEL_NEW"
    finally:
        stop(worker)
