"""`gadms deploy` refuses without a Prefect server; run names, benchmark notices and the servers' telemetry."""

from __future__ import annotations

import logging
import os
import socket
import subprocess
import sys
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from gadms import lifetime
from gadms.config import load_params

REPO = Path(__file__).resolve().parents[2]
START = "PREFECT_SERVER_ANALYTICS_ENABLED=false "
EXPORT = "then `export PREFECT_API_URL=http://127.0.0.1:4200/api`"


def _deploy(tmp_path: Path, api_url: str | None) -> subprocess.CompletedProcess:
    """``python -m gadms deploy`` in a folder with params.yaml, with its own Prefect home (no profile setting)."""
    (tmp_path / "params.yaml").write_text((REPO / "params.yaml").read_text())
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    env["PREFECT_HOME"] = str(tmp_path / "prefect-home")
    if api_url is not None:
        env["PREFECT_API_URL"] = api_url
    return subprocess.run(
        [sys.executable, "-m", "gadms", "deploy"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120
    )


def test_deploy_without_a_server_refuses_in_one_line_saying_how_to_start_one(tmp_path):
    done = _deploy(tmp_path, None)
    assert done.returncode == 2, done.stderr
    (line,) = done.stderr.strip().splitlines()
    assert line.startswith("error: gadms deploy needs a Prefect server to keep its schedule, and PREFECT_API_URL is")
    assert f"`{START}" in line and " server start`" in line and line.endswith(EXPORT)
    assert "serving" not in done.stdout and not (tmp_path / "prefect-home" / "prefect.db").exists()


def test_deploy_against_a_server_that_does_not_answer_refuses_in_one_line(tmp_path):
    with socket.socket() as sock:  # a port nothing listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    done = _deploy(tmp_path, f"http://127.0.0.1:{port}/api")
    assert done.returncode == 2, done.stderr
    (line,) = done.stderr.strip().splitlines()
    assert line.startswith(
        f"error: gadms deploy: no Prefect server answers at PREFECT_API_URL=http://127.0.0.1:{port}/api"
    )
    assert line.endswith(EXPORT) and "serving" not in done.stdout


def test_deploy_help_states_the_policy_for_runs_that_come_due_while_one_runs():
    from typer.testing import CliRunner

    from gadms.cli import app

    text = " ".join(CliRunner().invoke(app, ["deploy", "--help"], terminal_width=200).output.split())
    assert "One run at a time: a run that comes due while the previous one still runs is not started but" in text
    assert "Cancelled" in text and "slots are skipped, never queued" in text


@pytest.mark.slow
def test_a_run_that_starts_late_is_named_by_its_slot_not_by_when_it_starts(prefect_api):
    from prefect import flow, get_client
    from prefect.flow_engine import run_flow
    from prefect.runtime import flow_run
    from prefect.states import Scheduled

    from flows.pipeline import pipeline_run_name

    @flow(flow_run_name=pipeline_run_name)
    def named() -> str:
        return str(flow_run.name)

    slot = (datetime.now(timezone.utc) - timedelta(hours=3)).replace(minute=0, second=0, microsecond=0)
    with get_client(sync_client=True) as client:  # a run scheduled 3 hours ago, started now (a busy worker)
        run = client.create_flow_run(named, state=Scheduled(scheduled_time=slot))
    assert run_flow(named, flow_run=run) == f"pipeline {slot:%Y-%m-%d %H}:00"


def _notice(sets: list[str], present: list[str]) -> tuple[int, str] | None:
    from gadms.tracking.pipeline_run import benchmarks_notice

    return benchmarks_notice(load_params(REPO / "params.yaml", sets), sets, present)


def test_the_demo_says_once_at_info_which_benchmarks_it_evaluates_and_real_gaps_stay_warnings():
    level, line = _notice([], ["cuhk-pedes"])  # params.yaml's demo: the synthetic world has CUHK-PEDES only
    assert level == logging.INFO
    assert line == (
        "evaluating on cuhk-pedes; not under work/benchmarks, skipped: icfg-pedes, rstpreid "
        "(the synthetic world builds cuhk-pedes only)"
    )
    asked = ["eval.benchmarks=[cuhk-pedes, rstpreid]"]  # named on this run's command line
    assert _notice(asked, ["cuhk-pedes"]) == (
        logging.WARNING,
        "evaluating on cuhk-pedes; not under work/benchmarks, skipped: rstpreid",
    )
    real = ["pipeline.synthesize=false"]  # real benchmarks: a missing one is a problem
    assert _notice(real, ["cuhk-pedes"])[0] == logging.WARNING  # type: ignore[index]
    assert _notice([], []) == (
        logging.WARNING,
        "no benchmark of eval.benchmarks is under work/benchmarks: nothing to fine-tune or evaluate",
    )
    assert _notice([], ["cuhk-pedes", "icfg-pedes", "rstpreid"]) is None


def test_the_prefect_servers_gadms_starts_send_no_telemetry(monkeypatch):
    from prefect.settings import Settings

    for key in lifetime.NO_PREFECT_TELEMETRY:
        monkeypatch.delenv(key, raising=False)
    lifetime.allow_for_busy_machine()  # what guard() does before Prefect is imported
    assert Settings().server.analytics_enabled is False  # no heartbeat to sens-o-matic.prefect.io every 10 min
    assert os.environ["DO_NOT_TRACK"] == "true"
    monkeypatch.setenv("PREFECT_SERVER_ANALYTICS_ENABLED", "true")  # a user's own choice is kept
    lifetime.allow_for_busy_machine()
    assert Settings().server.analytics_enabled is True
