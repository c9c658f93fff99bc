"""Where runs are stored: the tracking URI, the local SQLite store, the UI command.

Precedence: the ``MLFLOW_TRACKING_URI`` environment variable, then
``tracking.uri`` in params.yaml, else a SQLite database
``<paths.mlruns_dir>/mlflow.db`` with artifacts under
``<paths.mlruns_dir>/artifacts``. A SQLite store needs no server: runs are
written straight to the file, and ``mlflow ui`` (see :func:`ui_command`) reads
it whenever a person wants to look.
"""

from __future__ import annotations

import os
import shlex
import sys
from collections.abc import Iterator
from contextlib import contextmanager
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
    threads must use the same store.

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
    saved = os.environ.get(ENV_URI)
    mlflow.set_tracking_uri(uri)
    try:
        yield uri
    finally:
        mlflow.set_tracking_uri(saved)  # type: ignore[arg-type]  # None unsets both MLflow's URI and the variable


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
