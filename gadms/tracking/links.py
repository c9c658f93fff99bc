"""Where a person finds an MLflow run: a link when the store is a server, else the run id and the UI command.

What the flows write into their Prefect logs and the pipeline's Prefect
artifact. With ``tracking.uri`` (or ``MLFLOW_TRACKING_URI``) an ``http(s)``
server the link is the run's page on it; with the local SQLite store the
link is the page ``mlflow ui`` serves once started with :func:`ui_command`'s
command (default port 5000). Credentials in a server URI never appear.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from gadms.config import Params
from gadms.tracking.store import tracking_uri, ui_command

UI_PORT = 5000
LOCAL_UI = f"http://127.0.0.1:{UI_PORT}"


@dataclass(frozen=True)
class RunLink:
    """How to open one MLflow run.

    Attributes:
        run_id: the run.
        url: its page in the MLflow UI.
        served: whether the UI is already running (a tracking server); else ``command`` starts it.
        command: the ``mlflow ui`` command for a local store, empty for a server.
    """

    run_id: str
    url: str
    served: bool
    command: str

    def text(self) -> str:
        """One line for a log: the link, plus how to start the UI when the store is local."""
        if self.served:
            return f"MLflow run {self.run_id}: {self.url}"
        return f"MLflow run {self.run_id}: {self.url} (after starting the UI: {self.command})"


def run_link(params: Params, run_id: str, experiment_id: str | None = None, root: Path | None = None) -> RunLink:
    """The link to a run's page.

    Args:
        params: the parameters the run was logged with (they name the store).
        run_id: the run.
        experiment_id: its experiment (looked up in the store when None).
        root: directory a relative ``paths.mlruns_dir`` is resolved against.

    Returns:
        The :class:`RunLink`.
    """
    uri = tracking_uri(params, root)
    if experiment_id is None:
        from mlflow import MlflowClient

        experiment_id = MlflowClient(uri).get_run(run_id).info.experiment_id
    served = uri.startswith(("http://", "https://"))
    base = _without_credentials(uri) if served else LOCAL_UI
    url = f"{base.rstrip('/')}/#/experiments/{experiment_id}/runs/{run_id}"
    return RunLink(run_id, url, served, "" if served else ui_command(params, root, UI_PORT))


def _without_credentials(uri: str) -> str:
    """A server URI without user, password or query (host, port and path kept)."""
    parts = urlsplit(uri)
    host = parts.hostname or ""
    netloc = f"[{host}]" if ":" in host else host
    if parts.port is not None:
        netloc += f":{parts.port}"
    return urlunsplit((parts.scheme, netloc, parts.path, "", ""))
