"""The served pipeline deployment never runs twice at once, and a cancelled run ends its MLflow runs KILLED.

Against a real Prefect server on 127.0.0.1 (the fixture of ``test_scheduling``), ``gadms deploy`` serves the real
pipeline on a tiny synthetic world with a cron firing every minute; its pre-training is set to take far longer
than a minute. While the first run pre-trains a slot comes due: the deployment's concurrency limit (CANCEL_NEW)
marks it Cancelled without it ever running. Once the first run has run for over a minute the test cancels it
through the API: the run ends Cancelled and its MLflow runs (the pipeline's and the pre-training's) KILLED, not
FAILED. The schedule goes on: the next slot runs, after the first run ended. No run fails, no two run at once,
each is named by its slot. Everything started here is stopped at the end.
"""

from __future__ import annotations

import logging
import subprocess
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path

import httpx
import pytest

from tests.flows.test_scheduling import BIN, REPO, prefect_server, runs_of, start, stop, wait_for

__all__ = ["prefect_server"]  # the module-scoped server fixture, reused

EVERY_MINUTE = 'orchestration.schedule_cron="* * * * *"'
# The tiny world of tests/flows/test_pipeline.py, pre-trained for 60 epochs: minutes even on an idle machine.
LONG = [
    "pipeline.web_scenes=60",
    "pipeline.benchmark_identities=12",
    "synth.shard_size=30",
    "train.epochs=60",
    "train.batch_size=16",
    "finetune.epochs=1",
    "finetune.batch_size=16",
    "train.num_workers=0",
]
LIMIT_REACHED = "Deployment concurrency limit reached."


@pytest.fixture(scope="module")
def project(tmp_path_factory) -> Path:
    """A git work tree with params.yaml and ``flows`` (the deployment's entrypoint), as a checkout has them."""
    root = tmp_path_factory.mktemp("overlap") / "repo"
    root.mkdir()
    for command in (["init", "-q"], ["config", "user.email", "ci@example.invalid"], ["config", "user.name", "ci"]):
        subprocess.run(["git", *command], cwd=root, check=True)
    (root / "params.yaml").write_text((REPO / "params.yaml").read_text())
    (root / "flows").symlink_to(REPO / "flows")
    return root


@pytest.fixture
def serving(prefect_server, project, tmp_path) -> Iterator[Callable[[str, list[str]], list[Path]]]:
    """``serve(name, sets)``: start ``gadms deploy --name NAME --set ...`` in the project; stopped after the test."""
    _, env, server_log = prefect_server
    started: list[subprocess.Popen] = []

    def serve(name: str, sets: list[str]) -> list[Path]:
        log = tmp_path / f"deploy-{name}.log"
        args = [str(BIN / "gadms"), "deploy", "--name", name, *[a for s in sets for a in ("--set", s)]]
        started.append(start(args, env, project, log))
        return [log, server_log]

    yield serve
    for process in started:
        stop(process)


def when(text: str | None) -> datetime:
    """A timestamp of the API (ISO 8601, with a time zone)."""
    assert text, "a run that ran has start and end times"
    return datetime.fromisoformat(text)


def history(api: str, run_id: str) -> list[dict]:
    """The states a flow run went through, oldest first."""
    states = httpx.get(f"{api}/flow_run_states/", params={"flow_run_id": run_id}, timeout=10).json()
    return sorted(states, key=lambda s: s["timestamp"])


def log_entries(api: str, flow_run_id: str) -> list[dict]:
    """The log entries (``message``, ``level``) of a flow run itself, oldest first."""
    body = {
        "logs": {"flow_run_id": {"any_": [flow_run_id]}, "task_run_id": {"is_null_": True}},
        "sort": "TIMESTAMP_ASC",
    }
    response = httpx.post(f"{api}/logs/filter", json=body, timeout=10)
    response.raise_for_status()
    return response.json()


def mlflow_runs(project: Path, stage: str) -> list:
    """The MLflow runs of ``stage`` in the project's store."""
    from mlflow import MlflowClient

    from gadms.config import load_params
    from gadms.tracking.store import tracking_uri

    params = load_params(project / "params.yaml", [])
    client = MlflowClient(tracking_uri(params, project))
    experiment = client.get_experiment_by_name(params.tracking.experiment)
    if experiment is None:
        return []
    return client.search_runs([experiment.experiment_id], f"tags.stage = '{stage}'")


def pretraining(project: Path) -> list | None:
    """The pre-training MLflow run while it is running."""
    running = [r for r in mlflow_runs(project, "pretrain") if r.info.status == "RUNNING"]
    return running or None


def ran(api: str, run: dict) -> bool:
    """Whether the flow run ever ran (reached Running), as opposed to being cancelled before it started."""
    return "RUNNING" in {state["type"] for state in history(api, run["id"])}


def started(api: str, run: dict) -> datetime:
    """When the flow run first reached Running, from its state history.

    Not the run's ``start_time``: a run read while Pending has none yet, though it may be Running by the time
    its history is read (the snapshot and the history are two requests).
    """
    return when(next((s["timestamp"] for s in history(api, run["id"]) if s["type"] == "RUNNING"), None))


@pytest.mark.slow
def test_an_every_minute_schedule_runs_one_at_a_time_skips_the_slots_due_meanwhile_and_a_cancel_ends_killed(
    prefect_server, project, serving
):
    from flows.pipeline import slot_name

    api = prefect_server[0]
    logs = serving("every-minute", [EVERY_MINUTE, *LONG])

    def due() -> list[dict]:
        return [r for r in runs_of(api, "every-minute") if r["state_type"] != "SCHEDULED"]

    def first_run() -> dict | None:
        return next((r for r in due() if r["state_type"] == "RUNNING"), None)

    first = wait_for("the first scheduled run to start", first_run, 200, logs, every=2)
    (pretrain,) = wait_for("the first run to pre-train", lambda: pretraining(project), 420, logs, every=2)
    begun = started(api, first)

    def overlapped() -> list[dict] | None:  # a slot came due while the first run ran, for over a minute by now
        skipped = [r for r in due() if r["state_type"] == "CANCELLED" and r["id"] != first["id"]]
        return skipped if skipped and datetime.now(timezone.utc) - begun > timedelta(seconds=65) else None

    wait_for("a slot to come due during the first run", overlapped, 200, logs, every=2)
    cancel = {"state": {"type": "CANCELLING", "message": "cancelled by the test"}, "force": True}
    httpx.post(f"{api}/flow_runs/{first['id']}/set_state", json=cancel, timeout=10).raise_for_status()

    def ended() -> dict | None:
        run = httpx.get(f"{api}/flow_runs/{first['id']}", timeout=10).json()
        return run if run["state_type"] not in {"RUNNING", "CANCELLING", "PENDING"} else None

    first = wait_for("the cancelled run to end", ended, 120, logs)
    assert first["state_type"] == "CANCELLED"
    statuses = {r.info.run_id: r.info.status for s in ("pipeline", "pretrain") for r in mlflow_runs(project, s)}
    parent = pretrain.data.tags["mlflow.parentRunId"]
    assert statuses[pretrain.info.run_id] == "KILLED" and statuses[parent] == "KILLED", statuses
    assert list(statuses.values()).count("FAILED") == 0

    def next_run() -> dict | None:  # the schedule goes on: the next slot runs once the first run is over
        return next((r for r in due() if r["id"] != first["id"] and ran(api, r)), None)

    second = wait_for("the next slot to run", next_run, 150, logs, every=2)
    runs = due()
    assert [r["name"] for r in runs if r["state_type"] in {"FAILED", "CRASHED"}] == []
    assert [r["id"] for r in runs if ran(api, r)] == [first["id"], second["id"]], "no other run started"
    first_ended = when(first["end_time"] or first["state"]["timestamp"])  # a cancelled run may carry no end_time
    assert first_ended <= started(api, second), "the two runs ran at once"
    skipped = [
        r for r in runs if not ran(api, r) and when(r["expected_start_time"]) < when(second["expected_start_time"])
    ]
    assert skipped, "at least one slot came due while the first run ran"
    for run in skipped:  # Cancelled by the concurrency limit when the runner took them up, during the first run
        assert run["state_type"] == "CANCELLED" and run["state"]["message"] == LIMIT_REACHED, run["state"]
        assert begun <= when(run["state"]["timestamp"]) <= first_ended
    for run in (first, second):  # named by their slot, not by when they started
        assert run["name"] == slot_name(when(run["expected_start_time"])), run["name"]
    notices = [entry for entry in log_entries(api, first["id"]) if "icfg-pedes" in entry["message"]]
    assert [entry["level"] for entry in notices] == [logging.INFO], notices  # said once, not warned
    assert notices[0]["message"].startswith("evaluating on cuhk-pedes; not under ")
