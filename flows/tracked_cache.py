"""Cached stage results that point into MLflow are used only while what they point at is still there.

A stage's cached result holds MLflow run ids (pretrain, finetune, evaluate) or a model version (promote). When
the store lost them (a deleted run, a garbage-collected or new ``mlflow.db``), reusing the result would make
every later pipeline fail on the missing run; instead the stage runs again with its cache refreshed.
"""

from __future__ import annotations

from typing import Any, Callable

from flows.common import run_logger
from gadms.config import Params


def run_exists(params: Params, run_id: str) -> bool:
    """Whether MLflow run ``run_id`` is in the store and not deleted."""
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    from gadms.tracking.store import using_store

    with using_store(params) as uri:
        try:
            return MlflowClient(uri).get_run(run_id).info.lifecycle_stage == "active"
        except MlflowException:
            return False


def version_exists(params: Params, version: int | str) -> bool:
    """Whether version ``version`` of ``tracking.registered_model`` is in the registry."""
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    from gadms.tracking.store import using_store

    with using_store(params) as uri:
        try:
            MlflowClient(uri).get_model_version(params.tracking.registered_model, str(version))
            return True
        except MlflowException:
            return False


def recompute_if_gone(task: Any, still_there: Callable[[Any], bool], *args: Any) -> Any:
    """Call ``task(*args)``; when the (possibly cached) result fails ``still_there``, run it again, refreshing the
    cache.

    Args:
        task: a Prefect task (or ``task.with_options(...)``).
        still_there: checks that what the result points at (a run, a model version) still exists.
        args: the task's arguments.

    Returns:
        The result, recomputed when the cached one pointed at something gone.
    """
    result = task(*args)
    if still_there(result):
        return result
    run_logger().warning(f"{task.name}: the cached result points at an MLflow run or version that is gone; recomputing")
    return task.with_options(refresh_cache=True)(*args)
