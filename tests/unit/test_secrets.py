"""Secrets: sources checked, values redacted in every encoding a program might print."""

import base64
import json
from urllib.parse import quote, quote_plus

import pytest

from sandbox_orch.policy import SecretGrant
from sandbox_orch.secrets import Redactor, SecretUnavailable, read_secret, source_problem

VALUE = "sk-ant-test-0123456789abcdef"


@pytest.mark.parametrize("prefix", [b"", b"x", b"xy", b"xyz", b"Authorization: Basic "])
@pytest.mark.parametrize("suffix", [b"", b"!", b"!!"])
@pytest.mark.parametrize("encode", [base64.b64encode, base64.urlsafe_b64encode])
def test_base64_at_any_alignment_is_redacted(prefix, suffix, encode):
    text = encode(prefix + VALUE.encode() + suffix).decode()
    redacted = Redactor({"KEY": VALUE}).text(text)
    assert "[REDACTED:KEY]" in redacted
    # nothing of the value's own encoding survives
    assert encode(VALUE.encode()).decode()[4:12] not in redacted


@pytest.mark.parametrize(
    "form", [VALUE, quote(VALUE, safe=""), quote_plus(VALUE), json.dumps({"k": VALUE})]
)
def test_plain_url_and_json_forms_are_redacted(form):
    assert VALUE not in Redactor({"KEY": VALUE}).text(f"before {form} after")


def test_documents_are_redacted_everywhere_keys_included():
    redactor = Redactor({"KEY": VALUE})
    doc = {"a": [f"x{VALUE}"], VALUE: {"b": (VALUE,)}, "n": 1}
    assert VALUE not in json.dumps(redactor.document(doc))


def test_short_values_are_not_redacted_everywhere():
    assert Redactor({"KEY": "ab"}).text("abc abd") == "abc abd"


def test_source_problems_name_the_variable_never_a_value():
    grant = SecretGrant("ANTHROPIC_API_KEY", "ANTHROPIC_API_KEY", None, ("claude",), ())
    assert source_problem(grant, {}) == (
        "secret ANTHROPIC_API_KEY: environment variable ANTHROPIC_API_KEY is not set"
    )
    assert read_secret(grant, {"ANTHROPIC_API_KEY": VALUE}) == VALUE
    with pytest.raises(SecretUnavailable, match="ANTHROPIC_API_KEY is not set"):
        read_secret(grant, {"ANTHROPIC_API_KEY": ""})


def test_secret_from_a_file(tmp_path):
    path = tmp_path / "token"
    path.write_text(VALUE + "\n")
    grant = SecretGrant("T", None, str(path), ("shell",), ())
    assert read_secret(grant, {}) == VALUE
