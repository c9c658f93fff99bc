"""Champion promotion: first version promoted, worse kept out, better promoted, other benchmark not comparable."""

import pytest
from mlflow import MlflowClient

from gadms.tracking.mlflow_run import tracked_run
from gadms.tracking.registry import Champion, promotion_decision, register_and_maybe_promote
from gadms.tracking.store import tracking_uri


@pytest.fixture(scope="module")
def logged_run(new_params, tiny_model):
    """One run with the tiny model logged as ``model`` (registered again and again below)."""
    params = new_params()
    with tracked_run(params, "registry", "finetune", None) as run:
        run.log_model(tiny_model)
    return run.run_id


@pytest.mark.parametrize(
    "benchmark, r1, champion, promoted, reason",
    [
        ("cuhk-pedes", 10.0, None, True, "no champion yet"),
        ("cuhk-pedes", 50.0, Champion(3, "cuhk-pedes", 40.0), True, "beats champion v3"),
        ("cuhk-pedes", 40.0, Champion(3, "cuhk-pedes", 40.0), False, "does not beat"),
        ("cuhk-pedes", 90.0, Champion(3, "rstpreid", 40.0), False, "not comparable"),
        ("cuhk-pedes", 90.0, Champion(3, "cuhk-pedes", None), False, "not comparable"),
        ("cuhk-pedes", 90.0, Champion(3, None, None), False, "no benchmark tag"),
    ],
)
def test_promotion_decision(benchmark, r1, champion, promoted, reason):
    decision, why = promotion_decision(benchmark, r1, champion)
    assert decision is promoted
    assert reason in why and "\n" not in why


def test_champion_moves_only_to_a_better_model_on_the_same_benchmark(logged_run, new_params):
    params = new_params()
    client = MlflowClient(tracking_uri(params))
    name, alias = params.tracking.registered_model, params.tracking.champion_alias

    def champion_version():
        return int(client.get_model_version_by_alias(name, alias).version)

    first = register_and_maybe_promote(logged_run, "model", params, "cuhk-pedes", 40.0)
    assert (first.version, first.promoted, first.previous_version) == (1, True, None)
    assert champion_version() == 1

    worse = register_and_maybe_promote(logged_run, "model", params, "cuhk-pedes", 35.0)
    assert (worse.version, worse.promoted, worse.previous_version, worse.previous_r1) == (2, False, 1, 40.0)
    assert champion_version() == 1

    better = register_and_maybe_promote(logged_run, "model", params, "cuhk-pedes", 45.5)
    assert (better.version, better.promoted, better.previous_r1) == (3, True, 40.0)
    assert champion_version() == 3

    elsewhere = register_and_maybe_promote(logged_run, "model", params, "rstpreid", 99.0)
    assert (elsewhere.version, elsewhere.promoted) == (4, False)
    assert "not comparable" in elsewhere.reason and "rstpreid" in elsewhere.reason
    assert champion_version() == 3

    tags = client.get_model_version(name, "4").tags
    assert tags["benchmark"] == "rstpreid" and float(tags["R1"]) == 99.0 and tags["promoted"] == "false"
    assert client.get_model_version(name, "3").tags["promoted"] == "true"
    assert [int(v.version) for v in client.search_model_versions(f"name = '{name}'")] == [4, 3, 2, 1]


def test_r1_must_be_a_percentage(logged_run, params):
    with pytest.raises(ValueError, match=r"r1 must be a percentage"):
        register_and_maybe_promote(logged_run, "model", params, "cuhk-pedes", 140.0)


def test_versions_and_the_model_carry_descriptions_with_data_settings_and_decision(new_params, tiny_model):
    params = new_params()
    with tracked_run(params, "described", "finetune", "md5:corpus") as run:
        run.log_metrics("cuhk-pedes", {"R1": 41.23456, "mAP": 30.0})
        run.log_model(tiny_model)
    register_and_maybe_promote(run.run_id, "model", params, "cuhk-pedes", 41.23456)
    client = MlflowClient(tracking_uri(params))
    text = client.get_model_version(params.tracking.registered_model, "1").description
    assert "Fine-tuned on cuhk-pedes: R1 41.23 (cuhk-pedes/R1 41.23, cuhk-pedes/mAP 30.00)" in text
    assert "DVC hash md5:corpus" in text and f"run {run.run_id}" in text and "finetune.lr=" in text
    assert "Decision: no champion yet" in text
    assert "person retrieval" in client.get_registered_model(params.tracking.registered_model).description


def test_the_experiment_opens_as_model_training_not_genai(params):
    with tracked_run(params, "kind", "pretrain", None) as run:
        pass
    client = MlflowClient(tracking_uri(params))
    experiment = client.get_experiment(client.get_run(run.run_id).info.experiment_id)
    assert experiment.tags["mlflow.experimentKind"] == "custom_model_development"
