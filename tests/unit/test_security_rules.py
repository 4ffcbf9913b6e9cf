"""Each security rule as a class, over its whole list: every never-mountable path, every
credential, every runtime socket, every denied environment name and the LD_ prefix.
Iterating the module's own lists keeps these tests true when a list grows, and makes a
deleted rule fail one of them (mutation testing found such deletions unnoticed)."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from sandbox_orch import containerpaths, mounts
from sandbox_orch.envnames import DENIED
from sandbox_orch.errors import InputRefused

from .helpers import admitted


def refusal(env_name: str) -> str | None:
    text = f"version: 1\nname: x\nnodes:\n  a: {{command: [x], env: {{{env_name}: v}}}}\n"
    try:
        admitted(text)
    except InputRefused as refused:
        return str(refused)
    return None


@pytest.mark.parametrize("entry", sorted(DENIED))
def test_every_denied_environment_name_is_refused_in_any_case(entry):
    name = entry.removesuffix("*") + ("X" if entry.endswith("*") else "")
    for spelling in (name, name.lower()):
        assert "deny list" in (refusal(spelling) or ""), spelling


@pytest.mark.parametrize("name", ["LD_BIND_NOW", "LD_DEBUG", "ld_something_new"])
def test_every_ld_variable_is_refused_not_only_the_listed_ones(name):
    assert name.upper() not in DENIED
    assert "deny list" in (refusal(name) or "")


def test_an_ordinary_environment_name_is_accepted():
    assert refusal("OLD_VALUE") is None and refusal("BUILD") is None


@pytest.mark.parametrize("system", mounts.SYSTEM_PATHS)
def test_every_system_path_is_never_mountable_nor_what_is_inside(system, tmp_path):
    home = tmp_path / "home"
    real = Path(mounts.os.path.realpath(system))
    for path in (real, real / "some" / "file"):
        for mode in ("ro", "rw"):
            why = mounts.never_mountable(path, mode, home=home)
            assert why and "never mountable" in why, (path, mode)


@pytest.mark.parametrize("credential", mounts.CREDENTIALS)
def test_every_credential_in_a_home_is_never_mountable(credential, tmp_path):
    home = tmp_path / "home"
    assert "never mountable" in (mounts.never_mountable(home / credential, home=home) or "")
    inside = home / credential / "key"
    assert "never mountable" in (mounts.never_mountable(inside, home=home) or "")


def test_the_home_and_what_contains_it_are_never_mountable(tmp_path):
    home = tmp_path / "home"
    for path in (home, tmp_path):  # refused, for the home or the credentials it holds
        assert "never mountable" in (mounts.never_mountable(path, home=home) or "")

    assert mounts.never_mountable(tmp_path / "elsewhere", home=home) is None


@pytest.mark.parametrize("name", sorted(mounts.RUNTIME_SOCKETS))
def test_every_runtime_socket_name_is_never_mountable(name, tmp_path):
    why = mounts.never_mountable(tmp_path / name, home=tmp_path / "home")
    assert why == "sockets are never mountable"


def test_any_socket_is_never_mountable(tmp_path):
    path = tmp_path / "some.sock"
    with socket.socket(socket.AF_UNIX) as listener:
        listener.bind(str(path))
        why = mounts.never_mountable(path, home=tmp_path / "home")
    assert why == "sockets are never mountable"
    plain = tmp_path / "plain.sock"
    plain.write_text("not a socket")
    assert mounts.never_mountable(plain, home=tmp_path / "home") is None


def test_the_engine_socket_named_by_docker_host_is_never_mountable(tmp_path, monkeypatch):
    engine = tmp_path / "engine" / "api"
    engine.parent.mkdir()
    engine.write_text("")
    monkeypatch.setenv("DOCKER_HOST", f"unix://{engine}")
    why = mounts.never_mountable(engine, home=tmp_path / "home")
    assert why and "never mountable" in why
    contains = mounts.never_mountable(engine.parent, home=tmp_path / "home")
    assert contains and "contains" in contains
    monkeypatch.setenv("DOCKER_HOST", "tcp://127.0.0.1:2375")
    assert mounts.never_mountable(engine, home=tmp_path / "home") is None


@pytest.mark.parametrize("target", containerpaths.FORBIDDEN_TARGETS)
def test_no_mount_over_a_system_target(target):
    expected = f"cannot mount over {target}: {containerpaths.FORBIDDEN_TARGETS[target]}"
    assert containerpaths.forbidden_target(target) == expected
    assert containerpaths.forbidden_target(target + "/x") == expected
    assert containerpaths.forbidden_target(target + "x") is None  # a sibling, not inside
    assert containerpaths.forbidden_target("/") == "cannot mount over the root file system"


def test_what_holds_the_policies_is_mountable_read_only_never_writable(tmp_path):
    policies = Path(mounts.os.path.realpath(mounts.POLICIES_DIR))
    holder = policies.parent
    home = tmp_path / "home"
    assert mounts.never_mountable(holder, "ro", home=home) is None  # reading leaks nothing
    why = mounts.never_mountable(holder, "rw", home=home)
    assert why == f"it contains {policies}, which is never mountable writable (the policies)"
    for mode in ("ro", "rw"):  # the policies themselves: never
        assert mounts.never_mountable(policies, mode, home=home) == (
            f"{policies} is never mountable (the policies)"
        )
    assert mounts.never_mountable(holder, home=home) is None  # read-only by default


def test_the_root_file_system_is_never_mountable(tmp_path):
    for mode in ("ro", "rw"):
        assert mounts.never_mountable(Path("/"), mode, home=tmp_path) == (
            "the root file system is never mountable"
        )


# The floor of each list: what the README and CONTRACT promise. A list may grow (the
# tests above then cover the new entries); deleting one of these fails here.
FLOORS = {
    "SYSTEM_PATHS": (mounts.SYSTEM_PATHS, {
        "/etc", "/proc", "/sys", "/dev", "/boot", "/run", "/var/run", "/var/lib", "/usr",
        "/bin", "/sbin", "/lib", "/root"}),
    "RUNTIME_SOCKETS": (mounts.RUNTIME_SOCKETS, {
        "docker.sock", "containerd.sock", "crio.sock", "podman.sock", "dockershim.sock",
        "cri-dockerd.sock", "buildkitd.sock", "containerd-shim.sock", "kubelet.sock"}),
    "CREDENTIALS": (mounts.CREDENTIALS, {
        ".ssh", ".aws", ".docker", ".kube", ".gnupg", ".config/gcloud", ".azure", ".netrc",
        ".git-credentials", ".config/gh", ".claude", ".claude.json", ".codex",
        ".config/claude", "Library/Keychains"}),
    "FORBIDDEN_TARGETS": (containerpaths.FORBIDDEN_TARGETS, {
        "/proc", "/sys", "/dev", "/etc", "/usr", "/boot", "/run"}),
    "DENIED_ENV": (DENIED, {
        "LD_*", "BASH_ENV", "ENV", "NODE_*", "PYTHON*", "GIT_*", "PATH", "PERL*",
        "HTTP_PROXY", "HTTPS_PROXY"}),
}  # fmt: skip


@pytest.mark.parametrize(
    "path", ["/var/lib/docker", "/var/lib/containerd", "/var/lib/kubelet", "/usr/local/bin"]
)
def test_engine_state_and_programs_are_never_mountable(path, tmp_path):
    for mode in ("ro", "rw"):
        why = mounts.never_mountable(Path(path), mode, home=tmp_path / "home")
        assert why and "never mountable" in why, (path, mode)


@pytest.mark.parametrize("name", sorted(FLOORS))
def test_no_security_list_loses_an_entry(name):
    current, floor = FLOORS[name]
    assert floor <= {str(entry) for entry in current}, floor - set(current)
