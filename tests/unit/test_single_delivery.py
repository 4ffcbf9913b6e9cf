"""Getting `single`'s changes back (no engine; real git in temporary directories): the
printed command, --apply (only onto an unchanged workspace, only when it applies cleanly)
and --branch (a commit on a new branch; working tree, index and HEAD untouched)."""

from __future__ import annotations

import os
import shlex
import subprocess
from pathlib import Path

import pytest

from sandbox_orch.errors import InputRefused
from sandbox_orch.single.changes import write_patch
from sandbox_orch.single.delivery import (
    Delivery,
    apply_command,
    apply_to_workspace,
    check_delivery,
    commit_on_branch,
    default_workspace,
)
from sandbox_orch.single.workspace import copy_workspace
from tests.unit.helpers import default_policy

GIT = ["git", "-c", "user.name=t", "-c", "user.email=t@localhost"]


def git(root: Path, *args: str) -> str:
    done = subprocess.run([*GIT, "-C", str(root), *args], capture_output=True, check=True)
    return done.stdout.decode()


@pytest.fixture
def repo(tmp_path, monkeypatch) -> Path:
    monkeypatch.setenv("SANDBOX_ORCH_HOME", str(tmp_path / "store"))
    root = tmp_path / "repo"
    (root / "pkg").mkdir(parents=True)
    (root / "pkg" / "a.txt").write_text("one\ntwo\n")
    (root / "bin.dat").write_bytes(b"\0\1\2")
    git(root, "init", "-q", "-b", "main")
    git(root, "add", "-A")
    git(root, "commit", "-qm", "init")
    return root


def changed_copy(root: Path, workspace: Path | None = None):
    """A copy of the workspace with a node's edits, and its patch's path."""
    copy = copy_workspace(workspace or root, "r1", default_policy())
    pkg = copy.working if workspace is not None else copy.working / "pkg"
    (pkg / "a.txt").write_text("one\nTWO\n")
    (pkg / "new.sh").write_text("#!/bin/sh\n")
    (pkg / "new.sh").chmod(0o755)
    artifact = write_patch(copy, "r1")
    assert artifact is not None
    return copy, Path(artifact["path"])


def test_the_workspace_defaults_to_the_repository_root(repo, tmp_path):
    assert default_workspace(repo / "pkg") == repo
    plain = tmp_path / "plain"
    plain.mkdir()
    assert default_workspace(plain) == plain


def test_the_printed_command_applies_from_a_subdirectory(repo):
    _, patch = changed_copy(repo, repo / "pkg")
    command = apply_command(repo, patch)
    assert command.startswith(f"git -C {shlex.quote(str(repo))} apply ")
    subprocess.run(shlex.split(command), cwd=repo / "pkg", check=True)
    assert (repo / "pkg" / "a.txt").read_text() == "one\nTWO\n"
    assert os.access(repo / "pkg" / "new.sh", os.X_OK)


def test_apply_onto_an_unchanged_workspace(repo):
    copy, patch = changed_copy(repo)
    assert apply_to_workspace(copy, patch) == f"applied to {repo}"
    assert (repo / "pkg" / "a.txt").read_text() == "one\nTWO\n"
    assert os.access(repo / "pkg" / "new.sh", os.X_OK)


@pytest.mark.parametrize("change", ["edit", "add", "delete"])
def test_apply_refuses_a_workspace_changed_meanwhile(repo, change):
    copy, patch = changed_copy(repo)
    if change == "edit":
        (repo / "bin.dat").write_bytes(b"\0\1\2\3")
    elif change == "add":
        (repo / "other.txt").write_text("new\n")
    else:
        (repo / "bin.dat").unlink()
    message = apply_to_workspace(copy, patch)
    assert message.startswith("not applied: the workspace changed since it was copied")
    assert message.endswith("patch kept") and patch.exists()
    assert (repo / "pkg" / "a.txt").read_text() == "one\ntwo\n"  # not touched


def test_apply_refuses_a_patch_that_does_not_apply(repo):
    copy, patch = changed_copy(repo)
    patch.write_bytes(patch.read_bytes().replace(b"-two", b"-three"))
    message = apply_to_workspace(copy, patch)
    assert message.startswith("not applied: it does not apply cleanly")
    assert (repo / "pkg" / "a.txt").read_text() == "one\ntwo\n"


def state(root: Path) -> tuple[str, str, str, bytes]:
    files = b"".join(p.read_bytes() for p in sorted(root.rglob("*")) if ".git" not in p.parts
                     and p.is_file())  # fmt: skip
    return git(root, "rev-parse", "HEAD"), git(root, "symbolic-ref", "HEAD"), \
        git(root, "ls-files", "-s"), files  # fmt: skip


def test_branch_commits_without_touching_the_tree_index_or_head(repo):
    (repo / "pkg" / "staged.txt").write_text("staged\n")
    git(repo, "add", "pkg/staged.txt")  # the user's own work in progress stays theirs
    copy, patch = changed_copy(repo)
    before = state(repo)
    message = commit_on_branch(copy, patch, "agent/work", "sandbox-orch single shell")
    assert message.startswith("committed on branch agent/work")
    assert state(repo) == before
    assert git(repo, "rev-parse", "agent/work^") == before[0]
    assert git(repo, "show", "agent/work:pkg/a.txt") == "one\nTWO\n"
    assert git(repo, "ls-tree", "agent/work", "pkg/new.sh").startswith("100755 ")


def test_branch_keeps_the_patch_when_it_does_not_apply_on_head(repo):
    (repo / "pkg" / "a.txt").write_text("one\nuncommitted\n")  # the copy holds this
    copy, patch = changed_copy(repo)
    message = commit_on_branch(copy, patch, "agent/work", "m")
    assert message.startswith("no branch: the patch does not apply on HEAD")
    missing = subprocess.run(["git", "-C", str(repo), "rev-parse", "--verify", "-q", "agent/work"])
    assert missing.returncode != 0


@pytest.mark.parametrize(
    ("delivery", "message"),
    [
        (Delivery(apply=True, branch="x"), "choose --apply or --branch, not both"),
        (Delivery(branch="main"), "branch 'main' already exists"),
        (Delivery(branch="bad..name"), "'bad..name' is not a valid branch name"),
        (Delivery(branch="-x"), "'-x' is not a valid branch name"),
    ],
)
def test_delivery_refusals_before_anything_starts(repo, delivery, message):
    with pytest.raises(InputRefused, match=message):
        check_delivery(repo, delivery)


def test_branch_outside_git_is_refused(tmp_path):
    with pytest.raises(InputRefused, match="is not in a git repository"):
        check_delivery(tmp_path, Delivery(branch="x"))
    check_delivery(tmp_path, Delivery(apply=True))  # --apply works outside git
