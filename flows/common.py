"""What the flows share: parameters, the Prefect server check, the task runner, stage cache keys, run logs."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Callable, ParamSpec, Sequence, TypeVar, cast

from prefect import Flow, task
from prefect.task_runners import ThreadPoolTaskRunner

from gadms.config import Params, load_params
from gadms.results import plain
from gadms.tracking.redact import hide_override_secrets, redact_credentials, reveal_override_secrets

SERVER_CHECK_TIMEOUT_S = 10.0
LOCAL_API_URL = "http://127.0.0.1:4200/api"  # where `prefect server start` serves the API by default


def server_command() -> str:
    """The command that starts a Prefect server on 127.0.0.1:4200, its usage reporting off (it runs offline)."""
    import shlex

    from gadms.tracking.store import executable

    return f"PREFECT_SERVER_ANALYTICS_ENABLED=false {shlex.quote(executable('prefect'))} server start"


def start_server_hint() -> str:
    """How to start a Prefect server and point this shell at it."""
    return f"start one with `{server_command()}`, then `export PREFECT_API_URL={LOCAL_API_URL}`"


def prefect_api_url() -> str:
    """The Prefect API this process talks to (``PREFECT_API_URL``, from the environment or the profile); empty when
    none is set (Prefect then starts a temporary server of its own).
    """
    from prefect.settings import get_current_settings

    return str(get_current_settings().api.url or "").rstrip("/")


def prefect_ui_url() -> str:
    """The UI of the Prefect server in use (derived from ``PREFECT_API_URL``); empty when no server is set."""
    from prefect.settings import get_current_settings

    return str(get_current_settings().ui_url or "").rstrip("/") if prefect_api_url() else ""


def require_prefect_server(command: str) -> str:
    """The URL of the Prefect API in use (credentials redacted, for showing), once it has answered its health check.

    Args:
        command: what needs the server, for the message (``gadms deploy``).

    Raises:
        ValueError: ``PREFECT_API_URL`` is not set, or nothing answers there as a Prefect server; one line that
            says how to start one.
    """
    import httpx
    from prefect.settings import get_current_settings

    url = prefect_api_url()
    if not url:
        raise ValueError(
            f"{command} needs a Prefect server to keep its schedule, and PREFECT_API_URL is not set: "
            + start_server_hint()
        )
    shown = redact_credentials(url)
    key = get_current_settings().api.key
    headers = {"Authorization": f"Bearer {key.get_secret_value()}"} if key else {}
    try:
        answer = httpx.get(f"{url}/health", headers=headers, timeout=SERVER_CHECK_TIMEOUT_S)
    except httpx.HTTPError as exc:
        raise ValueError(
            f"{command}: no Prefect server answers at PREFECT_API_URL={shown} ({type(exc).__name__}); "
            + start_server_hint()
        ) from None
    if answer.status_code != 200:
        raise ValueError(
            f"{command}: PREFECT_API_URL={shown} does not answer as a Prefect server (GET /health: HTTP "
            f"{answer.status_code}); " + start_server_hint()
        )
    return shown


def run_logger() -> Any:
    """The Prefect run logger inside a flow or task run; a plain logger when called outside one (``task.fn``)."""
    import logging

    from prefect import get_run_logger
    from prefect.exceptions import MissingContextError

    try:
        return get_run_logger()
    except MissingContextError:
        return logging.getLogger("gadms.flows")


def epoch_logger(stage: str, epochs: int) -> Callable[[Any], None]:
    """An ``on_epoch`` callback writing one line per epoch into the Prefect run log.

    Args:
        stage: what trains (``pretrain``, ``finetune cuhk-pedes``).
        epochs: the number of epochs planned.

    Returns:
        ``log(EpochLog)``: ``pretrain epoch 2/5: sdm_loss 2.913, mtp_loss 6.02, lr 0.0005, 310 samples/s, 4.1 s``.
    """

    def log(entry: Any) -> None:
        losses = ", ".join(f"{name} {value:.4g}" for name, value in entry.losses.items())
        run_logger().info(
            f"{stage} epoch {entry.epoch + 1}/{epochs}: {losses}, lr {entry.lr:.3g}, "
            f"{entry.samples_per_s:.0f} samples/s, {entry.seconds:.1f} s"
        )

    return log


def log_run_link(params: Params, what: str, run_id: str) -> str:
    """Write where ``what``'s MLflow run is into the Prefect run log; return the link's URL."""
    from gadms.tracking.links import run_link

    link = run_link(params, run_id)
    run_logger().info(f"{what}: {link.text()}")
    return link.url


P = ParamSpec("P")
R = TypeVar("R")


class CredentialSafeFlow(Flow[P, R]):
    """A Prefect flow whose recorded parameters never hold a credential.

    Prefect stores a flow run's parameters in its database and shows them in
    the UI. Here every credential in them (a URL's password, a secret query
    parameter) that is not already a ``[REDACTED:GADMS_SET_SECRET_<n>]`` stand-in
    is stored as ``[REDACTED]``, however the flow is called (the CLI's wrappers
    hide them already; a direct call from Python may not). The function itself
    still receives the parameters as given. A copy made with ``with_options``
    (e.g. to pick the task runner) stays one.
    """

    def serialize_parameters(self, parameters: dict[str, Any]) -> dict[str, Any]:
        return {key: _without_credentials(value) for key, value in super().serialize_parameters(parameters).items()}

    def with_options(self, *args: Any, **options: Any) -> CredentialSafeFlow[P, R]:
        copy = super().with_options(*args, **options)  # Prefect makes a plain Flow: it would record credentials
        copy.__class__ = type(self)
        return cast("CredentialSafeFlow[P, R]", copy)


def _without_credentials(value: Any) -> Any:
    """A serialized parameter with each credential redacted (strings, and inside lists and mappings)."""
    if isinstance(value, str):
        return redact_credentials(value)
    if isinstance(value, list):
        return [_without_credentials(item) for item in value]
    if isinstance(value, dict):
        return {key: _without_credentials(item) for key, item in value.items()}
    return value


def gadms_flow(**options: Any) -> Callable[[Callable[P, R]], CredentialSafeFlow[P, R]]:
    """``@prefect.flow(**options)`` for the project's flows, recording parameters without credentials."""

    def decorate(function: Callable[P, R]) -> CredentialSafeFlow[P, R]:
        return CredentialSafeFlow(function, **options)

    return decorate


def load_run_params(params_file: str | Path, overrides: Sequence[str] = ()) -> Params:
    """The validated parameters of a flow run (file + ``section.key=value`` overrides, credentials revealed).

    Called once per run, by the flow that starts it (``pipeline_flow``, or a stage run on its own); the stage flows
    take the :class:`Params` it returns.
    """
    from gadms.file_rules import use_limits

    params = load_params(Path(params_file), reveal_override_secrets(overrides))
    use_limits(params.curation.source)  # every reader of the flow run (and its workers) takes the params' caps
    return params


def safe_overrides(overrides: Sequence[str] | None) -> list[str]:
    """``--set`` overrides fit for Prefect's flow-run parameters: credentials kept in this process's environment."""
    return hide_override_secrets(list(overrides or []))


def task_runner(params: Params) -> Any:
    """A thread pool by default; Dask (an existing scheduler, or a local cluster) when configured.

    Args:
        params: ``orchestration.task_runner``, ``max_workers`` and ``dask_address`` are used.

    Returns:
        A Prefect task runner for ``flow.with_options(task_runner=...)``.
    """
    cfg = params.orchestration
    if cfg.task_runner == "thread":
        return ThreadPoolTaskRunner(max_workers=cfg.max_workers)
    from prefect_dask import DaskTaskRunner

    if cfg.dask_address:
        return DaskTaskRunner(address=cfg.dask_address)
    return DaskTaskRunner(
        cluster_class="distributed.LocalCluster",
        cluster_kwargs={
            "n_workers": cfg.max_workers,
            "threads_per_worker": 1,
            "processes": True,
            "dashboard_address": None,
        },
    )


def cache_on_inputs(ignore: Sequence[str] = ()) -> Callable[[Any, dict[str, Any]], str | None]:
    """A ``cache_key_fn``: the task's name and result type plus its inputs (parameters, paths, stage results).

    The result type is part of the key, so a result cached in another shape (an earlier version's) is not reused.

    Args:
        ignore: inputs that do not change the result (e.g. the MLflow parent run).

    Returns:
        The key function.
    """

    def key(context: Any, parameters: dict[str, Any]) -> str | None:
        inputs = {k: v for k, v in parameters.items() if k not in ignore}
        returns = str(getattr(context.task.fn, "__annotations__", {}).get("return", ""))
        text = json.dumps(
            {"task": context.task.name, "returns": returns, "inputs": plain(inputs)}, sort_keys=True, default=str
        )
        return hashlib.sha256(text.encode("utf-8")).hexdigest()

    return key


def stage_task(name: str, run_name: str | None = None) -> Callable[[Callable[P, R]], Any]:
    """``@task`` for a tracked stage: its result persisted and cached on its inputs, the MLflow parent run aside."""
    return task(
        name=name, task_run_name=run_name, persist_result=True, cache_key_fn=cache_on_inputs(ignore=("parent_run_id",))
    )


def with_retries(task: Any, params: Params) -> Any:
    """``task`` retried ``orchestration.retries`` times with ``orchestration.retry_delays_s`` between tries (for a
    task that calls a service: a DVC remote, a captioning server).
    """
    cfg = params.orchestration
    return task.with_options(retries=cfg.retries, retry_delay_seconds=list(cfg.retry_delays_s))


def rerun_if_missing(task: Any, output: Path) -> Any:
    """``task`` that ignores (and overwrites) its cached result when ``output`` is gone, e.g. a deleted run
    directory.
    """
    return task.with_options(refresh_cache=not Path(output).exists())
