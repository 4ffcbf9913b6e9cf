"""A policy secret's `broker:` block: every refusal exact, defaults, the shipped policies."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest

from sandbox_orch.brokerpolicy import BrokerGrant
from sandbox_orch.errors import InputRefused
from sandbox_orch.policy import POLICIES_DIR, load_policy

HEAD = """\
version: 1
name: t
runtimes: [claude, codex, shell]
secrets:
  K:
    from_env: K
    runtimes: [claude]
    broker:
"""


def policy_file(tmp_path: Path, broker: str, runtimes: str = "[claude]") -> Path:
    path = tmp_path / "policy.yaml"
    head = HEAD.replace("runtimes: [claude]\n", f"runtimes: {runtimes}\n")
    path.write_text(head + textwrap.indent(textwrap.dedent(broker), " " * 6))
    return path


def refusals(tmp_path: Path, broker: str, runtimes: str = "[claude]") -> list[str]:
    path = policy_file(tmp_path, broker, runtimes)
    with pytest.raises(InputRefused) as caught:
        load_policy(path)
    return [str(p).removeprefix(f"{path}:") for p in caught.value.problems]


def loaded(tmp_path: Path, broker: str, runtimes: str = "[claude]") -> BrokerGrant:
    grant = load_policy(policy_file(tmp_path, broker, runtimes)).secrets["K"].broker
    assert grant is not None
    return grant


# Also checked against the editors' schema (test_editor_schema.py).
UPSTREAM_REFUSALS = [
    ("http://api.example", "'http://api.example': https only (the proxy opens TLS to the upstream itself)"),
    ("api.example", "'api.example': https only (the proxy opens TLS to the upstream itself)"),
    ("https://api.example/", "'https://api.example/': no path (`paths:` lists what the node may ask)"),
    ("https://api.example/v1", "'https://api.example/v1': no path (`paths:` lists what the node may ask)"),
    ("https://api.example?a=1", "'https://api.example?a=1': no path (`paths:` lists what the node may ask)"),
    ("https://api.example#x", "'https://api.example#x': no path (`paths:` lists what the node may ask)"),
    ("https://api.example?", "'https://api.example?': no path (`paths:` lists what the node may ask)"),
    ("https://u:p@api.example", "'https://u:p@api.example' is not an https://HOST[:PORT] URL"),
    ("https://", "'https://' is not an https://HOST[:PORT] URL"),
    ("https://:443", "'https://:443' is not an https://HOST[:PORT] URL"),
    ("https://api.example:99999", "'https://api.example:99999' is not an https://HOST[:PORT] URL (Port out of range 0-65535)"),
    ("https://api.example:x", "'https://api.example:x' is not an https://HOST[:PORT] URL (Port could not be cast to integer value as 'x')"),
    (7, "must be a string"),
]  # fmt: skip


@pytest.mark.parametrize(("upstream", "message"), UPSTREAM_REFUSALS)
def test_an_upstream_is_https_host_and_port_only(tmp_path, upstream, message):
    broker = (
        f"upstream: {upstream!r}\nheader: x-api-key\n"
        if isinstance(upstream, str)
        else (f"upstream: {upstream}\nheader: x-api-key\n")
    )
    assert refusals(tmp_path, broker) == [f"9: secrets.K.broker.upstream: {message}"]


@pytest.mark.parametrize(
    "upstream", ["https://api.example", "https://127.0.0.1:8443", "https://[::1]:443"]
)
def test_an_upstream_may_be_a_name_or_an_ip_literal_with_a_port(tmp_path, upstream):
    assert loaded(tmp_path, f"upstream: {upstream!r}\nheader: x-api-key\n").upstream == upstream


@pytest.mark.parametrize(
    "upstream", [" https://api.example", "https://api.example ", "https://ho\nst", "\x01https://h",
                 "https://api.\texample", "https://api.example\u2028"]
)  # fmt: skip
def test_an_upstream_with_blanks_or_control_characters_is_refused(tmp_path, upstream):
    broker = f"upstream: {json.dumps(upstream)}\nheader: x-api-key\n"
    assert refusals(tmp_path, broker) == [
        f"9: secrets.K.broker.upstream: {upstream!r}: no blanks or control characters"
    ]


def test_without_upstream_is_refused(tmp_path):
    assert refusals(tmp_path, "header: x-api-key\n") == [
        "8: secrets.K.broker.upstream: required field"
    ]


@pytest.mark.parametrize(
    ("fields", "line"),
    [
        ("header: x-api-key\nauthorization: Bearer\n", 8),
        ("paths: [/v1/]\n", 8),
    ],
)
def test_exactly_one_of_header_and_authorization(tmp_path, fields, line):
    broker = "upstream: https://api.example\n" + fields
    assert refusals(tmp_path, broker) == [
        f"{line}: secrets.K.broker: give exactly one of header and authorization"
    ]


# Also checked against the editors' schema (test_editor_schema.py).
HEADER_REFUSALS = [
    ("x api key", "'x api key' is not an HTTP header name"),
    ("'x-api-key:'", "'x-api-key:' is not an HTTP header name"),
    ("''", "'' is not an HTTP header name"),
    ("7", "7 is not an HTTP header name"),
    ("Host", "'Host' cannot carry a secret"),
    ("content-length", "'content-length' cannot carry a secret"),
    ("Transfer-Encoding", "'Transfer-Encoding' cannot carry a secret"),
    ("connection", "'connection' cannot carry a secret"),
]


@pytest.mark.parametrize(("header", "message"), HEADER_REFUSALS)
def test_a_header_is_a_token_that_does_not_frame_the_request(tmp_path, header, message):
    broker = f"upstream: https://api.example\nheader: {header}\n"
    assert refusals(tmp_path, broker) == [f"10: secrets.K.broker.header: {message}"]


# Also checked against the editors' schema (test_editor_schema.py).
SCHEME_REFUSALS = [
    ("Basic", "'Basic': only Bearer (sends `Authorization: Bearer <secret>`)"),
    ("bearer", "'bearer': only Bearer (sends `Authorization: Bearer <secret>`)"),
    ("'Bearer '", "'Bearer ': only Bearer (sends `Authorization: Bearer <secret>`)"),
    ("true", "True: only Bearer (sends `Authorization: Bearer <secret>`)"),
]


@pytest.mark.parametrize(("scheme", "message"), SCHEME_REFUSALS)
def test_authorization_is_bearer_only(tmp_path, scheme, message):
    broker = f"upstream: https://api.example\nauthorization: {scheme}\n"
    assert refusals(tmp_path, broker) == [f"10: secrets.K.broker.authorization: {message}"]


# Also checked against the editors' schema (test_editor_schema.py).
PATHS_REFUSALS = [
    ("[v1/]", "[0]: 'v1/': a path prefix starts with /"),
    ("['']", "[0]: '': a path prefix starts with /"),
    ("[/v1/, 'x']", "[1]: 'x': a path prefix starts with /"),
    ("[7]", "[0]: 7: a path prefix starts with /"),
    ("['/v1 /']", "[0]: '/v1 /': a path prefix has no spaces or control characters"),
    ('["/v1\\t"]', "[0]: '/v1\\t': a path prefix has no spaces or control characters"),
    ('["/v1\\x7f"]', "[0]: '/v1\\x7f': a path prefix has no spaces or control characters"),
    ('["/v1\\x1f"]', "[0]: '/v1\\x1f': a path prefix has no spaces or control characters"),
    ("/v1/", " must be of list type"),
]


@pytest.mark.parametrize(("paths", "message"), PATHS_REFUSALS)
def test_paths_are_prefixes_from_the_root(tmp_path, paths, message):
    broker = f"upstream: https://api.example\nheader: x-api-key\npaths: {paths}\n"
    sep = "" if message.startswith("[") else ":"
    assert refusals(tmp_path, broker) == [f"11: secrets.K.broker.paths{sep}{message}"]


# Also checked against the editors' schema (test_editor_schema.py).
METHODS_REFUSALS = [
    ("[GET, FETCH]", "[1]: unknown method 'FETCH'"),
    ("[get]", "[0]: unknown method 'get'"),
    ("[CONNECT]", "[0]: unknown method 'CONNECT'"),
    ("[TRACE]", "[0]: unknown method 'TRACE'"),
]


@pytest.mark.parametrize(("methods", "message"), METHODS_REFUSALS)
def test_methods_are_known_ones_in_capitals(tmp_path, methods, message):
    broker = f"upstream: https://api.example\nheader: x-api-key\nmethods: {methods}\n"
    known = " (known: GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS)"
    assert refusals(tmp_path, broker) == [f"11: secrets.K.broker.methods{message}{known}"]


def test_every_known_method_is_accepted(tmp_path):
    methods = "[GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS]"
    broker = f"upstream: https://api.example\nheader: x-api-key\nmethods: {methods}\n"
    assert loaded(tmp_path, broker).methods == (
        "GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS",
    )  # fmt: skip


# Also checked against the editors' schema (test_editor_schema.py).
ENV_NAME_REFUSALS = ["1BAD", "A-B", "A B", "''", "7", "Ä"]


@pytest.mark.parametrize("name", ENV_NAME_REFUSALS)
def test_base_url_env_is_an_environment_name(tmp_path, name):
    broker = f"upstream: https://api.example\nheader: x-api-key\nbase_url_env: {name}\n"
    shown = repr(int(name)) if name.isdigit() else repr(name.strip("'"))
    assert refusals(tmp_path, broker) == [
        f"11: secrets.K.broker.base_url_env: {shown} is not a valid environment variable name"
    ]


def test_base_url_env_is_required_for_a_runtime_without_one(tmp_path):
    broker = "upstream: https://api.example\nheader: x-api-key\n"
    assert refusals(tmp_path, broker, "[claude, shell, mine]") == [
        f"8: secrets.K.broker: base_url_env is required: runtime {name!r} has no preset "
        "base-URL variable (the node is told where the broker is in it)"
        for name in ("shell", "mine")
    ]
    named = loaded(tmp_path, broker + "base_url_env: MY_URL\n", "[claude, shell, mine]")
    assert named.base_url_env == "MY_URL"


def test_a_ca_bundle_is_a_readable_file_relative_to_the_policy(tmp_path):
    broker = "upstream: https://api.example\nheader: x-api-key\nca_bundle: ./ca/test.pem\n"
    assert refusals(tmp_path, broker) == [
        f"11: secrets.K.broker.ca_bundle: ./ca/test.pem: no such file ({tmp_path}/ca/test.pem)"
    ]
    (tmp_path / "ca" / "test.pem").mkdir(parents=True)
    assert refusals(tmp_path, broker) == [
        f"11: secrets.K.broker.ca_bundle: ./ca/test.pem: not a file ({tmp_path}/ca/test.pem)"
    ]
    (tmp_path / "ca" / "test.pem").rmdir()
    (tmp_path / "ca" / "test.pem").write_text("-----BEGIN CERTIFICATE-----\n")
    assert loaded(tmp_path, broker).ca_bundle == tmp_path / "ca" / "test.pem"


def test_an_unreadable_ca_bundle_is_refused(tmp_path, monkeypatch):
    (tmp_path / "ca.pem").write_text("x")
    monkeypatch.setattr("os.access", lambda path, mode: False)
    broker = "upstream: https://api.example\nheader: x-api-key\nca_bundle: ca.pem\n"
    assert refusals(tmp_path, broker) == [
        f"11: secrets.K.broker.ca_bundle: ca.pem: cannot read ({tmp_path}/ca.pem)"
    ]


def test_unknown_broker_keys_are_refused(tmp_path):
    broker = "upstream: https://api.example\nheader: x-api-key\nvalue: sk-1\n"
    assert refusals(tmp_path, broker) == ["11: secrets.K.broker.value: unknown key"]


def test_defaults_and_a_bearer_grant(tmp_path):
    assert loaded(tmp_path, "upstream: https://api.example\nheader: X-Api-Key\n") == BrokerGrant(
        upstream="https://api.example",
        header="x-api-key",
        scheme="",
        paths=("/v1/",),
        methods=("GET", "POST"),
        ca_bundle=None,
        base_url_env=None,
    )
    bearer = loaded(tmp_path, "upstream: https://api.example\nauthorization: Bearer\n")
    assert (bearer.header, bearer.scheme) == ("authorization", "Bearer ")


def test_a_secret_without_broker_is_delivered_in_the_environment(tmp_path):
    path = tmp_path / "p.yaml"
    path.write_text(HEAD.removesuffix("    broker:\n"))
    assert load_policy(path).secrets["K"].broker is None


@pytest.mark.parametrize("name", ["agents", "sessions"])
def test_the_shipped_agent_policies_broker_every_key_and_reach_no_api_host(name):
    policy = load_policy(POLICIES_DIR / f"{name}.yaml")
    assert policy.egress == ()
    brokers = {key: grant.broker for key, grant in policy.secrets.items()}
    assert brokers == {
        "ANTHROPIC_API_KEY": BrokerGrant("https://api.anthropic.com", "x-api-key", ""),
        "CLAUDE_CODE_OAUTH_TOKEN": BrokerGrant(
            "https://api.anthropic.com", "authorization", "Bearer "
        ),
        "OPENAI_API_KEY": BrokerGrant("https://api.openai.com", "authorization", "Bearer "),
    }
    assert all(grant.egress == () for grant in policy.secrets.values())
