"""``gadms serve-model``: the champion's embeddings over REST, by MLflow's own model server."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from gadms.cli.common import cli_params, user_errors
from gadms.cli.options import ParamsOpt, SetOpt


def serve_model(
    model: Optional[str] = typer.Option(
        None,
        "--model",
        metavar="URI",
        help="Model URI (default: models:/<tracking.registered_model>@<tracking.champion_alias>, i.e. "
        "models:/gadms-person-retrieval@champion); models:/NAME/VERSION, runs:/RUN/model also work.",
    ),
    port: int = typer.Option(
        5001, "--port", min=1, max=65535, help="Port (5001: mlflow ui takes 5000, Prefect 4200, gadms serve 8765)."
    ),
    host: str = typer.Option("127.0.0.1", "--host", help="Interface to listen on."),
    params: Optional[Path] = ParamsOpt,
    set_: Optional[list[str]] = SetOpt,
) -> None:
    """Serve the registered champion from the project's MLflow store with `mlflow models serve`, until stopped.

    POST /invocations with one column per request answers with L2-normalised embeddings (rows x embed_dim):
    {"dataframe_split": {"columns": ["text"], "data": [["a man in red"]]}}, or the column "image" with base64
    JPEG/PNG images. GET /ping answers once the model is loaded. The store comes from the tracking settings
    (MLFLOW_TRACKING_URI, tracking.uri, else paths.mlruns_dir/mlflow.db); an alias is pinned to its version at
    start-up. Ctrl-C (or SIGTERM) stops the server and everything it started.
    """
    from gadms.lifetime import guard

    guard("gadms serve-model")  # the model server and its uvicorn workers end with this command
    from gadms.tracking.serve_model import serve

    with user_errors():
        p = cli_params(params, set_)
        status = serve(p, model, host, port, echo=typer.echo)
    if status != 0:
        typer.echo(f"error: the MLflow model server exited with status {status}", err=True)
        raise typer.Exit(1)
