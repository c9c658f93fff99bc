"""Run links in the Prefect logs: a server's page without its credentials, or the local UI's page and command."""

from gadms.config import params_from_dict
from gadms.tracking.links import run_link


def test_a_server_link_is_its_run_page_without_credentials(monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    params = params_from_dict({"tracking": {"uri": "https://ci:s3cret@mlflow.example.org:8443/ml/?token=abcd"}})
    link = run_link(params, "abc123", experiment_id="7")
    assert link.url == "https://mlflow.example.org:8443/ml/#/experiments/7/runs/abc123"
    assert link.served and link.command == "" and "s3cret" not in link.text() and "abcd" not in link.text()


def test_a_local_store_link_comes_with_the_command_that_serves_it(params):
    from mlflow import MlflowClient

    from gadms.tracking.mlflow_run import tracked_run
    from gadms.tracking.store import tracking_uri

    with tracked_run(params, "linked", "pretrain", None) as run:
        pass
    experiment = MlflowClient(tracking_uri(params)).get_run(run.run_id).info.experiment_id
    link = run_link(params, run.run_id)
    assert link.url == f"http://127.0.0.1:5000/#/experiments/{experiment}/runs/{run.run_id}" and not link.served
    assert " ui --backend-store-uri sqlite:///" in link.command and "--port 5000" in link.command
    assert link.text() == f"MLflow run {run.run_id}: {link.url} (after starting the UI: {link.command})"
