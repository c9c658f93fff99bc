"""What counts as a changed input for a scheduled retrain."""

import pytest

from gadms.config import load_params
from gadms.tracking.mlflow_run import tracked_run
from gadms.tracking.registry import register_and_maybe_promote
from gadms.tracking.retrain import Unchanged, find_unchanged, inputs_fingerprint, mark_version


def test_fingerprint_follows_data_code_and_result_shaping_params_only():
    base = load_params(None)
    first = inputs_fingerprint(base, "abc", "c0ffee")
    assert first == inputs_fingerprint(load_params(None), "abc", "c0ffee")
    assert first != inputs_fingerprint(base, "abd", "c0ffee")  # another corpus
    assert first != inputs_fingerprint(base, "abc", "c0ffef")  # other code
    assert first != inputs_fingerprint(load_params(None, ["finetune.lr=2e-5"]), "abc", "c0ffee")
    # where results go and when runs start do not change a result
    where = load_params(None, ["tracking.experiment=other", 'orchestration.schedule_cron="0 1 * * *"'])
    assert first == inputs_fingerprint(where, "abc", "c0ffee")


def test_unchanged_message_names_the_version_that_stays_champion():
    assert Unchanged(3, 3, True).message() == "inputs unchanged: model v3 stays champion"
    assert Unchanged(4, 3, False).message() == "inputs unchanged since model v4 (not promoted): model v3 stays champion"
    assert (
        Unchanged(1, 2, True).message()
        == "inputs unchanged since model v1 (promoted then, champion no longer): model v2 stays champion"
    )
    assert "no champion" in Unchanged(2, None).message()


@pytest.fixture(scope="module")
def logged_run(new_params, tiny_model):
    """One run with the tiny model logged as ``model`` (registered as several versions below)."""
    with tracked_run(new_params(), "retrain", "finetune", None) as run:
        run.log_model(tiny_model)
    return run.run_id


def test_a_version_promoted_then_replaced_is_not_called_unpromoted(logged_run, new_params):
    """v1 trained on these inputs became champion; v2 (other inputs) replaced it; the inputs of v1 come back."""
    params = new_params()
    first = register_and_maybe_promote(logged_run, "model", params, "cuhk-pedes", 20.0)
    mark_version(params, first.version, "inputs-a")
    second = register_and_maybe_promote(logged_run, "model", params, "cuhk-pedes", 30.0)
    mark_version(params, second.version, "inputs-b")
    assert first.promoted and second.promoted
    unchanged = find_unchanged(params, "inputs-a")
    assert unchanged == Unchanged(first.version, second.version, True)
    assert unchanged.message() == (
        f"inputs unchanged since model v{first.version} (promoted then, champion no longer): "
        f"model v{second.version} stays champion"
    )
    assert find_unchanged(params, "inputs-b").message() == f"inputs unchanged: model v{second.version} stays champion"
    assert find_unchanged(params, "inputs-c") is None


def test_the_champion_among_versions_of_the_same_inputs_is_the_one_named(logged_run, new_params):
    """Two versions of the same inputs (e.g. two runs at once): the champion is named, not the later twin."""
    params = new_params()
    champion = register_and_maybe_promote(logged_run, "model", params, "cuhk-pedes", 25.0)
    twin = register_and_maybe_promote(logged_run, "model", params, "cuhk-pedes", 24.0)
    for result in (champion, twin):
        mark_version(params, result.version, "inputs-a")
    assert champion.promoted and not twin.promoted
    assert find_unchanged(params, "inputs-a").message() == (
        f"inputs unchanged: model v{champion.version} stays champion"
    )
