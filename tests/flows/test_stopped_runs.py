"""A stopped run ends KILLED in MLflow, a failed one FAILED: in the ``with`` block, and when a signal stops a
guarded command (its stop hooks end the open runs before it exits). Real MLflow SQLite stores, real signals."""

from __future__ import annotations

import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from gadms import lifetime
from gadms.config import load_params

REPO = Path(__file__).resolve().parents[2]

GUARDED = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    from gadms import lifetime
    from gadms.config import load_params
    from gadms.tracking.mlflow_run import tracked_run

    lifetime.guard("gadms demo")
    lifetime.on_stop(lambda: Path(sys.argv[2]).write_text("hook ran"))
    params = load_params(Path(sys.argv[1]) / "params.yaml", [])
    with tracked_run(params, "pipeline 2026-12-07 03:00", "pipeline", None) as parent:
        with tracked_run(params, "pretrain", "pretrain", None, parent_run_id=parent.run_id) as child:
            print(parent.run_id, child.run_id, flush=True)
            time.sleep(300)
    """
)


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> Path:
    """A folder with params.yaml whose MLflow store is ``mlruns/mlflow.db`` there (one store for the module: a new
    SQLite store takes seconds to set up).
    """
    root = tmp_path_factory.mktemp("stopped")
    (root / "params.yaml").write_text((REPO / "params.yaml").read_text())
    return root


@pytest.fixture
def project(store, monkeypatch) -> Path:
    """The store's folder as the working directory (a relative ``paths.mlruns_dir`` is resolved there)."""
    monkeypatch.chdir(store)
    return store


def _status(project: Path, run_id: str) -> str:
    from mlflow import MlflowClient

    from gadms.tracking.store import tracking_uri

    uri = tracking_uri(load_params(project / "params.yaml", []), project)
    return str(MlflowClient(uri).get_run(run_id).info.status)


@pytest.mark.parametrize(
    "raised, status",
    [
        (KeyboardInterrupt(), "KILLED"),  # Ctrl-C
        ("termination", "KILLED"),  # SIGTERM inside a Prefect flow run (how a served run is cancelled)
        ("cancelled", "KILLED"),  # a Prefect cancellation
        (ValueError("bad batch"), "FAILED"),  # an error stays a failure
        (None, "FINISHED"),
    ],
    ids=["ctrl-c", "prefect-sigterm", "prefect-cancel", "error", "done"],
)
def test_a_tracked_run_and_its_parent_end_killed_when_stopped_failed_on_error(project, raised, status):
    from prefect.exceptions import CancelledRun, TerminationSignal

    from gadms.tracking.mlflow_run import tracked_run
    from gadms.tracking.stopped import open_runs

    exc = {"termination": TerminationSignal(signal.SIGTERM), "cancelled": CancelledRun("cancelled")}.get(raised, raised)  # type: ignore[call-overload]
    params = load_params(project / "params.yaml", [])
    ids: list[str] = []
    try:
        with tracked_run(params, "pipeline", "pipeline", None) as parent:
            with tracked_run(params, "pretrain", "pretrain", None, parent_run_id=parent.run_id) as child:
                ids += [parent.run_id, child.run_id]
                assert set(open_runs()) == set(ids)
                if exc is not None:
                    raise exc
    except BaseException as caught:  # noqa: BLE001 - what was raised comes out unchanged
        assert caught is exc
    assert [_status(project, run_id) for run_id in ids] == [status, status]
    assert open_runs() == {}


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=lambda s: s.name)
def test_a_signal_to_a_guarded_command_ends_its_open_runs_killed_before_it_exits(project, signum):
    hooked = project / f"hook-{signum}.txt"
    child = subprocess.Popen(
        [sys.executable, "-c", GUARDED, str(project), str(hooked)],
        cwd=project,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert child.stdout is not None
        ids = child.stdout.readline().split()
        assert len(ids) == 2, child.stderr.read() if child.stderr else ""
        assert [_status(project, run_id) for run_id in ids] == ["RUNNING", "RUNNING"]
        child.send_signal(signum)
        _, err = child.communicate(timeout=60)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
    assert child.returncode == lifetime.EXIT_CODES[signum], err
    assert err.strip().splitlines()[-1].startswith(f"gadms demo: stopped by {signal.Signals(signum).name}; ")
    assert hooked.read_text() == "hook ran"
    assert [_status(project, run_id) for run_id in ids] == ["KILLED", "KILLED"]


def test_stop_hooks_run_once_each_and_a_failing_one_does_not_stop_the_others():
    ran: list[str] = []

    def broken() -> None:
        raise RuntimeError("store gone")

    removers = [lifetime.on_stop(broken), lifetime.on_stop(lambda: ran.append("second"))]
    gone = lifetime.on_stop(lambda: ran.append("removed"))
    gone()
    try:
        lifetime.run_stop_hooks(timeout_s=5)
    finally:
        for remove in removers:
            remove()
    assert ran == ["second"]
