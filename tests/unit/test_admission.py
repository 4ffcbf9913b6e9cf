"""Admission against the policy: defaults filled, ceilings enforced, refusals collected."""

import dataclasses

import pytest

from sandbox_orch.admission import admit
from sandbox_orch.errors import InputRefused

from .helpers import admitted, default_policy, plan_of


def refusals(text: str, policy=None) -> list[str]:
    plan = plan_of(text)
    with pytest.raises(InputRefused) as caught:
        admit(plan, policy or default_policy())
    return [str(p) for p in caught.value.problems]


def test_node_asking_nothing_gets_the_policy_defaults():
    _, sandboxes = admitted("version: 1\nname: x\nnodes:\n  a: {command: [x]}\n")
    box = sandboxes["a"]
    assert (box.cpus, box.memory, box.pids, box.timeout) == (1, 512 * 1024**2, 256, 600)
    assert box.user == "10001:10001" and box.oci_runtime == "runc" and box.network == "none"
    assert box.memory_ceiling == 2 * 1024**3
    described = box.describe()
    assert described["limits"] == {"cpus": 1, "memory": "512m", "pids": 256, "timeout_s": 600}
    assert described["cap_drop"] == ["ALL"] and described["read_only_rootfs"] is True


def test_every_ceiling_breach_is_reported_together():
    lines = refusals(
        """
        version: 1
        name: x
        nodes:
          a:
            command: [x]
            timeout: 2h
            resources: {cpus: 8, memory: 64g, pids: 100000}
          b:
            command: [x]
            resources: {memory: 4g}
        """
    )
    assert len(lines) == 5
    assert any(
        "nodes.a.resources.cpus: node 'a': cpus 8.0 is above the policy ceiling 2.0" in line
        for line in lines
    )
    assert any("nodes.b.resources.memory: node 'b': memory 4g is above" in line for line in lines)
    assert any("timeout 7200s is above the policy ceiling 1800s" in line for line in lines)


def test_runtime_not_granted_is_refused():
    policy = dataclasses.replace(default_policy(), runtimes=("shell",))
    (line,) = refusals(
        "version: 1\nname: x\nnodes:\n  a: {runtime: python, command: [x]}\n", policy
    )
    assert "nodes.a.runtime: node 'a': runtime 'python' is not granted" in line


def test_custom_runtime_image_must_be_granted():
    lines = refusals(
        """
        version: 1
        name: x
        runtimes:
          evil: {image: docker.io/library/alpine}
        nodes:
          a: {runtime: evil, command: [x]}
        """
    )
    assert any(
        "image 'docker.io/library/alpine' of runtime 'evil' is not granted" in x for x in lines
    )


@pytest.mark.parametrize(
    "name",
    ["LD_PRELOAD", "ld_preload", "LD_AUDIT", "BASH_ENV", "ENV", "NODE_OPTIONS", "PYTHONPATH",
     "PATH", "http_proxy", "HTTPS_PROXY", "PERL5OPT"],
)  # fmt: skip
def test_denied_environment_names_are_refused(name):
    (line,) = refusals(
        f"version: 1\nname: x\nnodes:\n  a:\n    command: [x]\n    env: {{{name}: v}}\n"
    )
    assert f"environment variable {name} is on the deny list" in line


def test_environment_names_with_equals_or_control_characters_are_refused():
    lines = refusals(
        'version: 1\nname: x\nnodes:\n  a:\n    command: [x]\n    env: {"A=B": v, "C\\nD": v}\n'
    )
    assert len(lines) == 2 and all("is not allowed" in line for line in lines)


def test_policy_deny_list_adds_to_the_built_in_one():
    policy = dataclasses.replace(default_policy(), env_deny=("GIT_SSH_COMMAND",))
    (line,) = refusals(
        "version: 1\nname: x\nnodes:\n  a:\n    command: [x]\n    env: {git_ssh_command: v}\n",
        policy,
    )
    assert "deny list" in line


def test_workdir_under_proc_is_refused():
    (line,) = refusals("version: 1\nname: x\nnodes:\n  a: {command: [x], workdir: /proc/1/root}\n")
    assert "under /proc" in line


def test_egress_not_granted_is_refused():
    (line,) = refusals(
        "version: 1\nname: x\nnodes:\n  a:\n    command: [x]\n"
        "    network: {egress: ['example.com:443']}\n"
    )
    assert "egress to 'example.com:443' is not granted" in line


def test_requests_this_version_cannot_honour_are_refused_not_ignored():
    lines = refusals(
        """
        version: 1
        name: x
        nodes:
          a:
            command: [x]
            secrets: [TOKEN]
            mounts: [{source: ., target: /w}]
        """
    )
    assert any("secrets are not supported" in line for line in lines)
    assert any("mounts are not supported" in line for line in lines)
