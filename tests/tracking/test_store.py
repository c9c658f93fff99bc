"""Where runs go: tracking URI precedence, the local SQLite store, the UI command."""

import os
import shlex
from pathlib import Path

import pytest

from gadms.config import params_from_dict
from gadms.tracking.store import artifact_location, sqlite_path, tracking_uri, ui_command, using_store


def _params(uri=None, mlruns="mlruns"):
    return params_from_dict({"paths": {"mlruns_dir": mlruns}, "tracking": {"uri": uri}})


def test_default_is_sqlite_under_mlruns_dir_resolved_against_root(tmp_path):
    uri = tracking_uri(_params(mlruns="runs/ml"), tmp_path)
    assert uri == f"sqlite:///{tmp_path}/runs/ml/mlflow.db"
    assert sqlite_path(uri) == tmp_path / "runs/ml/mlflow.db"
    assert artifact_location(uri) == (tmp_path / "runs/ml/artifacts").as_uri()


def test_params_uri_beats_default_and_env_beats_both(tmp_path, monkeypatch):
    params = _params(uri="http://127.0.0.1:5999")
    assert tracking_uri(params, tmp_path) == "http://127.0.0.1:5999"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "sqlite:////elsewhere/x.db")
    assert tracking_uri(params, tmp_path) == "sqlite:////elsewhere/x.db"
    assert tracking_uri(_params(), tmp_path) == "sqlite:////elsewhere/x.db"


def test_default_root_is_the_working_directory_at_call_time(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert tracking_uri(_params()) == f"sqlite:///{tmp_path}/mlruns/mlflow.db"


def test_artifacts_only_chosen_for_sqlite_stores():
    assert artifact_location("http://127.0.0.1:5000") is None
    assert artifact_location("sqlite:////data/db/mlflow.db") == "file:///data/db/artifacts"


def test_using_store_restores_the_environment(tmp_path, monkeypatch):
    import mlflow

    with using_store(_params(), tmp_path) as uri:
        assert mlflow.get_tracking_uri() == uri
        assert (tmp_path / "mlruns").is_dir()
    # mlflow.set_tracking_uri exports the variable; left behind, it would beat the next params.yaml
    assert "MLFLOW_TRACKING_URI" not in os.environ
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "sqlite:////mine/x.db")
    with using_store(_params(), tmp_path) as uri:
        assert uri == "sqlite:////mine/x.db"
    assert os.environ["MLFLOW_TRACKING_URI"] == "sqlite:////mine/x.db"


def test_ui_command_opens_the_local_store_and_needs_nothing_running(tmp_path):
    command = shlex.split(ui_command(_params(), tmp_path, port=5123))
    assert command[1] == "ui" and Path(command[0]).name == "mlflow" and Path(command[0]).is_file()  # no venv needed
    assert command[command.index("--backend-store-uri") + 1] == f"sqlite:///{tmp_path}/mlruns/mlflow.db"
    assert command[command.index("--default-artifact-root") + 1] == (tmp_path / "mlruns/artifacts").as_uri()
    assert command[command.index("--port") + 1] == "5123"
    assert (tmp_path / "mlruns").is_dir()  # sqlite cannot create the folder itself


def test_ui_command_for_a_server_is_its_address(tmp_path):
    assert ui_command(_params(uri="http://127.0.0.1:5000"), tmp_path) == "http://127.0.0.1:5000"


def test_deleted_experiment_is_a_one_line_error(params, store_dir):
    from mlflow import MlflowClient

    from gadms.tracking.store import ensure_experiment

    with using_store(params) as uri:
        experiment_id = ensure_experiment(params.tracking.experiment, uri)
        assert ensure_experiment(params.tracking.experiment, uri) == experiment_id
        MlflowClient(uri).delete_experiment(experiment_id)
        with pytest.raises(ValueError, match="is deleted") as err:
            ensure_experiment(params.tracking.experiment, uri)
    assert "\n" not in str(err.value)
    assert Path(store_dir, "mlflow.db").is_file()
