"""``gadms serve-model``: the registered champion behind MLflow's own model server, from the project's store.

``mlflow models serve -m models:/NAME@champion`` on its own does not know the project's store (it
would look in, and create, ``./mlflow.db``), needs ``uvicorn`` on PATH and takes port 5000, the port
of the ``mlflow ui`` line the pipeline prints. This command checks that the store and the model
version exist (one line when not), then runs ``mlflow models serve --env-manager local`` in the
foreground with the project's tracking URI in its environment and this environment's ``bin`` folder
first on PATH, on 127.0.0.1:5001 by default (``mlflow ui`` uses 5000, Prefect 4200, ``gadms serve``
8765). An alias is pinned to its version first, so what is served is what the first line names.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from gadms.config import Params
from gadms.tracking.registry import pin_registry_uri
from gadms.tracking.store import ENV_URI, executable, sqlite_path, tracking_uri

DEFAULT_PORT = 5001
DEFAULT_HOST = "127.0.0.1"


class ServeModelError(ValueError):
    """The model cannot be served; the message is one line naming the model URI or the port and what is wrong."""


@dataclass(frozen=True)
class ServedModel:
    """What will be served.

    Attributes:
        uri: the URI as asked, e.g. ``models:/gadms-person-retrieval@champion``.
        pinned: the URI handed to MLflow (an alias replaced by its version, e.g. ``models:/NAME/3``).
        label: the model in words, e.g. ``gadms-person-retrieval v3``.
        store: the tracking URI the model is read from.
    """

    uri: str
    pinned: str
    label: str
    store: str


def champion_uri(params: Params) -> str:
    """``models:/<tracking.registered_model>@<tracking.champion_alias>``."""
    return f"models:/{params.tracking.registered_model}@{params.tracking.champion_alias}"


def resolve_model(params: Params, uri: str | None = None) -> ServedModel:
    """Check that the store holds the model ``uri`` names and pin an alias to its version.

    Args:
        params: the project's parameters (their tracking settings give the store).
        uri: a model URI (default: the champion, :func:`champion_uri`). ``models:/NAME@ALIAS`` and
            ``models:/NAME/VERSION`` are checked in the registry; other URIs (``runs:/``, a logged
            model id, a folder) are handed to MLflow as they are.

    Returns:
        The model to serve.

    Raises:
        ServeModelError: no local store, no such registered model, version or alias, or an unreadable store.
    """
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    uri = uri or champion_uri(params)
    store = tracking_uri(params)
    database = sqlite_path(store)
    if database is not None and not database.is_file():  # checked first: MLflow would create an empty store
        raise ServeModelError(
            f"{uri}: no MLflow store at {database} (paths.mlruns_dir; nothing was registered yet): run gadms pipeline "
            "first, which registers and promotes the champion"
        )
    try:
        label, pinned = pin_registry_uri(MlflowClient(store), uri)
    except MlflowException as exc:
        first = (exc.message.strip().splitlines() or [type(exc).__name__])[0].rstrip(".")
        hint = "; gadms pipeline registers the model and promotes its champion" if _missing(exc) else ""
        raise ServeModelError(f"{uri}: {first} in the MLflow store {store}{hint}") from None
    return ServedModel(uri, pinned, label, store)


def _missing(exc: Exception) -> bool:
    """Whether MLflow's error says the registered model, version or alias does not exist."""
    return getattr(exc, "error_code", "") == "RESOURCE_DOES_NOT_EXIST"


def check_port_free(host: str, port: int) -> None:
    """Refuse a port another process listens on, before the model server spends its start-up loading the model.

    Raises:
        ServeModelError: the port is taken or the host cannot be bound.
    """
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        raise ServeModelError(f"--host {host}: not an address of this machine ({exc.strerror})") from None
    family, _, _, _, address = infos[0]
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn does
        try:
            probe.bind(address)
        except OSError as exc:
            raise ServeModelError(
                f"--port {port}: cannot listen on {host}:{port} ({exc.strerror}); pick another port with --port"
            ) from None


def serve_command(model: ServedModel, host: str, port: int) -> list[str]:
    """The ``mlflow models serve`` command line (the MLflow of this environment, by full path)."""
    return [
        executable("mlflow"), "models", "serve", "-m", model.pinned, "--env-manager", "local",
        "-h", host, "-p", str(port),
    ]  # fmt: skip


def server_env(model: ServedModel) -> dict[str, str]:
    """This environment plus the store's tracking URI and this Python's ``bin`` folder first on PATH.

    MLflow starts ``uvicorn`` by name from PATH, which without an activated virtual environment misses it.
    Its per-file download bar is off (a logged model carries the gadms code: 150 files, a line each).
    """
    bin_dir = str(Path(sys.executable).parent)
    path = os.environ.get("PATH", "")
    return {
        **os.environ,
        ENV_URI: model.store,
        "PATH": bin_dir + (os.pathsep + path if path else ""),
        "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false",
    }


def serve(params: Params, uri: str | None, host: str, port: int, echo=print) -> int:
    """Serve the model in the foreground until the server stops or this process is stopped.

    Args:
        params: the project's parameters.
        uri: the model URI (default: the champion).
        host: interface to listen on.
        port: port to listen on.
        echo: prints the one line saying what is served where.

    Returns:
        The model server's exit status.

    Raises:
        ServeModelError: see :func:`resolve_model` and :func:`check_port_free`.
    """
    model = resolve_model(params, uri)
    check_port_free(host, port)
    url = f"http://{host}:{port}"
    shown = model.uri if model.label == model.uri else f"{model.uri} ({model.label})"
    echo(f"serving {shown} from {model.store} on {url}: POST {url}/invocations; Ctrl-C stops")
    return subprocess.run(serve_command(model, host, port), env=server_env(model), stdin=subprocess.DEVNULL).returncode
