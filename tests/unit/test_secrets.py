"""Secrets: sources checked, values redacted in every encoding a program might print."""

import base64
import json
import os
import threading
from urllib.parse import quote, quote_plus

import pytest

from sandbox_orch.policy import SecretGrant
from sandbox_orch.secrets import (
    MAX_SECRET_BYTES,
    Redactor,
    SecretUnavailable,
    read_secret,
    source_problem,
)

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


@pytest.fixture
def special(tmp_path):
    """What a secret's file must not be: a FIFO (and a link to one), a directory, too big."""
    os.mkfifo(tmp_path / "fifo")
    (tmp_path / "fifo-link").symlink_to(tmp_path / "fifo")
    (tmp_path / "dir").mkdir()
    (tmp_path / "big").write_bytes(b"x" * (MAX_SECRET_BYTES + 1))
    return tmp_path


@pytest.mark.parametrize(
    ("name", "why"),
    [
        ("fifo", "not a regular file (a FIFO)"),
        ("fifo-link", "not a regular file (a FIFO)"),
        ("dir", "not a regular file (a directory)"),
        ("/dev/zero", "not a regular file (a character device)"),
        ("big", f"larger than {MAX_SECRET_BYTES} bytes"),
        ("missing", "does not exist"),
    ],
)
def test_a_secret_file_that_is_not_a_small_regular_file_is_refused(special, name, why):
    path = str(special / name)
    grant = SecretGrant("T", None, path, ("shell",), ())
    problem = source_problem(grant, {})
    assert problem is not None and problem.startswith(f"secret T: file {path}: {why}"), problem
    with pytest.raises(SecretUnavailable, match="secret T: file"):
        read_secret(grant, {})


@pytest.mark.parametrize("name", ["fifo", "fifo-link", "/dev/zero", "big"])
def test_reading_a_secret_file_swapped_since_validate_never_blocks(special, monkeypatch, name):
    """The file passed the check, then became a FIFO or a device: the read itself must
    refuse it without blocking (a thread, so a hang fails the test instead of the suite)."""
    from sandbox_orch import secrets

    monkeypatch.setattr(secrets, "_file_problem", lambda path: None)
    grant = SecretGrant("T", None, str(special / name), ("shell",), ())
    outcome: list[BaseException] = []

    def read() -> None:
        try:
            read_secret(grant, {})
        except SecretUnavailable as error:
            outcome.append(error)

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    reader.join(timeout=30)
    assert not reader.is_alive(), "read_secret blocked"
    (error,) = outcome
    assert "not a regular file" in str(error) or "larger than" in str(error)


def _file_grant(path) -> SecretGrant:
    return SecretGrant("T", None, str(path), ("shell",), ())


def test_a_secret_file_of_exactly_the_limit_is_read_one_byte_more_is_refused(tmp_path):
    exact = tmp_path / "exact"
    exact.write_bytes(b"k" * MAX_SECRET_BYTES)
    assert source_problem(_file_grant(exact), {}) is None
    assert read_secret(_file_grant(exact), {}) == "k" * MAX_SECRET_BYTES
    over = tmp_path / "over"
    over.write_bytes(b"k" * (MAX_SECRET_BYTES + 1))
    assert source_problem(_file_grant(over), {}) == (
        f"secret T: file {over}: larger than {MAX_SECRET_BYTES} bytes"
    )


def test_an_unreadable_secret_file_is_named_not_read(tmp_path, monkeypatch):
    path = tmp_path / "key"
    path.write_text("value")
    # Tests run as root, whom os.access never refuses: stand in for another user.
    monkeypatch.setattr(os, "access", lambda _path, _mode: False)
    assert source_problem(_file_grant(path), {}) == (
        f"secret T: file {path}: cannot read: permission denied"
    )


def test_a_secret_file_that_is_not_utf8_is_read_with_replacement_characters(tmp_path):
    path = tmp_path / "key"
    path.write_bytes(b"ab\xffcd\n")
    assert read_secret(_file_grant(path), {}) == "ab\ufffdcd"
