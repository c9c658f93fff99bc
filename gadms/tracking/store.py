"""Where runs are stored: the tracking URI, the local SQLite store, the UI command.

Precedence: the ``MLFLOW_TRACKING_URI`` environment variable, then
``tracking.uri`` in params.yaml, else a SQLite database
``<paths.mlruns_dir>/mlflow.db`` with artifacts under
``<paths.mlruns_dir>/artifacts``. A SQLite store needs no server: runs are
written straight to the file, and ``mlflow ui`` (see :func:`ui_command`) reads
it whenever a person wants to look.
"""

from __future__ import annotations

import logging
import os
import shlex
import sys
from collections.abc import Iterator
from contextlib import closing, contextmanager
from pathlib import Path
from urllib.parse import unquote

from gadms.config import Params

ENV_URI = "MLFLOW_TRACKING_URI"
DB_FILE = "mlflow.db"
ARTIFACTS_DIR = "artifacts"


def local_store_dir(params: Params, root: Path | None = None) -> Path:
    """The absolute directory of the default local store (``paths.mlruns_dir``).

    Args:
        params: the run's parameters.
        root: directory a relative ``mlruns_dir`` is resolved against (default: the working directory).

    Returns:
        The directory (not created here).
    """
    base = Path.cwd() if root is None else Path(root)
    return (base / params.paths.mlruns_dir).absolute()


def tracking_uri(params: Params, root: Path | None = None) -> str:
    """The tracking URI runs go to: env ``MLFLOW_TRACKING_URI``, then ``tracking.uri``, else local SQLite.

    Args:
        params: the run's parameters.
        root: directory a relative ``paths.mlruns_dir`` is resolved against (default: the working directory).

    Returns:
        A URI such as ``http://127.0.0.1:5000`` or ``sqlite:////abs/mlruns/mlflow.db``.
    """
    from_env = os.environ.get(ENV_URI, "").strip()
    if from_env:
        return from_env
    if params.tracking.uri:
        return params.tracking.uri
    return f"sqlite:///{local_store_dir(params, root) / DB_FILE}"


def sqlite_path(uri: str) -> Path | None:
    """The database file of a ``sqlite:///`` URI, or None for any other kind of store.

    Args:
        uri: a tracking URI.

    Returns:
        The absolute (or, for a relative URI, relative) path of the database file.
    """
    if not uri.startswith("sqlite:///"):
        return None
    return Path(unquote(uri[len("sqlite:///") :].split("?", 1)[0]))


def artifact_location(uri: str) -> str | None:
    """Where a new experiment's artifacts go: ``<database dir>/artifacts`` for SQLite, else the store decides.

    Args:
        uri: a tracking URI.

    Returns:
        A ``file://`` URI, or None to leave the choice to the store (a server, a file store).
    """
    database = sqlite_path(uri)
    if database is None:
        return None
    return (database.absolute().parent / ARTIFACTS_DIR).as_uri()


@contextmanager
def using_store(params: Params, root: Path | None = None) -> Iterator[str]:
    """Point MLflow at the project's store for the duration of a ``with`` block.

    ``mlflow.set_tracking_uri`` also writes ``MLFLOW_TRACKING_URI`` into the
    environment, which would then win over every later params.yaml; so the
    previous URI and environment are restored on exit. The local store's
    directory is created when needed. The setting is process-wide: concurrent
    threads must use the same store. A damaged or locked SQLite store, here or
    while the block uses it, raises :class:`StoreError` (one line) instead of
    MLflow's and SQLAlchemy's errors.

    Args:
        params: the run's parameters.
        root: directory a relative ``paths.mlruns_dir`` is resolved against.

    Returns:
        A context manager yielding the tracking URI in use.
    """
    import mlflow

    uri = tracking_uri(params, root)
    database = sqlite_path(uri)
    if database is not None:
        database.absolute().parent.mkdir(parents=True, exist_ok=True)
        check_database(database.absolute())
    saved = os.environ.get(ENV_URI)
    mlflow.set_tracking_uri(uri)
    logging.getLogger("mlflow.store.db.utils").addFilter(_without_database_tracebacks)  # once: addFilter dedupes
    try:
        yield uri
    except Exception as exc:
        cause = _database_failure(exc)
        if cause is None:
            raise
        _forget_open_stores()
        raise StoreError(_store_message(database or Path(uri), cause)) from None
    finally:
        mlflow.set_tracking_uri(saved)  # type: ignore[arg-type]  # None unsets both MLflow's URI and the variable


class StoreError(ValueError):
    """The MLflow store cannot be used (damaged, locked by another process, gone); the message is one line."""


STORE_WAIT_SECONDS = 10.0  # how long a store locked by another process is waited for


def check_database(database: Path) -> None:
    """Refuse a SQLite store that is not a database or stays locked by another process for ``STORE_WAIT_SECONDS``.

    A missing file is fine: MLflow creates a new store.

    Raises:
        StoreError: one line naming the file, what is wrong and what to do.
    """
    import sqlite3

    if not database.exists():
        return
    try:
        with closing(sqlite3.connect(f"{database.as_uri()}?mode=ro", uri=True, timeout=STORE_WAIT_SECONDS)) as db:
            db.execute("SELECT count(*) FROM sqlite_master").fetchone()
    except sqlite3.Error as exc:
        raise StoreError(_store_message(database, exc)) from None


def _without_database_tracebacks(record: logging.LogRecord) -> bool:
    """Drop MLflow's logged tracebacks of database errors: they are raised, and reported as one line."""
    return record.levelno < logging.ERROR


def _forget_open_stores() -> None:
    """Drop MLflow's cached stores and database engines, so the next use in this process opens the store afresh
    (e.g. a new database after the old one was deleted). These caches are private to MLflow: any that is gone
    is skipped.
    """
    from mlflow.store.model_registry.sqlalchemy_store import SqlAlchemyStore as RegistryStore
    from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore as TrackingStore
    from mlflow.tracking._model_registry.registry import ModelRegistryStoreRegistry
    from mlflow.tracking._tracking_service.registry import TrackingStoreRegistry

    for registry in (TrackingStoreRegistry, ModelRegistryStoreRegistry):
        getattr(getattr(registry, "_get_store_with_resolved_uri", None), "cache_clear", lambda: None)()
    for store in (TrackingStore, RegistryStore):
        engines = getattr(store, "_engine_map", None)
        for engine in list(engines.values()) if isinstance(engines, dict) else []:
            engine.dispose()
        if isinstance(engines, dict):
            engines.clear()


def _database_failure(exc: BaseException) -> BaseException | None:
    """The database error behind ``exc`` (SQLite's or SQLAlchemy's, possibly wrapped by MLflow), else None."""
    import sqlite3

    from sqlalchemy.exc import DBAPIError

    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, (sqlite3.Error, DBAPIError)):
            return seen
        seen = seen.__cause__ or seen.__context__
    return None


def _store_message(database: Path, exc: BaseException) -> str:
    """One line saying what is wrong with the store and what to do."""
    text = str(getattr(exc, "orig", None) or exc).strip().splitlines()
    detail = text[0] if text else type(exc).__name__
    if "locked" in detail:
        return (
            f"MLflow store {database} is locked by another process (waited {STORE_WAIT_SECONDS:.0f}s); "
            "try again when it is done"
        )
    if "no such table" in detail or "unable to open" in detail or "readonly" in detail:
        return f"MLflow store {database}: {detail}; it was removed or changed while in use, run the command again"
    return f"MLflow store {database} is damaged ({detail}); move it away (a new one is made) or restore a backup"


# MLflow 3 opens an experiment in its GenAI view unless told it holds classic model training runs.
EXPERIMENT_TAGS = {"mlflow.experimentKind": "custom_model_development"}


def ensure_experiment(name: str, uri: str) -> str:
    """The id of experiment ``name``, created (with :func:`artifact_location`) when missing, tagged as model training.

    Args:
        name: experiment name (``tracking.experiment``).
        uri: the tracking URI.

    Returns:
        The experiment id.

    Raises:
        ValueError: the experiment exists but was deleted.
    """
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    client = MlflowClient(uri)
    experiment = client.get_experiment_by_name(name)
    if experiment is None:
        try:
            return client.create_experiment(name, artifact_location=artifact_location(uri), tags=EXPERIMENT_TAGS)
        except MlflowException:  # created by a concurrent run in between
            experiment = client.get_experiment_by_name(name)
            if experiment is None:
                raise
    if experiment.lifecycle_stage != "active":
        raise ValueError(
            f"tracking.experiment {name!r} is deleted in {uri}; restore it in the MLflow UI or choose another name"
        )
    for key, value in EXPERIMENT_TAGS.items():
        if experiment.tags.get(key) != value:  # an experiment made before (or elsewhere): same view
            client.set_experiment_tag(experiment.experiment_id, key, value)
    return experiment.experiment_id


def executable(name: str) -> str:
    """A console script of this Python environment by full path, so a printed command works without activating it.

    Args:
        name: e.g. ``mlflow`` or ``prefect``.

    Returns:
        ``<dir of sys.executable>/<name>`` when that file exists, else ``name`` (found on PATH).
    """
    candidate = Path(sys.executable).parent / name
    return str(candidate) if candidate.is_file() else name


def ui_command(params: Params, root: Path | None = None, port: int = 5000) -> str:
    """The command a person runs to browse the runs in the MLflow UI.

    For a SQLite store the database directory is created, so the command works
    before any run was logged. A tracking server already serves the UI: its URI
    is returned instead of a command.

    Args:
        params: the run's parameters.
        root: directory a relative ``paths.mlruns_dir`` is resolved against.
        port: port the UI listens on (on 127.0.0.1).

    Returns:
        e.g. ``/abs/.venv/bin/mlflow ui --backend-store-uri sqlite:////abs/mlruns/mlflow.db
        --default-artifact-root file:///abs/mlruns/artifacts --host 127.0.0.1 --port 5000 --workers 1``.
    """
    uri = tracking_uri(params, root)
    if uri.startswith(("http://", "https://")):
        return uri
    parts = [executable("mlflow"), "ui", "--backend-store-uri", uri]
    artifacts = artifact_location(uri)
    if artifacts is not None:
        sqlite_path(uri).absolute().parent.mkdir(parents=True, exist_ok=True)  # type: ignore[union-attr]
        parts += ["--default-artifact-root", artifacts]
    parts += ["--host", "127.0.0.1", "--port", str(port), "--workers", "1"]
    return shlex.join(parts)
