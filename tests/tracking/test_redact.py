"""Credentials in URLs: redacted in what is logged, kept out of what Prefect stores, refused in names."""

import pytest

from gadms.config import ConfigError, load_params
from gadms.credentials import find_credential
from gadms.tracking.redact import REDACTED, Redactor, hide_override_secrets, reveal_override_secrets

KEY = "sk-live-0123456789abcdef"
URL_SET = f"curation.captioning.vlm_url=http://user:{KEY}@127.0.0.1:8001/v1"


def test_url_passwords_and_secret_query_parameters_are_found_but_plain_urls_are_not():
    assert find_credential(f"http://user:{KEY}@host/v1") == "a password in a URL"
    assert find_credential(f"https://host/v1?api_key={KEY}") == "a secret URL query parameter"
    for plain in ("http://127.0.0.1:8001/v1", "ssh://git@example.com/repo", "s3://bucket/x?versionId=3", "gadms"):
        assert find_credential(plain) is None


def test_redactor_hides_url_credentials_even_when_no_environment_variable_holds_them():
    redactor = Redactor()
    assert redactor.redact(f"http://user:{KEY}@host/v1") == f"http://user:{REDACTED}@host/v1"
    assert redactor.redact(f"http://host/v1?x=1&token={KEY}") == f"http://host/v1?x=1&token={REDACTED}"
    assert redactor.redact("http://127.0.0.1:8001/v1") == "http://127.0.0.1:8001/v1"


def test_overrides_for_prefect_hold_no_secret_and_come_back_whole_in_the_flow():
    environ: dict[str, str] = {}
    other = "curation.templates.llm_url=http://h/v1?api_key=second-key-42"
    safe = hide_override_secrets([URL_SET, "train.epochs=2", other, URL_SET], environ)
    assert KEY not in " ".join(safe) and "second-key-42" not in " ".join(safe)
    assert safe[0] == "curation.captioning.vlm_url=http://user:[REDACTED:GADMS_SET_SECRET_1]@127.0.0.1:8001/v1"
    assert safe[1] == "train.epochs=2" and safe[3] == safe[0]  # the same secret, the same variable
    assert environ == {"GADMS_SET_SECRET_1": KEY, "GADMS_SET_SECRET_2": "second-key-42"}
    assert hide_override_secrets(safe, environ) == safe  # hiding twice changes nothing
    assert reveal_override_secrets(safe, environ) == [URL_SET, "train.epochs=2", other, URL_SET]


def test_a_placeholder_without_its_variable_is_one_line_naming_the_key():
    safe = hide_override_secrets([URL_SET], {})
    with pytest.raises(ValueError, match=r"^--set curation.captioning.vlm_url: .*\$GADMS_SET_SECRET_1") as error:
        reveal_override_secrets(safe, {})
    assert "\n" not in str(error.value) and KEY not in str(error.value)


@pytest.mark.parametrize("key", ["experiment", "registered_model", "champion_alias"])
def test_credentials_in_names_are_refused_without_echoing_them(key):
    with pytest.raises(ConfigError, match=f"tracking.{key} holds a password in a URL") as error:
        load_params(None, [f"tracking.{key}=http://user:{KEY}@host"])
    assert KEY not in str(error.value)


def test_the_value_of_a_secret_variable_is_refused_in_a_name():
    redactor = Redactor.from_env(["GADMS_VLM_API_KEY"], {"GADMS_VLM_API_KEY": KEY})
    with pytest.raises(ValueError, match=r"tracking.experiment holds the value of \$GADMS_VLM_API_KEY") as error:
        redactor.refuse_in_name(f"exp-{KEY}", "tracking.experiment")
    assert KEY not in str(error.value)
    redactor.refuse_in_name("gadms", "tracking.experiment")  # an ordinary name passes
