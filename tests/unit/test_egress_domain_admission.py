"""Egress by domain where users write it: the policy's `network.egress` and
`network.private_names` and a secret's `egress` (refused at load, `FILE:LINE: field:
message`), a node's `network.egress` (refused at validation), and admission (a node's
egress and a secret's must lie within what the policy grants)."""

from __future__ import annotations

import dataclasses
import textwrap

import pytest

from sandbox_orch import review as reviewing
from sandbox_orch.admission import admit
from sandbox_orch.errors import InputRefused
from sandbox_orch.loading import validate_document
from sandbox_orch.policy import SecretGrant, load_policy
from sandbox_orch.workflow import Workflow
from sandbox_orch.yamlsafe import load_text

from .helpers import default_policy, plan_of


def policy_file(tmp_path, network: str, secrets: str = "{}"):
    path = tmp_path / "policy.yaml"
    path.write_text(
        "version: 1\nname: p\nruntimes: [shell, claude]\n"
        f"network:\n{textwrap.indent(textwrap.dedent(network), '  ')}"
        f"secrets: {secrets}\n"
    )
    return path


def load_refusals(path) -> list[str]:
    with pytest.raises(InputRefused) as caught:
        load_policy(path)
    return [str(problem) for problem in caught.value.problems]


# --- the policy --------------------------------------------------------------------------


def test_policy_grants_are_refused_where_written(tmp_path):
    path = policy_file(
        tmp_path,
        """\
        egress:
          - "*.githubusercontent.com:443"
          - "*:443"
          - "*.co.uk:443"
          - "api.*:443"
          - "*.10.0.0.1:80"
          - "a.example:70000"
        """,
        '{K: {from_env: K, runtimes: [claude], egress: ["*.com:443"]}}',
    )
    assert load_refusals(path) == [
        f"{path}:7: network.egress[1]: '*:443' would grant every host: name the hosts, or "
        "a domain suffix such as *.example.com:443",
        f"{path}:8: network.egress[2]: '*.co.uk:443' would match every domain registered "
        "under the public suffix co.uk: grant hosts, or a suffix of a domain you own",
        f"{path}:9: network.egress[3]: 'api.*:443': `*` may only be the whole first label "
        "(*.example.com)",
        f"{path}:10: network.egress[4]: '*.10.0.0.1:80': a wildcard cannot apply to an IP address",
        f"{path}:11: network.egress[5]: 'a.example:70000': port '70000' is not a port (1-65535)",
        f"{path}:12: secrets.K.egress[0]: '*.com:443' would match every domain registered "
        "under the public suffix com: grant hosts, or a suffix of a domain you own",
    ]


def test_private_names_are_refused_unless_exact_and_granted(tmp_path):
    path = policy_file(
        tmp_path,
        """\
        egress: ["*.corp.example:443", "mirror.example.org:443", "10.0.0.1:443"]
        private_names:
          - "mirror.example.org:443"
          - "pkg.corp.example:443"
          - "*.corp.example:443"
          - "other.example.org:443"
          - "10.0.0.1:443"
        """,
    )
    assert load_refusals(path) == [
        f"{path}:9: network.private_names[2]: '*.corp.example:443': a private name is one "
        "exact host, never a suffix",
        f"{path}:10: network.private_names[3]: 'other.example.org:443' is not granted by "
        "network.egress",
        f"{path}:11: network.private_names[4]: '10.0.0.1:443': an IP literal grant is taken "
        "as meant; no opt-in is needed",
    ]
    # A name that is no grant at all is refused by the schema, before the cross-checks.
    bad = policy_file(tmp_path, 'egress: ["a.example:443"]\nprivate_names: ["bad_name.x:1"]\n')
    assert load_refusals(bad) == [
        f"{bad}:6: network.private_names[0]: 'bad_name.x' is not a valid host name (IDNA: "
        "Codepoint U+005F at position 4 of 'bad_name' not allowed)"
    ]


def test_a_valid_policy_keeps_its_grants_as_written(tmp_path):
    path = policy_file(
        tmp_path,
        """\
        egress: ["*.Corp.Example:443", "mirror.corp.example:443"]
        private_names: ["mirror.corp.example:443"]
        """,
    )
    policy = load_policy(path)
    assert policy.egress == ("*.Corp.Example:443", "mirror.corp.example:443")
    assert policy.private_names == ("mirror.corp.example:443",)
    assert default_policy().private_names == ()


def test_a_private_name_is_reviewed_and_a_new_one_widens(tmp_path):
    old = policy_file(tmp_path, 'egress: ["mirror.corp.example:443"]\n')
    old = old.rename(tmp_path / "old.yaml")
    new = policy_file(
        tmp_path,
        """\
        egress: ["*.corp.example:443"]
        private_names: ["mirror.corp.example:443"]
        """,
    )
    found = [f for f in reviewing.review(load_policy(new)) if f.id == "SO111"]
    assert [(f.line, f.title) for f in found] == [
        (6, "private name mirror.corp.example:443: may resolve to a private or loopback address")
    ]
    changes = reviewing.compare(load_policy(old), load_policy(new))
    widened = {c.summary for c in changes if c.direction == "widens"}
    assert widened == {
        "egress *.corp.example:443 granted",
        "private name mirror.corp.example:443 granted",
    }
    # Narrowing back: the exact host lies within the old suffix, so nothing widens.
    back = reviewing.compare(load_policy(new), load_policy(old))
    assert not {c.summary for c in back if c.direction == "widens"}
    assert {c.summary for c in back if c.direction == "narrows"} == {
        "egress *.corp.example:443 no longer granted",
        "private name mirror.corp.example:443 no longer granted",
    }


# --- the workflow ------------------------------------------------------------------------


def test_a_node_egress_is_refused_at_validation_where_written():
    text = (
        "version: 1\nname: x\nnodes:\n  a:\n    command: [x]\n    network:\n"
        '      egress: ["ok.example.com:443", "*.com:443", "*:80"]\n'
    )
    document = load_text(text, "wf.yaml")
    with pytest.raises(InputRefused) as caught:
        validate_document(document, Workflow)
    assert [str(p) for p in caught.value.problems] == [
        "wf.yaml:7: nodes.a.network.egress[1]: '*.com:443' would match every domain "
        "registered under the public suffix com: grant hosts, or a suffix of a domain you own",
        "wf.yaml:7: nodes.a.network.egress[2]: '*:80' would grant every host: name the hosts, "
        "or a domain suffix such as *.example.com:443",
    ]


# --- admission ---------------------------------------------------------------------------


def node(egress: list[str], extra: str = "") -> str:
    listed = ", ".join(f'"{e}"' for e in egress)
    return (
        f"version: 1\nname: x\nnodes:\n  a:\n    command: [x]\n{extra}"
        f"    network: {{egress: [{listed}]}}\n"
    )


def admission(text: str, policy, environ=None):
    plan = plan_of(text)
    try:
        return admit(plan, policy, environ=environ or {}), []
    except InputRefused as refused:
        return None, [str(problem) for problem in refused.problems]


def test_a_node_gets_exact_hosts_and_narrower_suffixes_under_a_policy_suffix():
    policy = dataclasses.replace(default_policy(), egress=("*.example.com:443",))
    wanted = ["api.example.com:443", "A.B.Example.COM.:443", "*.pkg.example.com:443"]
    sandboxes, refusals = admission(node(wanted), policy)
    assert refusals == []
    assert sandboxes["a"].egress == tuple(wanted)  # as written: the proxy normalises


@pytest.mark.parametrize(
    "wanted",
    [
        "example.com:443",  # the apex is not below the suffix
        "evilexample.com:443",
        "api.example.com:80",
        "*.example.org:443",
    ],
)
def test_a_node_asking_beyond_the_policy_suffix_is_refused(wanted):
    policy = dataclasses.replace(default_policy(), egress=("*.example.com:443",))
    _, refusals = admission(node([wanted]), policy)
    assert refusals == [
        f"wf.yaml:6: nodes.a.network.egress[0]: node 'a': egress to {wanted!r} is not granted "
        "by the policy"
    ]


def test_a_node_suffix_needs_an_equal_or_wider_policy_suffix():
    policy = dataclasses.replace(
        default_policy(), egress=("*.pkg.example.com:443", "api.example.com:443")
    )
    _, refusals = admission(node(["*.example.com:443", "*.api.example.com:443"]), policy)
    assert refusals == [
        "wf.yaml:6: nodes.a.network.egress[0]: node 'a': egress to '*.example.com:443' is not "
        "granted by the policy",
        "wf.yaml:6: nodes.a.network.egress[1]: node 'a': egress to '*.api.example.com:443' is "
        "not granted by the policy",
    ]


def test_a_base_url_that_is_no_valid_name_is_refused_saying_why():
    policy = dataclasses.replace(default_policy(), runtimes=("claude",))
    text = (
        "version: 1\nname: x\nnodes:\n  r:\n    runtime: claude\n    prompt: hi\n"
        "    env: {ANTHROPIC_BASE_URL: 'http://gate_way.example:8080'}\n"
    )
    _, refusals = admission(text, policy)
    assert (
        "wf.yaml:5: nodes.r.runtime: node 'r': egress: 'gate_way.example' is not a valid host "
        "name (IDNA: Codepoint U+005F at position 5 of 'gate_way' not allowed)"
    ) in refusals


def secret_policy(secret_egress: tuple[str, ...], egress: tuple[str, ...]):
    grant = SecretGrant("KEY", "KEY", None, ("shell",), secret_egress)
    return dataclasses.replace(default_policy(), secrets={"KEY": grant}, egress=egress)


def test_a_secret_goes_to_a_node_whose_egress_lies_under_its_suffix():
    policy = secret_policy(("*.api.example.com:443",), ("*.example.com:443",))
    text = node(["eu.api.example.com:443", "*.us.api.example.com:443"], "    secrets: [KEY]\n")
    sandboxes, refusals = admission(text, policy, {"KEY": "v"})
    assert refusals == [] and sandboxes["a"].secrets == ("KEY",)


def test_a_secret_is_refused_to_a_node_with_egress_beyond_its_suffix():
    policy = secret_policy(("*.api.example.com:443",), ("*.example.com:443",))
    wanted = ["eu.api.example.com:443", "*.example.com:443", "api.example.com:443"]
    _, refusals = admission(node(wanted, "    secrets: [KEY]\n"), policy, {"KEY": "v"})
    assert refusals == [
        "wf.yaml:6: nodes.a.secrets[0]: node 'a': secret KEY cannot go to a node with egress "
        "to *.example.com:443, api.example.com:443"
    ]


def test_a_login_is_chosen_only_if_the_node_egress_lies_within_its_secret_suffix():
    """`_login`: a claude node that asks no secret gets the first login whose egress
    covers the node's (here the API host lies under the token's suffix)."""
    policy = dataclasses.replace(
        default_policy(),
        runtimes=("claude",),
        egress=("api.anthropic.com:443",),
        secrets={
            "ANTHROPIC_API_KEY": SecretGrant(
                "ANTHROPIC_API_KEY", "K1", None, ("claude",), ("console.anthropic.com:443",)
            ),
            "CLAUDE_CODE_OAUTH_TOKEN": SecretGrant(
                "CLAUDE_CODE_OAUTH_TOKEN", "K2", None, ("claude",), ("*.anthropic.com:443",)
            ),
        },
    )
    text = "version: 1\nname: x\nnodes:\n  r: {runtime: claude, prompt: hi}\n"
    sandboxes, refusals = admission(text, policy, {"K1": "a", "K2": "b"})
    assert refusals == [] and sandboxes["r"].secrets == ("CLAUDE_CODE_OAUTH_TOKEN",)
