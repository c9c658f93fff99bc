"""Cached stage results that point into MLflow are used only while what they point at is still there.

A stage's cached result holds MLflow run ids (pretrain, finetune, evaluate) or a model version (promote). When
the store lost them (a deleted run, a garbage-collected or new ``mlflow.db``), reusing the result would make
every later pipeline fail on the missing run; instead the stage runs again with its cache refreshed. Whether
they are still there is asked with :func:`gadms.tracking.pipeline_stages.run_exists` and ``version_exists``.
"""

from __future__ import annotations

from typing import Any, Callable

from flows.common import run_logger


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
