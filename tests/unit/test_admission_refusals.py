"""Every admission refusal, exactly as the user reads it: `FILE:LINE: field: message`.

The line and the dotted field are how a user finds what to change, so each rule's
refusal is asserted whole (file, line, field, message), as are the exact boundaries
(a ceiling is allowed, one above is not) and what a granted node's sandbox carries.
Mutation testing found each of these unpinned: a misspelt field or a lost refusal
passed every other test."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from sandbox_orch.admission import admit, admit_node
from sandbox_orch.errors import InputRefused
from sandbox_orch.gitpaths import MAX_GIT_PATHS
from sandbox_orch.mounts import POLICIES_DIR
from sandbox_orch.policy import MountGrant, SecretGrant

from .helpers import admitted, default_policy, plan_of


def refusals(text: str, policy=None, path: str = "wf.yaml", environ=None) -> list[str]:
    plan = plan_of(text, path=path)
    with pytest.raises(InputRefused) as caught:
        admit(plan, policy or default_policy(), environ=environ)
    return [str(problem) for problem in caught.value.problems]


def admitted_at(directory: Path, text: str, policy=None):
    plan = plan_of(text, path=str(directory / "wf.yaml"))
    return plan, admit(plan, policy or default_policy())


def node(body: str) -> str:
    """A workflow whose node `a` has `body` (lines indented under it); line 4 is `a:`."""
    indented = "".join(f"    {line}\n" for line in body.splitlines())
    return f"version: 1\nname: x\nnodes:\n  a:\n    command: [x]\n{indented}"


# --- artifact and input paths: volumes are mounts too ----------------------------------


def test_artifact_and_input_paths_over_system_paths_are_each_refused_where_written():
    text = (
        "version: 1\nname: x\nnodes:\n"
        "  p: {command: [x], outputs: {artifacts: [{name: d, path: /o}]}}\n"
        "  a:\n    command: [x]\n    needs: [p]\n"
        "    outputs: {artifacts: [{name: e, path: /etc/x}]}\n"
        "    inputs: [{from: p/d, path: /proc/y}]\n"
    )
    assert refusals(text) == [
        "wf.yaml:8: nodes.a.outputs.artifacts[0].path: node 'a': artifact path '/etc/x': "
        "cannot mount over /etc: system configuration (users, name resolution, the dynamic "
        "loader)",
        "wf.yaml:9: nodes.a.inputs[0].path: node 'a': artifact path '/proc/y': "
        "cannot mount over /proc: the kernel's process interface",
    ]


# --- environment ------------------------------------------------------------------------


def test_a_nul_in_an_environment_value_is_refused_naming_the_variable():
    assert refusals(node('env: {A: "x\\0y"}')) == [
        "wf.yaml:6: nodes.a.env.A: node 'a': environment values cannot contain NUL"
    ]
    assert refusals(node('env: {B: "\\0"}')) == [
        "wf.yaml:6: nodes.a.env.B: node 'a': environment values cannot contain NUL"
    ]


@pytest.mark.parametrize(("escaped", "shown"), [("A\\x1fB", "A\\x1fB"), ("A\\x7fB", "A\\x7fB")])
def test_control_characters_in_an_environment_name_are_refused(escaped, shown):
    assert refusals(node(f'env: {{"{escaped}": v}}')) == [
        f"wf.yaml:6: nodes.a.env.{shown}: node 'a': environment name '{shown}' is not allowed"
    ]


def test_printable_names_beyond_the_control_characters_are_passed_on():
    # The boundary: 0x1f and 0x7f are control characters; a space and 0x80 are not.
    _, sandboxes = admitted(node('env: {"A B": v, "A\\x80B": w}'))
    assert sandboxes["a"].env == {"A B": "v", "A\x80B": "w"}


def test_a_name_only_the_policy_denies_is_refused_saying_so():
    policy = dataclasses.replace(default_policy(), env_deny=("MY_TOKEN",))
    assert refusals(node("env: {my_token: v, OTHER: v}"), policy) == [
        "wf.yaml:6: nodes.a.env.my_token: node 'a': environment variable my_token is on the "
        "deny list (denied by the policy)"
    ]
    assert admitted(node("env: {my_token: v}"))[1]["a"].env == {"my_token": "v"}


# --- resources and time: the ceiling itself is allowed ----------------------------------


def test_asking_exactly_the_ceiling_is_granted():
    _, sandboxes = admitted(node("timeout: 30m\nresources: {cpus: 2, memory: 2g, pids: 512}"))
    box = sandboxes["a"]
    assert (box.cpus, box.memory, box.pids, box.timeout) == (2, 2 * 1024**3, 512, 1800)


def test_each_limit_above_its_ceiling_is_refused_where_written():
    text = node("timeout: 1801s\nresources: {cpus: 2.5, memory: 2049m, pids: 513}")
    assert refusals(text) == [
        "wf.yaml:7: nodes.a.resources.cpus: node 'a': cpus 2.5 is above the policy ceiling 2.0",
        "wf.yaml:7: nodes.a.resources.memory: node 'a': memory 2049m is above the policy "
        "ceiling 2g",
        "wf.yaml:7: nodes.a.resources.pids: node 'a': pids 513 is above the policy ceiling 512",
        "wf.yaml:6: nodes.a.timeout: node 'a': timeout 1801s is above the policy ceiling 1800s",
    ]


# --- network and secrets ----------------------------------------------------------------


def test_egress_not_granted_is_refused_at_the_entry_written():
    text = node("network: {egress: ['ok.example.com:443', 'no.example.com:443']}")
    policy = dataclasses.replace(default_policy(), egress=("ok.example.com:443",))
    assert refusals(text, policy) == [
        "wf.yaml:6: nodes.a.network.egress[1]: node 'a': egress to 'no.example.com:443' is not "
        "granted by the policy"
    ]


def test_a_secret_is_refused_naming_every_host_it_could_leave_through():
    grant = SecretGrant("KEY", "KEY", None, ("shell",), ("ok.example.com:443",))
    hosts = ("ok.example.com:443", "b.example.com:443", "a.example.com:443")
    policy = dataclasses.replace(default_policy(), secrets={"KEY": grant}, egress=hosts)
    text = node(f"secrets: [KEY]\nnetwork: {{egress: [{', '.join(hosts)}]}}")
    assert refusals(text, policy, environ={"KEY": "v"}) == [
        "wf.yaml:6: nodes.a.secrets[0]: node 'a': secret KEY cannot go to a node with egress "
        "to a.example.com:443, b.example.com:443"
    ]


# --- runtimes ---------------------------------------------------------------------------


def test_a_custom_image_not_granted_is_refused_at_its_definition():
    text = (
        "version: 1\nname: x\nruntimes:\n  evil: {image: docker.io/library/alpine}\n"
        "nodes:\n  a: {runtime: evil, command: [x]}\n"
    )
    assert refusals(text) == [
        "wf.yaml:4: runtimes.evil.image: node 'a': image 'docker.io/library/alpine' of runtime "
        "'evil' is not granted"
    ]


def test_a_granted_preset_needs_no_image_grant():
    # Presets are granted by name (policy.runtimes); their images are the tool's own.
    policy = dataclasses.replace(default_policy(), images=())
    plan, sandboxes = admitted(node("runtime: python"), policy)
    assert sandboxes["a"].image == plan.nodes["a"].runtime.image != ""


# --- mounts -----------------------------------------------------------------------------


@pytest.fixture
def generous():
    """A policy that grants every directory, read-only and writable."""
    return dataclasses.replace(default_policy(), mounts=(MountGrant(Path("/"), ("ro", "rw")),))


def test_a_missing_mount_source_is_refused_saying_so(tmp_path):
    text = node("mounts: [{source: missing, target: /w}]")
    assert refusals(text, path=str(tmp_path / "wf.yaml")) == [
        f"{tmp_path}/wf.yaml:6: nodes.a.mounts[0].source: node 'a': mount 'missing' "
        f"({tmp_path}/missing): does not exist"
    ]


def test_the_mode_asked_decides_what_is_never_mountable(tmp_path, generous):
    """What holds the policies may be read, never written: the mode reaches the rule."""
    holder = Path(POLICIES_DIR).resolve().parent
    text = node(f"mounts: [{{source: '{holder}', target: /w, mode: rw}}]")
    assert refusals(text, generous, path=str(tmp_path / "wf.yaml")) == [
        f"{tmp_path}/wf.yaml:6: nodes.a.mounts[0].source: node 'a': mount '{holder}' "
        f"({holder}): it contains {Path(POLICIES_DIR).resolve()}, which is never mountable "
        "writable (the policies)"
    ]


def test_a_workdir_is_refused_once_for_its_first_reason(tmp_path, generous):
    """Inside a writable mount and through a symlink in it: one refusal, the first
    reason (the symlink check is not even made)."""
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "link").symlink_to("/usr")
    text = node("workdir: /w/link/x\nmounts: [{source: src, target: /w, mode: rw}]")
    assert refusals(text, generous, path=str(tmp_path / "wf.yaml")) == [
        f"{tmp_path}/wf.yaml:6: nodes.a.workdir: node 'a': /w/link/x is inside a read-write "
        "mount at /w, where a node could put a symlink"
    ]


def test_a_refused_source_is_refused_once_and_never_becomes_a_mount(tmp_path):
    """Not a mount at all: the working directory is judged without it (a symlink in an
    ungranted directory is no reason to refuse twice), and a writable one is never walked."""
    (tmp_path / "outside").mkdir()
    (tmp_path / "outside" / "link").symlink_to("/proc/self/fd/7")
    (tmp_path / "wf").mkdir()
    (tmp_path / "wf" / "sub").mkdir()
    workflow = str(tmp_path / "wf" / "wf.yaml")
    text = node("workdir: /w/link\nmounts: [{source: ../outside, target: /w}]")
    assert refusals(text, path=workflow) == [
        f"{workflow}:7: nodes.a.mounts[0].source: node 'a': mount '../outside' "
        f"({tmp_path}/outside): not under any mount root the policy grants"
    ]
    text = node("mounts: [{source: sub, target: /w, mode: rw}]")
    assert refusals(text, path=workflow) == [
        f"{workflow}:6: nodes.a.mounts[0].source: node 'a': mount 'sub' ({tmp_path}/wf/sub): "
        "granted only as ro, not rw"
    ]


# --- a refused node gets no sandbox -----------------------------------------------------


@pytest.mark.parametrize(
    "body",
    [
        "env: {LD_PRELOAD: x}",  # refused by a rule before the limits
        "resources: {pids: 513}",  # refused by the limits alone
        "outputs: {artifacts: [{name: d, path: /etc}]}",
    ],
)
def test_a_node_refused_anything_gets_no_sandbox(body):
    plan = plan_of(node(body))
    refused: list[tuple] = []
    sandbox = admit_node(
        plan.nodes["a"], default_policy(), lambda *r: refused.append(r), Path("."), {}
    )
    assert sandbox is None and len(refused) == 1, refused


def test_a_granted_node_carries_what_it_asked_and_the_policy_sets():
    policy = default_policy()
    limits = dataclasses.replace(policy.limits, artifacts=64 * 1024**2, output=1024**2)
    policy = dataclasses.replace(policy, limits=limits)  # not the Sandbox's own defaults
    _, sandboxes = admitted(node("workdir: /work\nenv: {A: '1', B: two}"), policy)
    box = sandboxes["a"]
    assert box.env == {"A": "1", "B": "two"} and box.workdir == "/work"
    assert (box.artifact_limit, box.output_limit) == (64 * 1024**2, 1024**2)
    assert box.tmpfs == dict(policy.tmpfs) and box.memory_ceiling == policy.limits.memory
    _, sandboxes = admitted(node(""), policy)
    assert sandboxes["a"].workdir is None and sandboxes["a"].env == {}


def test_admit_node_alone_walks_its_own_mounts(tmp_path):
    """Called without the run's shared walks, a node's mounts are still walked."""
    (tmp_path / "src").mkdir()
    plan = plan_of(node("mounts: [{source: src, target: /w}]"), path=str(tmp_path / "wf.yaml"))
    refused: list[tuple] = []
    sandbox = admit_node(
        plan.nodes["a"], default_policy(), lambda *r: refused.append(r), tmp_path, {}
    )
    assert refused == [] and sandbox is not None
    assert [(m.source, m.target) for m in sandbox.mounts] == [(str(tmp_path / "src"), "/w")]


# --- the working directory below a volume at / ------------------------------------------


@pytest.mark.parametrize("sibling", ["/data/Y", "/data/Xy", "/data"])
def test_a_workdir_beside_a_volume_is_not_inside_it(sibling):
    """Only a trailing `/` is dropped from a volume's path before comparing: `/data/X`
    holds `/data/X/y`, never its siblings nor its parent."""
    volume = "outputs: {artifacts: [{name: d, path: /data/X}]}"
    assert admitted(node(f"workdir: {sibling}\n{volume}"))[1]["a"].workdir == sibling
    assert refusals(node(f"workdir: /data/X/y\n{volume}")) == [
        "wf.yaml:6: nodes.a.workdir: node 'a': /data/X/y is inside an artifact at /data/X, "
        "where a node could put a symlink"
    ]


def test_a_volume_at_the_root_is_refused_and_so_is_a_workdir_below_it():
    text = node("workdir: /w\noutputs: {artifacts: [{name: d, path: /}]}")
    assert refusals(text) == [
        "wf.yaml:7: nodes.a.outputs.artifacts[0].path: node 'a': artifact path '/': "
        "cannot mount over the root file system",
        "wf.yaml:6: nodes.a.workdir: node 'a': /w is inside an artifact at /, where a node "
        "could put a symlink",
    ]


# --- git directories kept read-only: the bound is exact ---------------------------------


def test_exactly_the_most_git_directories_are_kept_read_only(tmp_path):
    for i in range(MAX_GIT_PATHS):
        (tmp_path / "src" / f"r{i:02}" / ".git").mkdir(parents=True)
    policy = dataclasses.replace(default_policy(), mounts=(MountGrant(tmp_path, ("ro", "rw")),))
    text = node("mounts: [{source: src, target: /w, mode: rw}]")
    _, sandboxes = admitted_at(tmp_path, text, policy)
    (mount,) = sandboxes["a"].mounts
    assert len(mount.read_only_inside) == MAX_GIT_PATHS == 64
    (tmp_path / "src" / "one-more" / ".git").mkdir(parents=True)
    assert refusals(text, policy, path=str(tmp_path / "wf.yaml")) == [
        f"{tmp_path}/wf.yaml:6: nodes.a.mounts[0].source: node 'a': mount 'src' "
        f"({tmp_path}/src): has more than 64 git directories to keep read-only; mount less"
    ]


# --- two mounts at one place ------------------------------------------------------------


def test_each_second_mount_at_a_place_is_refused_naming_the_first(tmp_path):
    text = (
        "version: 1\nname: x\nnodes:\n"
        "  p: {command: [x], outputs: {artifacts: [{name: d, path: /d}, {name: e, path: /e}]}}\n"
        "  a:\n    command: [x]\n    needs: [p]\n"
        "    mounts: [{source: ., target: /w}]\n"
        "    outputs: {artifacts: [{name: d, path: /w}, {name: e, path: /o}]}\n"
        "    inputs: [{from: p/d, path: /o}, {from: p/e, path: /i}, {from: p/d, path: /i}]\n"
    )
    workflow = str(tmp_path / "wf.yaml")
    assert refusals(text, path=workflow) == [
        f"{workflow}:9: nodes.a.outputs.artifacts[0].path: node 'a': /w is already the target "
        "of mounts[0].target",
        f"{workflow}:10: nodes.a.inputs[0].path: node 'a': /o is already the target of "
        "outputs.artifacts[1].path",
        f"{workflow}:10: nodes.a.inputs[2].path: node 'a': /i is already the target of "
        "inputs[1].path",
    ]


def test_a_mount_holding_the_run_store_hides_it(tmp_path, monkeypatch):
    """The store (every run's outputs and reports) is masked in a mount that holds it."""
    (tmp_path / "state").mkdir()
    monkeypatch.setenv("SANDBOX_ORCH_HOME", str(tmp_path / "state"))
    _, sandboxes = admitted_at(tmp_path, node("mounts: [{source: ., target: /w}]"))
    (mount,) = sandboxes["a"].mounts
    assert (mount.source, mount.masks) == (str(tmp_path), ("/w/state",))


# --- a target placed through a symlink ---------------------------------------------------


@pytest.fixture
def linked(tmp_path):
    """A granted directory `m1` holding a symlink to /usr/local/bin and a real directory."""
    (tmp_path / "m1" / "real").mkdir(parents=True)
    (tmp_path / "m1" / "link").symlink_to("/usr/local/bin")
    (tmp_path / "m2").mkdir()
    return tmp_path


def nested_refusals(directory: Path, mounts: str, extra: str = "") -> list[str]:
    text = node(f"mounts: {mounts}\n{extra}".rstrip("\n"))
    plan = plan_of(text, path=str(directory / "wf.yaml"))
    policy = dataclasses.replace(default_policy(), mounts=(MountGrant(".", ("ro", "rw")),))
    try:
        admit(plan, policy)
    except InputRefused as refused:
        return [str(p) for p in refused.problems]
    return []


@pytest.mark.parametrize("mode", ["ro", "rw"])
@pytest.mark.parametrize("target", ["/w/link/x", "/w/link", "/w/real/../link/x"])
def test_a_mount_below_another_through_its_symlink_is_refused(linked, target, mode):
    mounts = f"[{{source: m1, target: /w, mode: {mode}}}, {{source: m2, target: '{target}'}}]"
    shown = target.replace("/real/..", "")
    assert nested_refusals(linked, mounts) == [
        f"{linked}/wf.yaml:6: nodes.a.mounts[1].target: node 'a': {shown} goes through a "
        f"symlink in the mounted {linked}/m1"
    ]


@pytest.mark.parametrize("mode", ["ro", "rw"])
@pytest.mark.parametrize("target", ["/w/real/x", "/w/other", "/wx/link", "/w"])
def test_a_mount_below_another_without_a_symlink_is_admitted(linked, target, mode):
    mounts = f"[{{source: m1, target: /w, mode: {mode}}}, {{source: m2, target: '{target}'}}]"
    found = nested_refusals(linked, mounts)
    if target == "/w":  # the same place: the other refusal's, not this one's
        assert found and all("symlink" not in line for line in found), found
    else:
        assert found == []


@pytest.mark.parametrize(
    ("mounts", "extra", "loc", "why"),
    [
        ("[{source: m2, target: /x}]", "outputs: {artifacts: [{name: d, path: /x/y/z}]}",
         "outputs.artifacts[0].path", "/x/y/z is inside a read-only mount"),
        ("[]", "outputs: {artifacts: [{name: d, path: /o}, {name: e, path: /o/e}]}",
         "outputs.artifacts[1].path", "/o/e is inside an artifact at /o"),
        ("[{source: m2, target: /o/m}]", "outputs: {artifacts: [{name: d, path: /o}]}",
         "mounts[0].target", "/o/m is inside an artifact at /o"),
    ],
)  # fmt: skip
def test_nothing_is_placed_below_what_a_node_writes(linked, mounts, extra, loc, why):
    found = nested_refusals(linked, mounts, extra)
    if "read-only mount" in why:  # below a mount with no symlink: admitted
        assert found == []
        return
    line = (
        f"nodes.a.{loc}: node 'a': {why}, where a node could put a symlink the engine would follow"
    )
    assert [x.split(": ", 1)[1] for x in found] == [line], found


@pytest.fixture
def forbidden_unresolvable(monkeypatch):
    """realpath fails on any path naming `forbidden`, as on /proc/1/root."""
    import os

    real = os.path.realpath

    def denied(path, *args, **kwargs):
        if "forbidden" in str(path):
            raise PermissionError(13, "Permission denied", str(path))
        return real(path, *args, **kwargs)

    monkeypatch.setattr(os.path, "realpath", denied)


def test_a_source_that_cannot_be_resolved_is_one_refusal(tmp_path, forbidden_unresolvable):
    """/proc/1/root, as root here: realpath raised PermissionError (a traceback, exit 3)."""
    found = nested_refusals(tmp_path, "[{source: forbidden/x, target: /w}]")
    assert [line.split(": ", 1)[1] for line in found] == [
        "nodes.a.mounts[0].source: node 'a': mount 'forbidden/x': cannot resolve: Permission denied"
    ]


def test_an_input_below_another_input_is_refused_naming_it(tmp_path):
    text = (
        "version: 1\nname: x\nnodes:\n"
        "  p: {command: [x], outputs: {artifacts: [{name: a, path: /a}, {name: b, path: /b}]}}\n"
        "  c:\n    command: [x]\n    needs: [p]\n"
        "    inputs: [{from: p/a, path: /in}, {from: p/b, path: /in/x}]\n"
    )
    plan = plan_of(text, path=str(tmp_path / "wf.yaml"))
    with pytest.raises(InputRefused) as refused:
        admit(plan, default_policy())
    assert [str(p).split(": ", 1)[1] for p in refused.value.problems] == [
        "nodes.c.inputs[1].path: node 'c': /in/x is inside an input at /in, where a node "
        "could put a symlink the engine would follow"
    ]


def test_every_mount_is_judged_after_one_that_cannot_be_resolved(tmp_path, forbidden_unresolvable):
    (tmp_path / "ok").mkdir()
    found = nested_refusals(
        tmp_path, "[{source: forbidden, target: /w}, {source: ok, target: /etc}]"
    )
    assert [line.split(": ", 2)[1] for line in found] == [
        "nodes.a.mounts[0].source",
        "nodes.a.mounts[1].target",
    ]
