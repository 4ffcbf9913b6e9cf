"""What a node may mount from the host, and where: pure rules, no engine."""

from __future__ import annotations

import socket
import sys
from pathlib import Path

import pytest

from sandbox_orch import mounts
from sandbox_orch.containerpaths import (
    ALIASES,
    canonical,
    forbidden_target,
    forbidden_workdir,
    normalise,
)
from sandbox_orch.mounts import exposure, masks, never_mountable
from sandbox_orch.policy import POLICIES_DIR

PACKAGE = Path(mounts.__file__).resolve().parent
SOMEONES_HOME = Path("/nonexistent-home")  # so the test user's own home does not interfere


# Container paths: one normal form --------------------------------------------------


@pytest.mark.parametrize(
    ("written", "normal"),
    [
        ("/proc", "/proc"),
        ("//proc/self", "/proc/self"),
        ("/./proc/./self/", "/proc/self"),
        ("/tmp/../proc", "/proc"),
        ("/../../etc", "/etc"),
        ("///", "/"),
        ("/work//a/b/../c/", "/work/a/c"),
        ("/a/.../b", "/a/.../b"),
    ],
)
def test_container_paths_have_one_normal_form(written, normal):
    assert normalise(written) == normal


@pytest.mark.parametrize("bad", ["work", "./work", "", "~/x", "/a\x00b", "/a\nb", None, 7])
def test_container_paths_must_be_absolute_and_plain(bad):
    with pytest.raises(ValueError):
        normalise(bad)


def test_container_paths_are_bounded_in_length():
    with pytest.raises(ValueError, match="at most"):
        normalise("/" + "a" * 2000)


@pytest.mark.parametrize(
    ("path", "reached"),
    [
        ("/dev/fd/3", "/proc/self/fd/3"),
        ("/dev/stdin", "/proc/self/fd/0"),
        ("/var/run/egress", "/run/egress"),
        ("/lib/x86_64-linux-gnu", "/usr/lib/x86_64-linux-gnu"),
        ("/bin/sh", "/usr/bin/sh"),
        ("/sbin/docker-init", "/usr/sbin/docker-init"),
        ("/work/dev/fd", "/work/dev/fd"),
        ("/binaries", "/binaries"),
    ],
)
def test_fixed_image_symlinks_are_looked_through(path, reached):
    assert canonical(path) == reached


@pytest.mark.parametrize(
    "target",
    ["/", "//", "/proc", "/sys/x", "/dev/shm", "/dev/fd/3", "/etc/x", "/usr/local/bin",
     "/bin", "/sbin", "/lib", "/lib64", "/libx32", "/boot", "/run", "/run/egress",
     "/var/run/egress", "/var/lock/x"],
)  # fmt: skip
def test_targets_over_system_paths_are_refused(target):
    assert forbidden_target(normalise(target)) is not None


@pytest.mark.parametrize("target", ["/work", "/tmp/x", "/home/node/w", "/opt/a", "/usrx", "/var/x"])
def test_ordinary_targets_are_allowed(target):
    assert forbidden_target(target) is None


@pytest.mark.parametrize("workdir", ["/proc", "/proc/1/cwd", "/dev/fd/9", "/dev", "/sys/fs"])
def test_workdirs_in_kernel_interfaces_are_refused(workdir):
    assert forbidden_workdir(workdir) is not None


# Host paths: never mountable ---------------------------------------------------------


@pytest.mark.parametrize(
    "path",
    ["/usr", "/usr/local/bin", "/lib", "/lib64", "/bin", "/sbin", "/boot", "/root", "/home",
     "/var/lib", "/var/lib/docker", "/var/log", "/var/backups", "/var", "/etc", "/run"],
)  # fmt: skip
@pytest.mark.parametrize("mode", ["ro", "rw"])
def test_system_directories_are_never_mountable(path, mode):
    why = never_mountable(Path(path).resolve(), mode, home=SOMEONES_HOME)  # as admission does
    assert why is not None and "never mountable" in why and "(" in why, why  # with a reason


def test_a_project_in_someones_home_is_mountable():
    assert never_mountable(Path("/home/alice/project"), "rw", home=SOMEONES_HOME) is None
    assert never_mountable(Path("/opt/project"), "rw", home=SOMEONES_HOME) is None


@pytest.mark.parametrize(
    "path",
    [PACKAGE, PACKAGE / "backend", Path(sys.prefix), Path(sys.exec_prefix),
     Path(sys.base_prefix), POLICIES_DIR],
)  # fmt: skip
@pytest.mark.parametrize("mode", ["ro", "rw"])
def test_the_tools_own_installation_is_never_mountable(path, mode):
    assert never_mountable(path.resolve(), mode, home=SOMEONES_HOME) is not None


@pytest.mark.parametrize("inner", [PACKAGE, Path(sys.prefix)])
def test_what_contains_the_tool_is_mountable_read_only_only(inner):
    around = inner.resolve().parent
    assert never_mountable(around, "ro", home=SOMEONES_HOME) is None
    why = never_mountable(around, "rw", home=SOMEONES_HOME)
    assert why is not None and "never mountable writable" in why


def test_the_run_store_is_never_mountable_but_masked_inside_a_mount(tmp_path, monkeypatch):
    store = tmp_path / "project" / ".sandbox-orch"
    (store / "runs").mkdir(parents=True)
    monkeypatch.setenv("SANDBOX_ORCH_HOME", str(store))
    for path in (store, store / "runs"):
        for mode in ("ro", "rw"):
            assert "the run store" in (never_mountable(path, mode, home=SOMEONES_HOME) or "")
    for mode in ("ro", "rw"):
        assert never_mountable(tmp_path / "project", mode, home=SOMEONES_HOME) is None
    # Deeper, read-only only: a node could rename `project` and move the store.
    assert never_mountable(tmp_path, "ro", home=SOMEONES_HOME) is None
    why = never_mountable(tmp_path, "rw", home=SOMEONES_HOME)
    assert why is not None and "below a directory a node could rename" in why
    assert masks(tmp_path / "project", "/w") == ("/w/.sandbox-orch",)
    assert masks(tmp_path, "/") == ("/project/.sandbox-orch",)
    assert masks(tmp_path / "elsewhere", "/w") == ()


def test_a_store_reached_through_a_symlink_is_still_the_store(tmp_path, monkeypatch):
    (tmp_path / "real" / "store").mkdir(parents=True)
    (tmp_path / "link").symlink_to(tmp_path / "real")
    monkeypatch.setenv("SANDBOX_ORCH_HOME", str(tmp_path / "link" / "store"))
    assert never_mountable(tmp_path / "real" / "store", "ro", home=SOMEONES_HOME) is not None
    assert masks(tmp_path / "real", "/w") == ("/w/store",)


def test_the_private_directory_of_egress_sockets_is_never_mountable(monkeypatch):
    from sandbox_orch.store import private_root

    root = Path(mounts._real(private_root()))
    assert never_mountable(root / "egress", "ro", home=SOMEONES_HOME) is not None
    assert never_mountable(root.parent, "ro", home=SOMEONES_HOME) is not None


# Host paths: what a mount would expose -----------------------------------------------


def _listen(path: Path) -> socket.socket:
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(str(path))
    server.listen()
    return server


@pytest.mark.parametrize("where", ["sock", "a/b/c/d/sock"])
def test_a_directory_containing_a_socket_is_refused_naming_it(tmp_path, where):
    path = tmp_path / where
    path.parent.mkdir(parents=True, exist_ok=True)
    with _listen(path):
        why = exposure(tmp_path)
    assert why is not None and str(path) in why and "socket" in why


def test_a_directory_without_sockets_is_fine(tmp_path):
    (tmp_path / "a" / "b").mkdir(parents=True)
    (tmp_path / "a" / "f").write_text("x")
    (tmp_path / "loop").symlink_to(tmp_path)  # not followed
    assert exposure(tmp_path) is None
    assert exposure(tmp_path / "a" / "f") is None


def test_a_tree_too_large_to_check_is_refused_not_skipped(tmp_path):
    for index in range(12):
        (tmp_path / f"f{index}").write_text("")
    why = exposure(tmp_path, limit=10)
    assert why is not None and "more than 10 entries" in why


def test_another_file_system_mounted_inside_is_refused(tmp_path, monkeypatch):
    inner = tmp_path / "sub" / "mnt"
    monkeypatch.setattr(mounts, "_mount_points", lambda: {Path("/"), tmp_path, inner})
    why = exposure(tmp_path)
    assert why is not None and str(inner) in why and "mounted file system" in why


def test_mount_points_with_spaces_are_read(tmp_path, monkeypatch):
    assert mounts._unescape("/a\\040b\\134c") == "/a b\\c"
    assert Path("/") in mounts._mount_points()


# Where things are mounted in a node ----------------------------------------------------


def test_two_mounts_at_one_place_are_refused_in_any_spelling():
    from sandbox_orch.errors import InputRefused

    from .helpers import admitted

    text = (
        "version: 1\nname: x\nnodes:\n  a:\n    command: [x]\n"
        "    mounts: [{source: ., target: /w}, {source: ., target: '//w/'}, "
        "{source: ., target: /tmp/./}]\n"
        "    outputs: {artifacts: [{name: d, path: /w/../w}]}\n"
    )
    with pytest.raises(InputRefused) as caught:
        admitted(text)
    lines = [str(p) for p in caught.value.problems]
    assert len(lines) == 3, lines
    assert "mounts[1].target" in lines[0] and "/w is already the target of mounts[0]" in lines[0]
    assert "/tmp is already the target of a tmpfs of the policy" in lines[1]
    assert "artifacts[0].path" in lines[2]


def test_engine_gets_non_recursive_binds_and_read_only_masks():
    from sandbox_orch.backend.base import ContainerSpec
    from sandbox_orch.backend.docker import container_kwargs

    class Api:  # create_host_config only gathers its arguments
        def create_host_config(self, **kwargs):
            return kwargs

    bind = mounts.BindMount("/src", "/w", read_only=False, masks=("/w/.sandbox-orch",))
    spec = ContainerSpec("n", "img", ("x",), "1:1", {}, 1.0, 1 << 20, 8, {}, mounts=(bind,))
    (first, mask) = container_kwargs(spec, Api())["host_config"]["mounts"]
    assert first["Type"] == "bind" and first["Source"] == "/src" and first["ReadOnly"] is False
    assert first["BindOptions"] == {"Propagation": "rprivate", "NonRecursive": True}
    assert mask["Type"] == "tmpfs" and mask["Target"] == "/w/.sandbox-orch"
    assert mask["ReadOnly"] is True and mask["TmpfsOptions"]["SizeBytes"] <= 4096


def test_the_private_directory_must_be_ours_and_closed(tmp_path, monkeypatch):
    from sandbox_orch import store

    monkeypatch.setattr(store, "private_root", lambda: tmp_path / "root")
    made = store.private_dir("egress")
    assert made == tmp_path / "root" / "egress" and (made.stat().st_mode & 0o777) == 0o700
    made.chmod(0o755)  # readable by others: refused, never used
    with pytest.raises(OSError, match="not a private directory"):
        store.private_dir("egress")
    made.rmdir()
    (tmp_path / "elsewhere").mkdir(mode=0o700)
    made.symlink_to(tmp_path / "elsewhere")  # planted by someone else: refused
    with pytest.raises(OSError, match="not a private directory"):
        store.private_dir("egress")


def test_a_single_runs_workspace_copy_leaves_the_run_store_out(tmp_path, monkeypatch):
    from sandbox_orch.single import workspace as single

    from .helpers import default_policy

    workspace = tmp_path / "ws"
    (workspace / "state" / "runs").mkdir(parents=True)
    (workspace / "src").mkdir()
    (workspace / "src" / "a.py").write_text("x = 1\n")
    (workspace / ".git").mkdir()
    monkeypatch.setenv("SANDBOX_ORCH_HOME", str(workspace / "state"))
    policy = default_policy()
    copy = single.copy_workspace(workspace, "r1", policy)
    assert sorted(p.name for p in copy.working.iterdir()) == ["src"]
    assert (copy.working / "src" / "a.py").read_text() == "x = 1\n"


@pytest.mark.parametrize("credential", mounts.CREDENTIALS)
@pytest.mark.parametrize("mode", ["ro", "rw"])
def test_every_credential_store_in_the_home_is_never_mountable(tmp_path, credential, mode):
    home = tmp_path / "home"
    assert never_mountable(home / credential, mode, home=home) is not None
    assert never_mountable(home / credential / "key", mode, home=home) is not None


@pytest.mark.parametrize("alias", sorted(ALIASES))
def test_every_fixed_symlink_leads_somewhere_forbidden(alias):
    assert forbidden_target(alias) is not None
    assert forbidden_target(alias + "/x") is not None


@pytest.mark.parametrize("path", sorted(mounts.SYSTEM_PATHS))
def test_every_system_path_is_refused_with_its_reason(path):
    why = never_mountable(Path(path).resolve(), "ro", home=SOMEONES_HOME)
    assert why is not None and "(" in why, why


def test_unknown_mount_points_fail_closed(tmp_path, monkeypatch):
    monkeypatch.setattr(mounts, "_mount_points", lambda: None)
    why = exposure(tmp_path)
    assert why is not None and "cannot tell" in why


@pytest.mark.parametrize("name", [*mounts.CREDENTIALS, *mounts.STARTUP])
@pytest.mark.parametrize("home", [Path("/home/bob"), Path("/nonexistent-home")])
def test_credentials_and_start_up_files_of_any_home_are_never_mountable(name, home):
    # /home/bob: someone else's home (the tool may run as root); the other: the user's own.
    assert never_mountable(home / name, "ro", home=SOMEONES_HOME) is not None
    assert never_mountable(home / name / "x", "rw", home=SOMEONES_HOME) is not None


def test_someone_elses_home_is_never_mountable_but_a_project_in_it_is():
    why = never_mountable(Path("/home/bob"), "ro", home=SOMEONES_HOME)
    assert why is not None and "never mountable" in why
    assert never_mountable(Path("/home/bob/project"), "rw", home=SOMEONES_HOME) is None


def test_a_source_mounted_by_many_nodes_is_walked_once(tmp_path, monkeypatch):
    from sandbox_orch import admission

    from .helpers import default_policy, plan_of

    walks: list[Path] = []
    real = admission.walk
    monkeypatch.setattr(admission, "walk", lambda path: walks.append(path) or real(path))
    nodes = "".join(
        f"  n{i}: {{command: [x], mounts: [{{source: ., target: /w}}]}}\n" for i in range(20)
    )
    plan = plan_of(f"version: 1\nname: x\nnodes:\n{nodes}", path=str(tmp_path / "wf.yaml"))
    assert len(admission.admit(plan, default_policy())) == 20
    assert walks == [tmp_path.resolve()]


# --- sources swapped for a symlink after admission ----------------------------------------


def test_a_source_or_kept_git_path_now_through_a_symlink_is_moved(tmp_path):
    from sandbox_orch.mounts import BindMount, moved

    (tmp_path / "src" / "sub" / ".git").mkdir(parents=True)
    (tmp_path / "host-only").mkdir()
    source = str(tmp_path / "src")
    kept = BindMount(source, "/w", False, read_only_inside=("sub/.git",))
    plain = BindMount(str(tmp_path / "host-only"), "/h", True)
    assert moved([plain, kept]) is None
    (tmp_path / "src" / "sub").rename(tmp_path / "src" / "was")
    (tmp_path / "src" / "sub").mkdir()
    (tmp_path / "src" / "sub" / ".git").symlink_to(tmp_path / "host-only")
    assert moved([plain, kept]) == (
        f"mount source {source}/sub/.git now goes through a symlink, which the engine would "
        "follow on the host (it did not when the run was admitted)"
    )
    (tmp_path / "src").rename(tmp_path / "src-was")
    (tmp_path / "src").symlink_to(tmp_path / "host-only")
    assert moved([kept]) == (
        f"mount source {source} now goes through a symlink, which the engine would "
        "follow on the host (it did not when the run was admitted)"
    )
    assert moved([]) is None


def test_a_target_below_a_bind_now_through_a_symlink_is_moved(tmp_path):
    from sandbox_orch.mounts import BindMount, moved, through_symlink

    (tmp_path / "src" / "out").mkdir(parents=True)
    bind = BindMount(str(tmp_path / "src"), "/w", False)
    targets = ["/w", "/w/out/x", "/wx/out", "/other"]
    assert moved([bind], targets) is None and through_symlink("/w/out/x", [bind]) is None
    (tmp_path / "src" / "out").rename(tmp_path / "src" / "was")
    (tmp_path / "src" / "out").symlink_to("/usr/local/bin")
    assert through_symlink("/w/out/x", [bind]) == (
        f"/w/out/x goes through a symlink in the mounted {tmp_path / 'src'}"
    )
    assert moved([bind], targets) == (
        f"/w/out/x goes through a symlink in the mounted {tmp_path / 'src'} "
        "(it did not when the run was admitted)"
    )
    assert moved([bind], ["/w", "/wx/out/x"]) is None
    assert through_symlink("/w/out", [BindMount(str(tmp_path / "src"), "/w/", True)]) is not None


def test_a_path_that_cannot_be_resolved_counts_as_through_a_symlink(tmp_path, monkeypatch):
    from sandbox_orch.mounts import BindMount, moved, via_symlink

    assert via_symlink(str(tmp_path)) is False

    def denied(path, *args, **kwargs):
        raise PermissionError(13, "Permission denied", path)

    monkeypatch.setattr(mounts.os.path, "realpath", denied)
    assert via_symlink(str(tmp_path)) is True
    assert moved([BindMount(str(tmp_path), "/w", True)]) is not None


def test_a_bind_target_ending_in_any_letter_still_holds_what_is_below_it(tmp_path):
    from sandbox_orch.mounts import BindMount, through_symlink

    (tmp_path / "link").symlink_to("/usr/local/bin")
    bind = BindMount(str(tmp_path), "/dataX", True)
    assert through_symlink("/dataX/link/y", [bind]) == (
        f"/dataX/link/y goes through a symlink in the mounted {tmp_path}"
    )
    assert through_symlink("/dataXY/link/y", [bind]) is None
