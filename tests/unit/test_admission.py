"""Admission against the policy: defaults filled, ceilings enforced, refusals collected."""

import dataclasses
from pathlib import Path

import pytest

from sandbox_orch.admission import admit
from sandbox_orch.errors import InputRefused
from sandbox_orch.policy import POLICIES_DIR, MountGrant, SecretGrant, load_policy

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
    assert box.user == "10001:10001" and box.oci_runtime == "runc"
    assert box.describe()["network"] == "none" and box.egress == ()
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


@pytest.mark.parametrize(
    ("workdir", "why"),
    [
        ("/proc/1/root", "cannot be in /proc"),
        ("//proc/self/fd/3", "cannot be in /proc"),
        ("/./proc/self/cwd", "cannot be in /proc"),
        ("/tmp/../proc/1", "cannot be in /proc"),
        ("/proc/", "cannot be in /proc"),
        ("/dev/fd/7", "cannot be in /proc"),
        ("/dev//fd/7/", "cannot be in /proc"),
        ("/dev/stdin", "cannot be in /proc"),
        ("/dev/shm", "cannot be in /dev"),
        ("/sys/fs/cgroup", "cannot be in /sys"),
        ("/tmp/x/../../../sys", "cannot be in /sys"),
    ],
)
def test_workdir_reaching_proc_sys_or_dev_is_refused(workdir, why):
    text = f"version: 1\nname: x\nnodes:\n  a: {{command: [x], workdir: '{workdir}'}}\n"
    (line,) = refusals(text)
    assert "nodes.a.workdir" in line and f"a working directory {why}" in line, line


@pytest.mark.parametrize("workdir", ["/tmp", "/work/src", "/home/node", "/opt/app", "/procfs"])
def test_ordinary_workdirs_are_admitted(workdir):
    _, sandboxes = admitted(
        f"version: 1\nname: x\nnodes:\n  a: {{command: [x], workdir: {workdir}}}\n"
    )
    assert sandboxes["a"].workdir == workdir


def test_workdir_is_given_to_the_engine_in_its_normal_form():
    text = "version: 1\nname: x\nnodes:\n  a: {command: [x], workdir: '//work/./a/../b//'}\n"
    _, sandboxes = admitted(text)
    assert sandboxes["a"].workdir == "/work/b"


def test_workdir_through_a_symlink_in_a_mounted_directory_is_refused(workspace):
    (workspace / "fd").symlink_to("/proc/self/fd/7")
    text = (
        "version: 1\nname: x\nnodes:\n  a:\n    command: [x]\n    workdir: /w/fd\n"
        "    mounts: [{source: '.', target: /w}]\n"
    )
    plan = plan_of(text, path=str(workspace / "wf.yaml"))
    with pytest.raises(InputRefused) as caught:
        admit(plan, default_policy())
    (problem,) = caught.value.problems
    assert "goes through a symlink" in str(problem) and "workdir" in str(problem)


def test_egress_not_granted_is_refused():
    (line,) = refusals(
        "version: 1\nname: x\nnodes:\n  a:\n    command: [x]\n"
        "    network: {egress: ['example.com:443']}\n"
    )
    assert "egress to 'example.com:443' is not granted" in line


def test_secret_whose_source_is_missing_is_refused_naming_the_variable():
    policy = dataclasses.replace(
        default_policy(),
        secrets={"TOKEN": SecretGrant("TOKEN", "HOST_TOKEN", None, ("shell",), ())},
    )
    plan = plan_of("version: 1\nname: x\nnodes:\n  a: {command: [x], secrets: [TOKEN]}\n")
    with pytest.raises(InputRefused) as caught:
        admit(plan, policy, environ={})
    (problem,) = caught.value.problems
    assert str(problem).endswith("secret TOKEN: environment variable HOST_TOKEN is not set")
    sandbox = admit(plan, policy, environ={"HOST_TOKEN": "value-1234"})["a"]
    assert sandbox.secrets == ("TOKEN",) and sandbox.describe()["secrets"] == ["TOKEN"]
    assert "value-1234" not in str(sandbox.describe())


def test_agent_preset_requests_its_own_api_host_and_key():
    agents = load_policy(POLICIES_DIR / "agents.yaml")
    plan = plan_of("version: 1\nname: x\nnodes:\n  r: {runtime: claude, prompt: review}\n")
    with pytest.raises(InputRefused) as caught:
        admit(plan, agents, environ={})
    (line,) = [str(p) for p in caught.value.problems]
    assert (
        "r.runtime: node 'r': secret ANTHROPIC_API_KEY: environment variable ANTHROPIC_API_KEY is not set"
        in line
    )
    box = admit(plan, agents, environ={"ANTHROPIC_API_KEY": "k-123456"})["r"]
    assert box.egress == () and box.secrets == ("ANTHROPIC_API_KEY",)  # brokered: no host
    assert plan.nodes["r"].egress == ("api.anthropic.com:443",)  # asked, unless brokered
    assert plan.nodes["r"].argv[:2] == ("claude", "-p") and plan.nodes["r"].argv[-1] == "review"


def test_a_gateway_base_url_becomes_the_requested_egress():
    plan = plan_of(
        "version: 1\nname: x\nnodes:\n  r:\n    runtime: claude\n    prompt: hi\n"
        "    env: {ANTHROPIC_BASE_URL: 'http://10.1.2.3:8080'}\n"
    )
    assert plan.nodes["r"].egress == ("10.1.2.3:8080",)


def test_secret_rules():
    grant = SecretGrant("KEY", "KEY", None, ("claude", "python"), ("api.example.com:443",))
    policy = dataclasses.replace(
        default_policy(),
        secrets={"KEY": grant},
        egress=("api.example.com:443", "evil.example.com:443"),
    )
    lines = refusals(
        """
        version: 1
        name: x
        nodes:
          ungranted: {command: [x], secrets: [OTHER]}
          wrong-runtime: {command: [x], secrets: [KEY]}
          too-wide:
            runtime: python
            command: [x]
            secrets: [KEY]
            network: {egress: ["api.example.com:443", "evil.example.com:443"]}
        """,
        policy,
    )
    assert any(
        "ungranted.secrets[0]: node 'ungranted': secret OTHER is not granted by the policy" in x
        for x in lines
    )
    assert any("secret KEY is not granted to runtime 'shell'" in x for x in lines)
    assert any(
        "secret KEY cannot go to a node with egress to evil.example.com:443" in x for x in lines
    )


# --- mounts: resolved before they are judged -------------------------------------------


@pytest.fixture
def workspace(tmp_path):
    """A workflow directory with a file, a symlink to /etc and a nested project."""
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "main.py").write_text("print(1)\n")
    (tmp_path / "etc-link").symlink_to("/etc")
    (tmp_path / "sock-link").symlink_to("/var/run/docker.sock")
    return tmp_path


def mount_refusals(workspace, source, target="/w", mode="ro", policy=None):
    text = (
        "version: 1\nname: x\nnodes:\n  a:\n    command: [x]\n"
        f"    mounts: [{{source: '{source}', target: '{target}', mode: {mode}}}]\n"
    )
    path = workspace / "wf.yaml"
    plan = plan_of(text, path=str(path))
    try:
        sandboxes = admit(plan, policy or default_policy())
    except InputRefused as refused:
        return [str(p) for p in refused.problems], None
    return [], sandboxes["a"]


@pytest.mark.parametrize(
    ("source", "why"),
    [
        ("//var/run/docker.sock", "/run is never mountable"),
        ("/var/run/../run/docker.sock", "/run is never mountable"),
        ("/run/containerd/containerd.sock", "/run is never mountable"),
        ("etc-link", "(/etc): /etc is never mountable"),
        ("etc-link/passwd", "/etc is never mountable"),
        ("sock-link", "/run is never mountable"),
        ("../../../../../../..", "the root file system is never mountable"),
        ("/", "the root file system is never mountable"),
        ("/proc/self", "never mountable"),
        ("/sys", "/sys is never mountable"),
        ("/dev", "/dev is never mountable"),
        ("/boot", "/boot is never mountable"),
        ("/var/lib/docker", "/var/lib is never mountable"),
        ("/var", "it contains /var/lib"),
        ("~", "never mountable"),
        ("~/.ssh", "never mountable"),
        (str(POLICIES_DIR), "policies is never mountable"),
    ],
)
def test_never_mountable_whatever_the_policy(workspace, source, why):
    generous = dataclasses.replace(default_policy(), mounts=(MountGrant(Path("/"), ("ro", "rw")),))
    lines, _ = mount_refusals(workspace, source, policy=generous)
    assert len(lines) == 1 and why in lines[0], lines


def test_workspace_mount_is_granted_read_only_with_the_resolved_path(workspace):
    lines, sandbox = mount_refusals(workspace, "./src/../src")
    assert lines == []
    (mount,) = sandbox.mounts
    assert (mount.source, mount.target, mount.read_only) == (str(workspace / "src"), "/w", True)
    assert sandbox.describe()["mounts"] == [
        {"source": str(workspace / "src"), "target": "/w", "mode": "ro"}
    ]


def test_mode_not_granted_and_outside_roots_are_refused(workspace):
    (line,) = mount_refusals(workspace, ".", mode="rw")[0]
    assert "granted only as ro, not rw" in line and "mounts[0].source" in line
    (line,) = mount_refusals(workspace, "..")[0]
    assert "not under any mount root the policy grants" in line
    (line,) = mount_refusals(workspace, "missing")[0]
    assert "does not exist" in line


@pytest.mark.parametrize("target", ["/", "/proc/x", "/sys", "/dev/shm", "/etc", "/usr/bin"])
def test_mount_targets_over_system_paths_are_refused(workspace, target):
    (line,) = mount_refusals(workspace, ".", target=target)[0]
    assert "mounts[0].target" in line and "cannot mount over" in line


@pytest.mark.parametrize(
    ("extra", "workdir", "why"),
    [
        ("mounts: [{source: ., target: /w, mode: rw}]", "/w/sub", "inside a read-write mount"),
        ("outputs: {artifacts: [{name: d, path: /out}]}", "/out/x", "inside an artifact"),
        ("inputs: [{from: p/d, path: /in}]", "/in/x", "inside an input"),
    ],
)
def test_workdir_inside_what_nodes_write_is_refused(workspace, extra, workdir, why):
    text = (
        "version: 1\nname: x\nnodes:\n"
        "  p: {command: [x], outputs: {artifacts: [{name: d, path: /o}]}}\n"
        f"  a:\n    command: [x]\n    needs: [p]\n    workdir: {workdir}\n    {extra}\n"
    )
    policy = dataclasses.replace(default_policy(), mounts=(MountGrant(Path("."), ("ro", "rw")),))
    plan = plan_of(text, path=str(workspace / "wf.yaml"))
    with pytest.raises(InputRefused) as caught:
        admit(plan, policy)
    (problem,) = caught.value.problems
    assert "nodes.a.workdir" in str(problem) and why in str(problem), problem


@pytest.mark.parametrize(
    ("extra", "workdir"),
    [
        ("mounts: [{source: ., target: /w, mode: rw}]", "/w"),
        ("mounts: [{source: ., target: /w, mode: ro}]", "/w/src"),
        ("outputs: {artifacts: [{name: d, path: /out}]}", "/out"),
    ],
)
def test_workdir_at_a_mount_root_or_in_a_plain_read_only_mount_is_fine(workspace, extra, workdir):
    text = f"version: 1\nname: x\nnodes:\n  a:\n    command: [x]\n    workdir: {workdir}\n    {extra}\n"
    policy = dataclasses.replace(default_policy(), mounts=(MountGrant(Path("."), ("ro", "rw")),))
    sandboxes = admit(plan_of(text, path=str(workspace / "wf.yaml")), policy)
    assert sandboxes["a"].workdir == workdir
