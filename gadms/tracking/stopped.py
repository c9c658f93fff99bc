"""A run cut short by a stop ends KILLED in MLflow; a run cut short by an error ends FAILED.

A stop is Ctrl-C (``KeyboardInterrupt``), a SIGTERM inside a Prefect flow run (Prefect raises its
``TerminationSignal`` through the flow; it is how a served or worker-run flow run is cancelled), a Prefect
``CancelledRun``, and any other ``BaseException`` that is not an error (``asyncio.CancelledError``). An
``Exception`` or a ``SystemExit`` is a failure.

:func:`gadms.tracking.mlflow_run.tracked_run` ends its run by :func:`end_status`. Every open run is also listed here
(:func:`listed`), for the stops that never reach the run's ``with`` block: a guarded command's SIGTERM/SIGINT
handler exits at once (it calls :func:`end_open_runs` through :func:`gadms.lifetime.on_stop` first), and a run
open in another thread than the one the stop lands in (a flow ends those with :func:`end_open_runs`).
"""

from __future__ import annotations

import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager

FINISHED, FAILED, KILLED = "FINISHED", "FAILED", "KILLED"

_open: dict[str, str] = {}  # run id -> tracking URI, for each run open in this process
_lock = threading.Lock()
_hooked: list[int] = []  # the pid whose stop hook is in place (a forked child has none of its parent's runs)


def is_stop(exc: BaseException) -> bool:
    """Whether ``exc`` stops a run rather than failing it (see the module docstring)."""
    if not isinstance(exc, (Exception, SystemExit)):
        return True
    prefect_exceptions = sys.modules.get("prefect.exceptions")  # not imported: no Prefect exception can be raised
    cancelled = getattr(prefect_exceptions, "CancelledRun", None)
    return cancelled is not None and isinstance(exc, cancelled)


def end_status(exc: BaseException | None) -> str:
    """The MLflow status of a run whose block ended with ``exc``: FINISHED (None), KILLED (a stop) or FAILED."""
    if exc is None:
        return FINISHED
    return KILLED if is_stop(exc) else FAILED


def end_run(run_id: str, uri: str, status: str) -> None:
    """End the run ``run_id`` of the store ``uri`` with ``status`` (``FINISHED``, ``FAILED``, ``KILLED``).

    The active run of this thread is ended through MLflow's run stack (so that leaving its ``start_run`` block
    does not end it again, as FAILED), any other run through the client.
    """
    import mlflow

    active = mlflow.active_run()
    if active is not None and active.info.run_id == run_id:
        mlflow.end_run(status)
    else:
        mlflow.MlflowClient(uri).set_terminated(run_id, status)


@contextmanager
def listed(run_id: str, uri: str) -> Iterator[None]:
    """List the run ``run_id`` of the store ``uri`` as open for the ``with`` block."""
    import os

    from gadms.lifetime import on_stop

    with _lock:
        _open[run_id] = uri
        if _hooked != [os.getpid()]:
            on_stop(end_open_runs)
            _hooked[:] = [os.getpid()]
    try:
        yield
    finally:
        with _lock:
            _open.pop(run_id, None)


def open_runs() -> dict[str, str]:
    """The runs open in this process: run id -> tracking URI."""
    with _lock:
        return dict(_open)


def end_open_runs(status: str = KILLED) -> list[str]:
    """End every run still open in this process with ``status``; returns their ids.

    A run the store cannot be told about (unreachable server) is skipped: this runs while the process stops.
    """
    still_open = open_runs()
    if not still_open:
        return []
    from mlflow import MlflowClient

    ended = []
    for run_id, uri in still_open.items():
        try:
            MlflowClient(uri).set_terminated(run_id, status)
        except Exception:  # noqa: BLE001 - the process is stopping; the other runs still get their status
            continue
        with _lock:
            _open.pop(run_id, None)
        ended.append(run_id)
    return ended


@contextmanager
def killed_when_stopped() -> Iterator[None]:
    """Run the ``with`` block; when a stop ends it (Ctrl-C, SIGTERM, a cancellation), every run still open in this
    process (another thread's included) ends KILLED before the stop goes on.
    """
    try:
        yield
    except BaseException as exc:
        if is_stop(exc):
            end_open_runs()
        raise
