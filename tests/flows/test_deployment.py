"""The scheduled-retraining deployment: prefect.yaml and `gadms deploy` agree with params.yaml."""

import importlib
from pathlib import Path

import yaml

from gadms.config import load_params

REPO = Path(__file__).resolve().parents[2]


def test_prefect_yaml_schedules_the_pipeline_weekly_with_valid_parameters():
    spec = yaml.safe_load((REPO / "prefect.yaml").read_text())
    (deployment,) = spec["deployments"]
    params = load_params(REPO / deployment["parameters"]["params_file"], deployment["parameters"]["overrides"])
    (schedule,) = deployment["schedules"]
    assert (
        schedule["cron"] == params.orchestration.schedule_cron and schedule["timezone"] == params.orchestration.timezone
    )
    assert schedule["active"] is True
    module, name = deployment["entrypoint"].split(":")
    flow = getattr(importlib.import_module(module.removesuffix(".py").replace("/", ".")), name)
    assert flow.name == "gadms-pipeline"
    assert set(deployment["parameters"]) <= set(flow.parameters.properties)


def test_served_deployment_carries_the_cron_schedule_and_parameters():
    from flows.pipeline import deployment_of

    params = load_params(REPO / "params.yaml", ["orchestration.schedule_cron=0 4 * * 0"])
    deployment = deployment_of(params, "params.yaml", ["train.epochs=3"])
    (schedule,) = deployment.schedules
    assert schedule.schedule.cron == "0 4 * * 0" and schedule.schedule.timezone == "UTC"
    assert deployment.parameters == {"params_file": "params.yaml", "overrides": ["train.epochs=3"]}


def test_both_deployments_run_one_at_a_time_and_cancel_the_runs_that_come_due_meanwhile():
    from prefect.client.schemas.objects import ConcurrencyLimitStrategy

    from flows.pipeline import ONE_AT_A_TIME, deployment_of

    assert ONE_AT_A_TIME.limit == 1 and ONE_AT_A_TIME.collision_strategy == ConcurrencyLimitStrategy.CANCEL_NEW
    (deployment,) = yaml.safe_load((REPO / "prefect.yaml").read_text())["deployments"]
    assert deployment["concurrency_limit"] == {"limit": 1, "collision_strategy": "CANCEL_NEW"}
    served = deployment_of(load_params(REPO / "params.yaml", []), "params.yaml", [])
    assert served.concurrency_limit == 1
    assert served.concurrency_options.collision_strategy == ConcurrencyLimitStrategy.CANCEL_NEW
