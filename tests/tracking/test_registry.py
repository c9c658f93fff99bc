"""Champion promotion: first version promoted, worse kept out, better promoted, other benchmark not comparable."""

import pytest
from mlflow import MlflowClient

from gadms.tracking.registry import Champion, promotion_decision, register_and_maybe_promote
from gadms.tracking.runs import tracked_run
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
    assert (first.version, first.promoted, first.previous_champion_version) == (1, True, None)
    assert champion_version() == 1

    worse = register_and_maybe_promote(logged_run, "model", params, "cuhk-pedes", 35.0)
    assert (worse.version, worse.promoted, worse.previous_champion_version, worse.previous_r1) == (2, False, 1, 40.0)
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
