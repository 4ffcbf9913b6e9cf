"""A read-write mount of a git repository, attacked from inside nodes on the real engine,
under runc and gVisor: a node that rewrote `.git/hooks/*` or `.git/config`
(core.fsmonitor, core.pager, ...) would run its code on the host at the user's next git
command. Every git directory, `.git` file, configured hooks directory and included config
file in a read-write mount is bound again read-only; the rest of the mount stays
writable."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from tests.conftest import labelled_leftovers
from tests.integration.test_exposure import run_cli, verdict, write_policy

pytestmark = pytest.mark.engine

RUNTIMES = ("runc", "runsc")


def git(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    # No global or system config of the machine's: only the repository's own.
    env = {**os.environ, "GIT_CONFIG_NOSYSTEM": "1", "HOME": str(cwd)}
    ident = ["-c", "user.name=t", "-c", "user.email=t@example.invalid"]
    return subprocess.run(["git", *ident, *args], cwd=cwd, env=env, capture_output=True, text=True)


@pytest.fixture(params=RUNTIMES)
def runtime(request) -> str:
    return request.param


@pytest.fixture
def project(tmp_path) -> Path:
    """A repository (hooks in .git and, as husky sets it, in .githooks), a linked worktree
    of it, and a nested clone, all in the granted directory and writable by the node's
    user (the worst case: only the read-only binds stop it)."""
    path = tmp_path / "project"
    repo = path / "repo"
    repo.mkdir(parents=True)
    for args in (["init", "-q", "-b", "main"], ["commit", "-q", "--allow-empty", "-m", "one"]):
        assert git(*args, cwd=repo).returncode == 0
    (repo / ".githooks").mkdir()
    assert git("config", "core.hooksPath", ".githooks", cwd=repo).returncode == 0
    (repo / "project.gitconfig").write_text("[user]\n\tname = t\n")  # a project's shared config
    assert git("config", "include.path", "../project.gitconfig", cwd=repo).returncode == 0
    assert git("worktree", "add", "-q", str(path / "wt"), cwd=repo).returncode == 0
    assert git("clone", "-q", str(repo), str(path / "nested"), cwd=path).returncode == 0
    for item in [path, *path.rglob("*")]:
        item.chmod(0o777 if item.is_dir() else 0o666)
    return path


PROBE = r"""
import errno, json, os, sys
marker = sys.argv[1]
hook = f"#!/bin/sh\ntouch {marker}\n"
config = f"\n[core]\n\tfsmonitor = touch {marker}\n\tpager = touch {marker}\n"

def attempt(fn):
    try:
        fn()
    except OSError as error:
        return errno.errorcode.get(error.errno, str(error.errno))
    return "allowed"

def write(path, text, mode="w"):
    with open(path, mode) as handle:
        handle.write(text)
    os.chmod(path, 0o755)

verdict = {
    "hook": attempt(lambda: write("/w/repo/.git/hooks/pre-commit", hook)),
    "config": attempt(lambda: write("/w/repo/.git/config", config, "a")),
    "hookspath": attempt(lambda: write("/w/repo/.githooks/pre-commit", hook)),
    "included": attempt(lambda: write("/w/repo/project.gitconfig", config, "a")),
    "worktree-file": attempt(lambda: write("/w/wt/.git", "gitdir: /w/evil\n")),
    "worktree-config": attempt(lambda: write("/w/repo/.git/worktrees/wt/config.worktree", config)),
    "nested-hook": attempt(lambda: write("/w/nested/.git/hooks/post-checkout", hook)),
    "nested-config": attempt(lambda: write("/w/nested/.git/config", config, "a")),
    "rename-git": attempt(lambda: os.rename("/w/repo/.git", "/w/repo/old-git")),
    "remove-file": attempt(lambda: os.unlink("/w/wt/.git")),
    "elsewhere": attempt(lambda: write("/w/repo/work.txt", "node output\n")),
}
print("VERDICT", json.dumps(verdict, sort_keys=True))
"""


def test_a_node_cannot_rewrite_what_the_host_s_git_runs(
    runtime, project, tmp_path, docker_client, built_images
):
    marker = tmp_path / "host-ran-node-code"
    text = f"""
        version: 1
        name: git-protection
        nodes:
          probe:
            runtime: python
            mounts: [{{source: ., target: /w, mode: rw}}]
            command: [python3, -c, {json.dumps(PROBE)}, "{marker}"]
    """
    proc, results = run_cli(project, text, write_policy(tmp_path, runtime), tmp_path / "r.json")
    assert results is not None, proc.stderr
    assert labelled_leftovers(docker_client, results["run_id"]) == []
    node = results["nodes"]["probe"]
    assert node["status"] == "succeeded", node
    seen = verdict(node)
    assert seen.pop("elsewhere") == "allowed", seen
    assert seen.pop("rename-git") in ("EBUSY", "EROFS", "EXDEV"), seen
    assert seen.pop("remove-file") in ("EBUSY", "EROFS"), seen
    assert set(seen.values()) == {"EROFS"}, seen
    (mount,) = node["sandbox"]["mounts"]
    assert mount["read_only_inside"] == [
        "/w/nested/.git", "/w/repo/.git", "/w/repo/.githooks", "/w/repo/project.gitconfig",
        "/w/wt/.git",
    ]  # fmt: skip
    assert (project / "repo" / "work.txt").read_text() == "node output\n"
    # The user's next git commands, on the host: none runs anything of the node's.
    for where in ("repo", "wt", "nested"):
        assert git("status", cwd=project / where).returncode == 0
        assert (
            git("commit", "-q", "--allow-empty", "-m", "two", cwd=project / where).returncode == 0
        )
    assert not marker.exists()


PLANT = r"""
import os, sys
marker = sys.argv[1]
os.rename("/w/repo", "/w/moved")  # the real .git goes along, still read-only
os.makedirs("/w/repo/.git/hooks")
for name in ("objects", "refs"):
    os.makedirs(f"/w/repo/.git/{name}")
with open("/w/repo/.git/HEAD", "w") as handle:
    handle.write("ref: refs/heads/main\n")
with open("/w/repo/.git/config", "w") as handle:
    handle.write(f"[core]\n\tfsmonitor = touch {marker}\n")
print("PLANTED")
"""


def test_a_repository_a_node_plants_is_not_trusted_by_the_host_s_git(
    runtime, project, tmp_path, docker_client, built_images
):
    """Moving the repository away and putting one of its own in its place: the node's
    files belong to the node's user, and git refuses a repository of another owner."""
    marker = tmp_path / "host-ran-node-code"
    text = f"""
        version: 1
        name: git-plant
        nodes:
          plant:
            runtime: python
            mounts: [{{source: ., target: /w, mode: rw}}]
            command: [python3, -c, {json.dumps(PLANT)}, "{marker}"]
    """
    proc, results = run_cli(project, text, write_policy(tmp_path, runtime), tmp_path / "r.json")
    assert results is not None, proc.stderr
    node = results["nodes"]["plant"]
    assert node["status"] == "succeeded" and "PLANTED" in node["stdout_tail"], node
    status = git("status", cwd=project / "repo")
    assert status.returncode != 0 and "dubious ownership" in status.stderr
    assert not marker.exists()
