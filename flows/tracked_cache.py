"""Cached stage results that point into MLflow are used only while what they point at is still there.

A stage's cached result holds MLflow run ids (pretrain, finetune, evaluate) or a model version (promote). When
the store lost them (a deleted run, a garbage-collected or new ``mlflow.db``), reusing the result would make
every later pipeline fail on the missing run; instead the stage runs again with its cache refreshed. Whether
they are still there is asked with :func:`gadms.tracking.pipeline_stages.run_exists` and ``version_exists``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

from flows.common import rerun_if_missing, run_logger
from gadms.config import Params
from gadms.tracking.pipeline_stages import run_exists


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


def tracked_stage(task: Any, params: Params, *args: Any, output: Path | None = None) -> Any:
    """``task(*args)``, a stage whose result names an MLflow run (cached on its inputs); run again when that run
    is gone from the store, or when ``output`` (the stage's model file) is.
    """
    if output is not None:
        task = rerun_if_missing(task, output)
    return recompute_if_gone(task, lambda cached: run_exists(params, cached.run_id), *args)
