"""What counts as a changed input for a scheduled retrain."""

from gadms.config import load_params
from gadms.tracking.retrain import Unchanged, inputs_fingerprint


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
    assert Unchanged(3, 3).message() == "inputs unchanged: model v3 stays champion"
    assert Unchanged(4, 3).message() == "inputs unchanged since model v4 (not promoted): model v3 stays champion"
    assert "no champion" in Unchanged(2, None).message()
