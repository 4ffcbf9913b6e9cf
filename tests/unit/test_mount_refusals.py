"""Why a host path is refused, exactly: each protected kind names its reason, homes are
refused as homes, and the admission walk fails closed at its edges (the entry limit, an
unreadable directory, an entry gone since the listing, unknown mount points). Pure."""

from __future__ import annotations

import os
import site
import socket
from pathlib import Path

import pytest

from sandbox_orch import mounts
from sandbox_orch.mounts import exposure, masks, never_mountable, walk

SOMEONES_HOME = Path("/nonexistent-home")
HOME_REFUSED = "a home directory (or what contains one) is never mountable"


@pytest.mark.parametrize("path", sorted(mounts.SYSTEM_PATHS))
def test_a_system_path_is_refused_with_its_own_reason(path):
    why = never_mountable(Path(path).resolve(), "ro", home=SOMEONES_HOME)
    assert why is not None
    assert any(why.endswith(f"is never mountable ({r})") for r in mounts.SYSTEM_PATHS.values())


def test_what_contains_a_system_path_is_refused_in_any_mode_naming_it():
    reason = mounts.SYSTEM_PATHS["/var/lib"]
    for mode in ("ro", "rw"):
        why = never_mountable(Path("/var"), mode, home=SOMEONES_HOME)
        assert why == f"it contains /var/lib, which is never mountable ({reason})"


@pytest.mark.parametrize(
    ("name", "reason"),
    [*((n, "credentials") for n in mounts.CREDENTIALS),
     *((n, "what the home's owner runs at start-up") for n in mounts.STARTUP)],
)  # fmt: skip
def test_credentials_and_start_up_files_are_refused_naming_why(tmp_path, name, reason):
    home = tmp_path / "home"
    # Inside it (itself, .config, may first be refused for containing .config/gcloud).
    why = never_mountable(home / name / "x", "rw", home=home)
    assert why == f"{home / name} is never mountable ({reason})"
    why = never_mountable(Path("/home/bob") / name / "x", "ro", home=home)
    assert why == f"/home/bob/{name} is never mountable ({reason})"


@pytest.mark.parametrize("home", [Path("/opt/users/me"), Path("/home/bob/work/me")])
@pytest.mark.parametrize("mode", ["ro", "rw"])
def test_a_home_and_what_contains_it_are_refused_as_homes(home, mode):
    """The user's home, what contains it, and anyone's home under /home."""
    assert never_mountable(home, mode, home=home) == HOME_REFUSED
    assert never_mountable(home.parent, mode, home=home) == HOME_REFUSED
    assert never_mountable(Path("/home/alice"), mode, home=home) == HOME_REFUSED


def test_the_user_s_home_inside_someone_else_s_keeps_its_credentials(tmp_path):
    """The user's home lies in /home/bob/work: its .ssh is protected as the user's,
    not only as what /home/bob holds."""
    home = Path("/home/bob/work/me")
    assert never_mountable(home / ".ssh", "ro", home=home) == (
        f"{home}/.ssh is never mountable (credentials)"
    )
    assert never_mountable(Path("/home/bob/work/project"), "rw", home=home) is None


def test_the_engine_s_socket_and_what_contains_it_are_refused(tmp_path, monkeypatch):
    monkeypatch.setenv("DOCKER_HOST", f"unix://{tmp_path}/engine/api")
    (tmp_path / "engine").mkdir()
    why = never_mountable(tmp_path / "engine" / "api", "ro", home=SOMEONES_HOME)
    assert why == f"{tmp_path}/engine/api is never mountable (the container engine's socket)"
    why = never_mountable(tmp_path / "engine", "ro", home=SOMEONES_HOME)
    assert why == (
        f"it contains {tmp_path}/engine/api, which is never mountable "
        "(the container engine's socket)"
    )
    monkeypatch.setenv("DOCKER_HOST", "tcp://127.0.0.1:2375")
    assert never_mountable(tmp_path / "engine" / "api", "ro", home=SOMEONES_HOME) is None


def test_the_installation_is_refused_naming_it():
    package = Path(mounts.__file__).resolve().parent
    why = never_mountable(package, "rw", home=SOMEONES_HOME)
    assert why is not None and why.endswith("(the installation running sandbox-orch)")
    why = never_mountable(package.parent, "rw", home=SOMEONES_HOME)
    assert why is not None and "which is never mountable writable (" in why


def test_the_interpreter_s_site_directories_are_the_installation(tmp_path, monkeypatch):
    """Site-packages (the system's, the user's) run as this tool's code, wherever they are."""
    system, user = tmp_path / "site", tmp_path / "user-site"
    monkeypatch.setattr(site, "getsitepackages", lambda: [str(system)])
    monkeypatch.setattr(site, "ENABLE_USER_SITE", True)
    monkeypatch.setattr(site, "getusersitepackages", lambda: str(user))
    for path in (system, user / "x"):
        why = never_mountable(path, "ro", home=SOMEONES_HOME)
        assert why is not None and why.endswith("(the installation running sandbox-orch)")
    # An interpreter without getsitepackages (old virtualenv's site.py) still works.
    monkeypatch.delattr(site, "getsitepackages")
    assert never_mountable(system, "ro", home=SOMEONES_HOME) is None


def test_the_run_store_and_private_files_are_refused_naming_them(tmp_path, monkeypatch):
    from sandbox_orch import store

    monkeypatch.setenv("SANDBOX_ORCH_HOME", str(tmp_path / "state"))
    monkeypatch.setattr(store, "private_root", lambda: tmp_path / "private")
    why = never_mountable(tmp_path / "state", "rw", home=SOMEONES_HOME)
    assert why == f"{tmp_path}/state is never mountable (the run store)"
    why = never_mountable(tmp_path / "private" / "egress", "ro", home=SOMEONES_HOME)
    assert why == f"{tmp_path}/private is never mountable (sandbox-orch's private files)"


def test_a_mask_lies_exactly_at_the_store_under_the_target(tmp_path, monkeypatch):
    monkeypatch.setenv("SANDBOX_ORCH_HOME", str(tmp_path / "p" / "state"))
    assert masks(tmp_path / "p", "/workX") == ("/workX/state",)
    assert masks(tmp_path / "p", "/work/") == ("/work/state",)


# The walk's edges ----------------------------------------------------------------


def test_the_entry_limit_is_exact(tmp_path):
    for index in range(10):
        (tmp_path / f"f{index}").write_text("")
    assert exposure(tmp_path, limit=10) is None
    assert exposure(tmp_path, limit=9) == "has more than 9 entries to check for sockets; mount less"


def test_the_masked_run_store_is_not_walked(tmp_path, monkeypatch):
    """Its entries are hidden from the node: not counted, not kept read-only."""
    store = tmp_path / "state"
    monkeypatch.setenv("SANDBOX_ORCH_HOME", str(store))
    (store / "runs" / "r1" / "artifact" / ".git").mkdir(parents=True)
    for index in range(5):
        (store / f"f{index}").write_text("")
    (tmp_path / "a").write_text("")
    assert walk(tmp_path, limit=2) == mounts.Walk()


def _scandir_with(monkeypatch, where: Path, first=None, error: OSError | None = None):
    real = os.scandir

    def scandir(path):
        if Path(path) != where:
            return real(path)
        if error is not None:
            raise error
        return iter([first, *real(path)])

    monkeypatch.setattr(mounts.os, "scandir", scandir)


def test_a_directory_that_cannot_be_listed_is_refused(tmp_path, monkeypatch):
    (tmp_path / "closed").mkdir()
    _scandir_with(monkeypatch, tmp_path / "closed", error=PermissionError(13, "Permission denied"))
    assert exposure(tmp_path) == f"cannot check {tmp_path}/closed for sockets (Permission denied)"


def test_an_entry_gone_since_the_listing_does_not_end_the_check(tmp_path, monkeypatch):
    class Gone:
        name = "gone"
        path = str(tmp_path / "gone")

        def stat(self, follow_symlinks=True):
            raise FileNotFoundError(2, "No such file or directory")

    _scandir_with(monkeypatch, tmp_path, first=Gone())
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    with server:
        server.bind(str(tmp_path / "sock"))
        assert exposure(tmp_path) == (
            f"contains a socket, {tmp_path}/sock; sockets are never mountable"
        )


def test_unreadable_mount_points_fail_closed_with_a_clear_reason(tmp_path, monkeypatch):
    monkeypatch.setattr(mounts, "_mount_points", lambda: None)
    assert exposure(tmp_path) == (
        "cannot tell which file systems are mounted inside (/proc/self/mountinfo)"
    )


def test_mount_points_are_the_fifth_field_in_any_bytes(tmp_path):
    """mountinfo is bytes: a mount point that is not UTF-8 is read as the file system
    names it (as os.fsdecode would), never an error; a short line still has one."""
    info = tmp_path / "mountinfo"
    info.write_bytes(
        b"36 35 98:0 / /mnt/\xff\\040x rw,noatime - ext4 /dev/x rw\n"
        b"1 2 3:4 / /short\n"
        b"bad line\n" + "40 35 98:0 / /mnt/\u00e9t\u00e9 rw - ext4 /dev/y rw\n".encode()
    )
    assert mounts._mount_points(str(info)) == {
        Path(os.fsdecode(b"/mnt/\xff x")),
        Path("/short"),
        Path("/mnt/\u00e9t\u00e9"),
    }
    assert mounts._mount_points(str(tmp_path / "missing")) is None


# Grants --------------------------------------------------------------------------


def test_a_path_without_a_grant_is_refused_saying_which_grant_is_missing(tmp_path):
    from sandbox_orch.mounts import grant_for
    from sandbox_orch.policy import MountGrant

    grants = (MountGrant(Path("ro-root"), ("ro",)), MountGrant(Path("both"), ("ro", "rw")))
    assert grant_for(tmp_path / "ro-root" / "x", "ro", grants, tmp_path) is None
    assert grant_for(tmp_path / "both", "rw", grants, tmp_path) is None
    why = grant_for(tmp_path / "ro-root" / "x", "rw", grants, tmp_path)
    assert why == "granted only as ro, not rw"
    why = grant_for(tmp_path / "elsewhere", "ro", grants, tmp_path)
    assert why == "not under any mount root the policy grants"
