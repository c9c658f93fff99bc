"""A cached stage result whose MLflow run is gone is recomputed (and cached again), not reused."""

import uuid

import pytest
from mlflow import MlflowClient
from prefect import flow, task

from flows.tracked_cache import recompute_if_gone
from gadms.config import params_from_dict
from gadms.tracking.mlflow_run import tracked_run
from gadms.tracking.pipeline_stages import run_exists, version_exists
from gadms.tracking.store import tracking_uri

KEY = uuid.uuid4().hex


@task(persist_result=True, cache_key_fn=lambda *_: KEY)
def logged_stage(mlruns: str) -> dict[str, str]:
    """A stage that logs an MLflow run and returns its id (cached under one key)."""
    with tracked_run(params_from_dict({"paths": {"mlruns_dir": mlruns}}), "cached", "pretrain", None) as run:
        pass
    return {"run_id": run.run_id}


@flow
def pipeline(mlruns: str) -> dict[str, str]:
    params = params_from_dict({"paths": {"mlruns_dir": mlruns}})
    return recompute_if_gone(logged_stage, lambda cached: run_exists(params, cached["run_id"]), mlruns)


def test_a_cached_result_whose_run_was_deleted_is_recomputed(prefect_api, tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    mlruns = str(tmp_path / "mlruns")
    first = pipeline(mlruns)["run_id"]
    assert pipeline(mlruns)["run_id"] == first  # cached
    MlflowClient(tracking_uri(params_from_dict({"paths": {"mlruns_dir": mlruns}}))).delete_run(first)
    again = pipeline(mlruns)["run_id"]
    assert again != first
    assert pipeline(mlruns)["run_id"] == again  # the new result is the cached one now


def test_a_missing_model_version_or_run_is_reported_gone(tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    params = params_from_dict({"paths": {"mlruns_dir": str(tmp_path / "mlruns")}})
    assert not version_exists(params, 7)
    assert not run_exists(params, uuid.uuid4().hex)


@pytest.fixture(autouse=True)
def _no_shell_store(monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
